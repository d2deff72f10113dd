import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { gatewayClient } from "./grpc-client.js";
import { freePort } from "./s3.js";
import { ROOT } from "./server.js";

/**
 * A server process started as the Dockerfile starts it (`node --import tsx
 * server/main.ts`, no npm in between), so its pid is the server's own: a
 * SIGKILL reaches it and /proc/<pid>/status describes it. The port and data
 * folder are fixed for its lifetime, so a restart comes back where a load
 * balancer expects it.
 */
export interface Replica {
  readonly port: number;
  readonly address: string;
  /** The running process's pid, undefined while stopped. */
  readonly pid: number | undefined;
  readonly running: boolean;
  /** The last log lines (JSON parsed where possible), for failure messages. */
  readonly logs: unknown[];
  /** Every warn and error line over the replica's lifetime, restarts included (up to 5,000), to judge after a run. */
  readonly warnings: Array<Record<string, unknown>>;
  /** Starts the process (again) and resolves once grpc.health.v1 answers SERVING. */
  start(): Promise<void>;
  /** SIGTERM: the graceful path. Resolves when the process has exited. */
  stop(): Promise<void>;
  /** SIGKILL: a crash, nothing flushed. Resolves when the process has exited. */
  kill(): Promise<void>;
  /** Peak resident memory of the running process (VmHWM), in KiB. */
  peakRssKiB(): number | undefined;
  /** stop(), then removes the data folder if this helper made it. */
  dispose(): Promise<void>;
}

export interface ReplicaOptions {
  /** Environment on top of this process's; GRPC_PORT, GRPC_HOST and DATA_DIR are set here. */
  env?: Record<string, string>;
  /** How long start() waits for SERVING. */
  readyTimeoutMs?: number;
}

const LOG_LINES_KEPT = 200;
const WARNINGS_KEPT = 5000;

/** Servers still running when this process exits (a test cancelled midway) are killed with it. */
const live = new Set<ChildProcess>();
process.once("exit", () => live.forEach((c) => c.kill("SIGKILL")));

/** Reads a `Vm*` field of /proc/<pid>/status in KiB; undefined where there is no such file. */
export function procStatusKiB(pid: number, field: "VmHWM" | "VmRSS"): number | undefined {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Polls grpc.health.v1.Health/Check for the whole server ("") until it
 * answers SERVING. Connection refusals and NOT_SERVING are waited out;
 * `exited` rejects early when the process dies meanwhile.
 */
export async function waitForServing(address: string, timeoutMs: number, exited?: Promise<unknown>): Promise<void> {
  const health = gatewayClient(address, "grpc/health/v1/health.proto", "grpc.health.v1.Health");
  let died = false;
  let last = "no answer";
  void exited?.then(() => (died = true));
  const deadline = Date.now() + timeoutMs;
  try {
    while (Date.now() < deadline && !died) {
      try {
        const res = await health.call("Check", { service: "" }, 1000);
        if (res.status === "SERVING") return;
        last = String(res.status);
      } catch (e) {
        last = (e as Error).message;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    health.close();
  }
  throw new Error(died ? `server at ${address} exited before SERVING (last answer: ${last})` : `server at ${address} not SERVING within ${timeoutMs} ms (last answer: ${last})`);
}

export async function startReplica(options: ReplicaOptions = {}): Promise<Replica> {
  const port = await freePort();
  const ownDataDir = options.env?.DATA_DIR === undefined;
  const dataDir = options.env?.DATA_DIR ?? mkdtempSync(path.join(tmpdir(), "nosepaw-replica-"));
  const logs: unknown[] = [];
  const warnings: Array<Record<string, unknown>> = [];
  let proc: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let stderr = "";

  const keep = (line: unknown) => {
    const level = (line as { level?: unknown } | null)?.level;
    if ((level === "warn" || level === "error") && warnings.length < WARNINGS_KEPT) warnings.push(line as Record<string, unknown>);
    logs.push(line);
    if (logs.length > LOG_LINES_KEPT) logs.splice(0, logs.length - LOG_LINES_KEPT);
  };

  const start = async () => {
    if (proc) return;
    const child = spawn(process.execPath, ["--import", "tsx", "server/main.ts"], {
      cwd: ROOT,
      env: { ...process.env, LOG_LEVEL: "info", ...options.env, GRPC_PORT: String(port), GRPC_HOST: "127.0.0.1", DATA_DIR: dataDir },
      stdio: ["ignore", "pipe", "pipe"],
    });
    proc = child;
    live.add(child);
    let buf = "";
    child.stdout!.on("data", (chunk: Buffer) => {
      buf += chunk.toString();
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          keep(JSON.parse(line));
        } catch {
          keep(line);
        }
      }
    });
    child.stderr!.on("data", (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4000)));
    exited = new Promise<void>((resolve) =>
      child.once("exit", (code, signal) => {
        keep({ exited: code ?? signal });
        live.delete(child);
        if (proc === child) proc = undefined;
        resolve();
      }),
    );
    try {
      await waitForServing(`127.0.0.1:${port}`, options.readyTimeoutMs ?? 60_000, exited);
    } catch (e) {
      child.kill("SIGKILL");
      await exited;
      throw new Error(`${(e as Error).message}; stderr: ${stderr.slice(-1500)}; logs: ${JSON.stringify(logs.slice(-10))}`);
    }
  };

  const signal = async (sig: NodeJS.Signals) => {
    const child = proc;
    if (!child) return;
    const gone = exited;
    child.kill(sig);
    // A graceful stop waits for in-flight calls (SHUTDOWN_TIMEOUT_MS); past that, a crash.
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    await gone;
    clearTimeout(timer);
  };

  try {
    await start();
  } catch (e) {
    if (ownDataDir) rmSync(dataDir, { recursive: true, force: true });
    throw e;
  }
  return {
    port,
    address: `127.0.0.1:${port}`,
    get pid() {
      return proc?.pid;
    },
    get running() {
      return proc !== undefined;
    },
    logs,
    warnings,
    start,
    stop: () => signal("SIGTERM"),
    kill: () => signal("SIGKILL"),
    peakRssKiB: () => (proc?.pid === undefined ? undefined : procStatusKiB(proc.pid, "VmHWM")),
    async dispose() {
      await signal("SIGTERM");
      if (ownDataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
