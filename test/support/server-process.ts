import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { gatewayClient } from "./grpc-client.js";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** A log line as the server writes it: JSON parsed, else `{ raw }` or the text itself (see `ServerProcessOptions.raw`). */
export type LogLine = Record<string, unknown>;

export interface ServerProcessOptions {
  /** The command and its arguments, run in the repository root. */
  command: string;
  args: string[];
  /** The whole environment of the child. */
  env: NodeJS.ProcessEnv;
  /** Its own process group, so a signal to the group reaches npm, its shell and the server. */
  detached?: boolean;
  /** Read stdout as JSON log lines (default); false ignores it. */
  readLogs?: boolean;
  /** An IPC channel to the child (a probe module answering messages). */
  ipc?: boolean;
  /** The array the log lines go into (one that outlives a restart); default a new one. */
  logs?: unknown[];
  /** Called with every line read, before the rolling log may drop it. */
  onLine?: (line: unknown) => void;
  /** Keep only this many log lines, oldest dropped (default: all). */
  maxLogLines?: number;
  /** Keep only the end of stderr (default: all). */
  maxStderr?: number;
  /** How a line that is not JSON is kept: `{ raw: line }` (default) or the text. */
  raw?: "object" | "text";
}

/** One server process: its log lines, its end, and the ways to stop it. */
export interface ServerProcess {
  proc: ChildProcess;
  /** Log lines so far; the same array throughout, so callers may hold it. */
  logs: unknown[];
  stderr(): string;
  /** Resolves with the child's exit code (null after a signal) once it has exited. */
  exited: Promise<number | null>;
  /** Resolves once the last holder of the stdout pipe closed it: the server's own end when npm sits in between. */
  stdoutClosed: Promise<void>;
  /** The first log line `pred` accepts, waiting up to `timeoutMs`; rejects early when the child exits. */
  waitForLog(pred: (l: LogLine) => boolean, timeoutMs: number): Promise<LogLine>;
  /**
   * Sends `signal` (to `pid`, default the child), then SIGKILL (to the child's
   * group when detached) if `done` has not resolved within `killAfterMs`.
   * Resolves true when `done` came in time.
   */
  stop(opts: { signal?: NodeJS.Signals; pid?: number; killAfterMs: number; done?: Promise<unknown> }): Promise<boolean>;
  /** Peak resident memory (VmHWM) of the child, KiB; undefined once gone or off Linux. */
  peakRssKiB(): number | undefined;
}

/** Reads a `Vm*` field of /proc/<pid>/status in KiB; undefined where there is no such file. */
export function procStatusKiB(pid: number, field: "VmHWM" | "VmRSS"): number | undefined {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Starts a server process and reads its JSON log lines from stdout. */
export function spawnServer(o: ServerProcessOptions): ServerProcess {
  const readLogs = o.readLogs ?? true;
  const proc = spawn(o.command, o.args, {
    cwd: ROOT,
    env: o.env,
    stdio: ["ignore", readLogs ? "pipe" : "ignore", "pipe", ...(o.ipc ? (["ipc"] as const) : [])],
    detached: o.detached ?? false,
  });
  const logs: unknown[] = o.logs ?? [];
  const waiters = new Set<() => void>();
  let stderr = "";
  const keep = (line: unknown) => {
    o.onLine?.(line);
    logs.push(line);
    if (o.maxLogLines !== undefined && logs.length > o.maxLogLines) logs.splice(0, logs.length - o.maxLogLines);
    waiters.forEach((w) => w());
  };
  let buf = "";
  proc.stdout?.on("data", (chunk: Buffer) => {
    buf += chunk.toString();
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        keep(JSON.parse(line));
      } catch {
        keep(o.raw === "text" ? line : { raw: line });
      }
    }
  });
  proc.stderr!.on("data", (c: Buffer) => {
    stderr += c.toString();
    if (o.maxStderr !== undefined) stderr = stderr.slice(-o.maxStderr);
  });
  const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
  const stdoutClosed = proc.stdout
    ? new Promise<void>((resolve) => proc.stdout!.once("close", () => resolve()))
    : exited.then(() => undefined);

  const waitForLog = (pred: (l: LogLine) => boolean, ms: number) =>
    new Promise<LogLine>((resolve, reject) => {
      const check = () => {
        const hit = (logs as LogLine[]).find((l) => typeof l === "object" && l !== null && pred(l));
        if (hit) {
          cleanup();
          resolve(hit);
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(
          new Error(`server log line not seen within ${ms} ms; logs: ${JSON.stringify(logs).slice(-2000)} stderr: ${stderr.slice(-2000)}`),
        );
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

  return {
    proc,
    logs,
    stderr: () => stderr,
    exited,
    stdoutClosed,
    waitForLog,
    async stop({ signal = "SIGTERM", pid = proc.pid, killAfterMs, done = exited }) {
      try {
        process.kill(pid!, signal);
      } catch {
        /* already gone */
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<"late">((r) => (timer = setTimeout(() => r("late"), killAfterMs)));
      const outcome = await Promise.race([done.then(() => "done" as const), late]);
      clearTimeout(timer);
      if (outcome === "done") return true;
      try {
        if (o.detached) process.kill(-proc.pid!, "SIGKILL");
        else proc.kill("SIGKILL");
      } catch {
        /* gone */
      }
      return false;
    },
    peakRssKiB: () =>
      proc.exitCode === null && proc.signalCode === null && proc.pid !== undefined ? procStatusKiB(proc.pid, "VmHWM") : undefined,
  };
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
  throw new Error(
    died
      ? `server at ${address} exited before SERVING (last answer: ${last})`
      : `server at ${address} not SERVING within ${timeoutMs} ms (last answer: ${last})`,
  );
}
