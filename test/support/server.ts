import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

export interface RunningServer {
  port: number;
  address: string;
  logs: Record<string, unknown>[];
  proc: ChildProcess;
  /** Resolves with the exit code once the process has exited. */
  exited: Promise<number | null>;
  waitForLog(pred: (l: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/**
 * Starts the server exactly as `npm start` does, in its own process group, on
 * a free port with a fresh data folder unless the caller sets one.
 * `ready` chooses what to wait for: the listening line, or the model outcome.
 */
export async function startServer(
  env: Record<string, string> = {},
  ready: "listening" | "model" = "model",
  timeoutMs = 60_000,
): Promise<RunningServer> {
  const dataDir = env.DATA_DIR ?? mkdtempSync(path.join(tmpdir(), "nosepaw-data-"));
  const proc = spawn("npm", ["start", "--silent"], {
    cwd: ROOT,
    env: { ...process.env, GRPC_PORT: "0", GRPC_HOST: "127.0.0.1", LOG_LEVEL: "debug", DATA_DIR: dataDir, ...env },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  const logs: Record<string, unknown>[] = [];
  const waiters = new Set<() => void>();
  let stderr = "";
  let buf = "";
  proc.stdout!.on("data", (chunk: Buffer) => {
    buf += chunk.toString();
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        logs.push(JSON.parse(line));
      } catch {
        logs.push({ raw: line });
      }
      waiters.forEach((w) => w());
    }
  });
  proc.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
  // npm and its shell may exit before the server does (a signal sent to the
  // whole group reaches all of them), so "exited" waits for the server's own
  // end: the last holder of the stdout pipe closing it.
  const exited = new Promise<number | null>((resolve) => {
    let npmCode: number | null = null;
    let pending = 2;
    const done = () => --pending === 0 && resolve(npmCode);
    proc.on("exit", (code) => ((npmCode = code), done()));
    proc.stdout!.on("close", done);
  });

  const waitForLog = (pred: (l: Record<string, unknown>) => boolean, ms = timeoutMs) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const check = () => {
        const hit = logs.find(pred);
        if (hit) {
          cleanup();
          resolve(hit);
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`server log line not seen within ${ms} ms; logs: ${JSON.stringify(logs).slice(-2000)} stderr: ${stderr.slice(-2000)}`));
      }, ms);
      const onExit = () => {
        cleanup();
        reject(new Error(`server exited early; stderr: ${stderr.slice(-2000)} logs: ${JSON.stringify(logs).slice(-2000)}`));
      };
      const cleanup = () => {
        clearTimeout(timer);
        waiters.delete(check);
        proc.off("exit", onExit);
      };
      waiters.add(check);
      proc.once("exit", onExit);
      check();
    });

  const listening = await waitForLog((l) => l.msg === "listening");
  if (ready === "model") {
    await waitForLog((l) => l.msg === "model loaded" || l.msg === "model not loaded");
    // HealthCheck says SERVING only once the registry is up too: wait for its first outcome, whichever it is.
    await waitForLog((l) => l.msg === "database ready" || l.msg === "database not ready, retrying");
  }
  const port = listening.port as number;
  return {
    port,
    address: `127.0.0.1:${port}`,
    logs,
    proc,
    exited,
    waitForLog,
    async stop(signal = "SIGTERM") {
      if (proc.exitCode !== null) return proc.exitCode;
      // The signal goes to the server process itself, as an orchestrator
      // sends it to a container's main process; npm then exits with its code.
      try {
        process.kill(listening.pid as number, signal);
      } catch {
        /* already gone */
      }
      const code = await Promise.race([exited, new Promise<"timeout">((r) => setTimeout(() => r("timeout"), 20_000))]);
      if (code === "timeout") {
        try {
          process.kill(-proc.pid!, "SIGKILL");
        } catch {
          /* gone */
        }
        return null;
      }
      return code;
    },
  };
}

/** Builds a test ONNX model with the given contract via test/support/make_onnx.py. */
export function makeTestModel(
  file: string,
  opts: { size?: number; dim?: number; batch?: string; nan?: boolean; kind?: "projection" | "pattern" | "constant"; card?: boolean; rotate?: number } = {},
): string {
  const args = [path.join(ROOT, "test/support/make_onnx.py"), file];
  if (opts.size) args.push("--size", String(opts.size));
  if (opts.dim) args.push("--dim", String(opts.dim));
  if (opts.batch) args.push("--batch", opts.batch);
  if (opts.nan) args.push("--nan");
  if (opts.kind) args.push("--kind", opts.kind);
  if (opts.card) args.push("--card");
  if (opts.rotate !== undefined) args.push("--rotate", String(opts.rotate));
  execFileSync("/usr/bin/python3", args, { stdio: "pipe" });
  return file;
}
