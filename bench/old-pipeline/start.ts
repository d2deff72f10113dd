import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { ROOT } from "../../test/support/server.js";

export interface OldPipeline {
  address: string;
  pid: number;
  stop(): Promise<void>;
}

/** Why the old pipeline cannot run here, or undefined when it can. */
export function oldPipelineUnavailable(): string | undefined {
  try {
    execFileSync("/usr/bin/python3", ["-c", "import grpc, numpy, PIL"], { stdio: "pipe" });
    return undefined;
  } catch {
    return "/usr/bin/python3 lacks grpc, numpy or PIL (bash scripts/install-train-deps.sh installs python3-grpcio, python3-numpy, python3-pil)";
  }
}

/**
 * Starts bench/old-pipeline/server.py on a free port. Its message classes
 * come from a descriptor set that buf compiles from proto/ into a temp
 * folder, so the contract is the one the server speaks, never a copy.
 */
export async function startOldPipeline(): Promise<OldPipeline> {
  const dir = mkdtempSync(path.join(tmpdir(), "nosepaw-old-pipeline-"));
  const descriptors = path.join(dir, "nose_embedder.binpb");
  execFileSync(path.join(ROOT, "node_modules/.bin/buf"), ["build", "-o", descriptors, "--path", "proto/nose_embedder.proto"], {
    cwd: ROOT,
    stdio: "pipe",
  });
  const proc = spawn("/usr/bin/python3", [path.join(ROOT, "bench/old-pipeline/server.py"), descriptors], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stderr = "";
  proc.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`old pipeline did not start within 30 s: ${stderr.slice(-2000)}`)), 30_000);
    proc.stdout!.on("data", (c: Buffer) => {
      out += c.toString();
      const m = /listening (\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    proc.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`old pipeline exited with ${code}: ${stderr.slice(-2000)}`));
    });
  });
  const exited = new Promise<void>((r) => proc.once("exit", () => r()));
  return {
    address: `127.0.0.1:${port}`,
    pid: proc.pid!,
    async stop() {
      proc.stdin!.end();
      const late = setTimeout(() => proc.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(late);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
