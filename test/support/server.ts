import { execFileSync, type ChildProcess } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { ROOT, spawnServer } from "./server-process.js";

export { ROOT };

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
  const server = spawnServer({
    command: "npm",
    args: ["start", "--silent"],
    env: { ...process.env, GRPC_PORT: "0", GRPC_HOST: "127.0.0.1", LOG_LEVEL: "debug", DATA_DIR: dataDir, ...env },
    detached: true,
  });
  const { proc } = server;
  // npm and its shell may exit before the server does (a signal sent to the
  // whole group reaches all of them), so "exited" waits for the server's own
  // end: the last holder of the stdout pipe closing it.
  const exited = Promise.all([server.exited, server.stdoutClosed]).then(([code]) => code);
  const waitForLog = (pred: (l: Record<string, unknown>) => boolean, ms = timeoutMs) => server.waitForLog(pred, ms);

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
    logs: server.logs as Record<string, unknown>[],
    proc,
    exited,
    waitForLog,
    async stop(signal = "SIGTERM") {
      if (proc.exitCode !== null) return proc.exitCode;
      // The signal goes to the server process itself, as an orchestrator
      // sends it to a container's main process; npm then exits with its code.
      // Past 20 s the whole group is killed.
      const inTime = await server.stop({ signal, pid: listening.pid as number, killAfterMs: 20_000, done: exited });
      return inTime ? exited : null;
    },
  };
}

/** Builds a test ONNX model with the given contract via test/support/make_onnx.py. */
export function makeTestModel(
  file: string,
  opts: {
    size?: number;
    dim?: number;
    batch?: string;
    nan?: boolean;
    kind?: "projection" | "pattern" | "constant";
    card?: boolean;
    rotate?: number;
  } = {},
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
