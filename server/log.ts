import type { LogLevel } from "./config.js";
import { currentContext } from "./observe/request-context.js";

const rank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type Fields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
}

function serialiseError(e: unknown): unknown {
  if (!(e instanceof Error)) return e;
  return { name: e.name, message: e.message, ...(e.cause ? { cause: serialiseError(e.cause) } : {}) };
}

/**
 * One JSON object per line on stdout, the format log collectors parse. A line
 * written during a call carries the call's `requestId`, so all lines of one
 * request can be found together (and with the caller's, when it sent
 * `x-request-id`).
 */
export function createLogger(level: LogLevel, write: (line: string) => void = (l) => process.stdout.write(l + "\n")): Logger {
  const min = rank[level];
  const emit = (lvl: LogLevel, msg: string, fields?: Fields) => {
    if (rank[lvl] < min) return;
    const entry: Fields = { time: new Date().toISOString(), level: lvl, msg };
    const ctx = currentContext();
    if (ctx) entry.requestId = ctx.id;
    if (fields) for (const [k, v] of Object.entries(fields)) entry[k] = k === "err" ? serialiseError(v) : v;
    write(JSON.stringify(entry));
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
  };
}
