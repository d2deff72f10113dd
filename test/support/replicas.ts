import type { ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { freePort } from "./s3.js";
import { spawnServer, waitForServing, type ServerProcess } from "./server-process.js";

export { procStatusKiB, waitForServing } from "./server-process.js";

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

export async function startReplica(options: ReplicaOptions = {}): Promise<Replica> {
  const port = await freePort();
  const ownDataDir = options.env?.DATA_DIR === undefined;
  const dataDir = options.env?.DATA_DIR ?? mkdtempSync(path.join(tmpdir(), "nosepaw-replica-"));
  const logs: unknown[] = [];
  let server: ServerProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  // Warnings and errors are kept apart from the rolling log: load tests read every one of them.
  const warnings: Array<Record<string, unknown>> = [];
  const onLine = (line: unknown) => {
    const level = (line as { level?: unknown } | null)?.level;
    if ((level === "warn" || level === "error") && warnings.length < WARNINGS_KEPT) warnings.push(line as Record<string, unknown>);
  };

  const start = async () => {
    if (server) return;
    const child = spawnServer({
      command: process.execPath,
      args: ["--import", "tsx", "server/main.ts"],
      env: { ...process.env, LOG_LEVEL: "info", ...options.env, GRPC_PORT: String(port), GRPC_HOST: "127.0.0.1", DATA_DIR: dataDir },
      logs,
      maxLogLines: LOG_LINES_KEPT,
      maxStderr: 4000,
      raw: "text",
      onLine,
    });
    server = child;
    live.add(child.proc);
    exited = new Promise<void>((resolve) =>
      child.proc.once("exit", (code, signal) => {
        logs.push({ exited: code ?? signal });
        if (logs.length > LOG_LINES_KEPT) logs.splice(0, logs.length - LOG_LINES_KEPT);
        live.delete(child.proc);
        if (server === child) server = undefined;
        resolve();
      }),
    );
    try {
      await waitForServing(`127.0.0.1:${port}`, options.readyTimeoutMs ?? 60_000, exited);
    } catch (e) {
      child.proc.kill("SIGKILL");
      await exited;
      throw new Error(`${(e as Error).message}; stderr: ${child.stderr().slice(-1500)}; logs: ${JSON.stringify(logs.slice(-10))}`);
    }
  };

  const signal = async (sig: NodeJS.Signals) => {
    const child = server;
    if (!child) return;
    const gone = exited;
    // A graceful stop waits for in-flight calls (SHUTDOWN_TIMEOUT_MS); past that, a crash.
    await child.stop({ signal: sig, killAfterMs: 30_000, done: gone });
    await gone;
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
      return server?.proc.pid;
    },
    get running() {
      return server !== undefined;
    },
    logs,
    warnings,
    start,
    stop: () => signal("SIGTERM"),
    kill: () => signal("SIGKILL"),
    peakRssKiB: () => server?.peakRssKiB(),
    async dispose() {
      await signal("SIGTERM");
      if (ownDataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
