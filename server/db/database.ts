import { PGlite } from "@electric-sql/pglite";
import { vector } from "@electric-sql/pglite-pgvector";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import pg from "pg";
import { serviceUnavailable } from "../errors.js";

/**
 * The SQL the registry needs, over either an embedded PGlite (development,
 * single node) or a PostgreSQL server with pgvector (production). The same
 * SQL text runs on both; vectors travel as pgvector text literals.
 *
 * Failures to reach the database throw `serviceUnavailable(...)` (retryable).
 * SQL errors (constraint violations and the like) are rethrown unchanged, so
 * callers can look at their `code`.
 */
export interface Queryable {
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<{ rows: T[] }>;
}

export interface Database extends Queryable {
  readonly kind: "pglite" | "postgres";
  /** Runs `fn` in one transaction: committed when it resolves, rolled back when it throws. */
  transaction<R>(fn: (tx: Queryable) => Promise<R>): Promise<R>;
  close(): Promise<void>;
}

export interface PgliteConfig {
  /** Data folder, created when missing. Default `./data/pg`; `memory://` keeps it in memory. */
  dataDir?: string;
}

/** Connection settings, as the platform's DB_HOST, DB_PORT, DB_USERNAME, DB_PASSWORD, DB_DATABASE give them. */
export interface PostgresConfig {
  host: string;
  port: number;
  username: string;
  password: string;
  database: string;
  /** Pool size. Default 10. */
  max?: number;
  /** Time to open a connection. Default 3000 ms. */
  connectTimeoutMs?: number;
  /** Limit for one statement, server-side (statement_timeout) and, a little later, client-side. Default 10000 ms. */
  queryTimeoutMs?: number;
  /** An idle pooled connection is closed after this long. Default 30000 ms. */
  idleTimeoutMs?: number;
  /** Called with pool errors that no request is waiting for (an idle connection dropped). */
  onError?: (err: Error) => void;
  ssl?: pg.ConnectionConfig["ssl"];
}

export type DatabaseConfig = ({ kind: "pglite" } & PgliteConfig) | ({ kind: "postgres" } & PostgresConfig);

export async function openDatabase(config: DatabaseConfig): Promise<Database> {
  return config.kind === "pglite" ? openPglite(config) : openPostgres(config);
}

/** Embedded PostgreSQL (WASM) with pgvector, persisted in a folder. */
export async function openPglite(config: PgliteConfig = {}): Promise<Database> {
  const dataDir = config.dataDir ?? "./data/pg";
  let db: PGlite;
  try {
    // PGlite creates its own folder but not the parents (a fresh clone has no ./data).
    if (!dataDir.startsWith("memory://")) await mkdir(path.dirname(path.resolve(dataDir)), { recursive: true });
    db = await PGlite.create(dataDir, { extensions: { vector } });
  } catch (e) {
    throw serviceUnavailable(`embedded database at ${dataDir} failed to open: ${(e as Error)?.message}`, e);
  }
  const q: Queryable["query"] = async (sql, params) => {
    const res = await db.query(sql, params);
    return { rows: res.rows as never[] };
  };
  return {
    kind: "pglite",
    query: q,
    async transaction(fn) {
      return db.transaction(async (tx) =>
        fn({
          async query(sql, params) {
            const res = await tx.query(sql, params);
            return { rows: res.rows as never[] };
          },
        }),
      );
    },
    async close() {
      if (!db.closed) await db.close();
    },
  };
}

// SQLSTATE classes and codes that mean "the server is not there or not
// serving", as opposed to "your statement is wrong".
const UNAVAILABLE_SQLSTATE = /^(08|53|57P0[1-4]|57014|58)/;
const NETWORK_ERRNO = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EPIPE",
  "ENOTFOUND",
  "EAI_AGAIN",
]);

/** True when an error from `pg` means the database could not be reached or stopped serving. */
export function isConnectionError(e: unknown): boolean {
  const err = e as { code?: string; message?: string };
  if (typeof err?.code === "string") {
    if (NETWORK_ERRNO.has(err.code)) return true;
    if (/^[0-9A-Z]{5}$/.test(err.code)) return UNAVAILABLE_SQLSTATE.test(err.code);
  }
  const m = err?.message ?? "";
  return /Connection terminated|connection timeout|timeout exceeded when trying to connect|Query read timeout|Client has encountered a connection error|not queryable|Connection ended/i.test(
    m,
  );
}

function mapPgError(e: unknown): unknown {
  if (isConnectionError(e)) return serviceUnavailable(`database unavailable: ${(e as Error)?.message || String(e)}`, e);
  return e;
}

/**
 * A pooled PostgreSQL client. Broken connections are dropped by the pool and
 * the next query opens a fresh one, so the service recovers on its own when
 * the server comes back; nothing here needs recreating.
 */
const CLIENT_TIMEOUT_MARGIN_MS = 500;

export function openPostgres(config: PostgresConfig): Database {
  const queryTimeout = config.queryTimeoutMs ?? 10_000;
  const pool = new pg.Pool({
    host: config.host,
    port: config.port,
    user: config.username,
    password: config.password,
    database: config.database,
    ssl: config.ssl,
    max: config.max ?? 10,
    // Also bounds the wait for a free pooled connection.
    connectionTimeoutMillis: config.connectTimeoutMs ?? 3000,
    // A live but slow server cancels the statement itself and the connection
    // stays usable; the client-side timer, a little later, only fires when
    // the server stopped answering, and the pool then drops the connection.
    statement_timeout: queryTimeout,
    query_timeout: queryTimeout + CLIENT_TIMEOUT_MARGIN_MS,
    idleTimeoutMillis: config.idleTimeoutMs ?? 30_000,
    keepAlive: true,
  });
  // An idle connection that dies (server restart, network cut) is reported
  // here; without a listener Node would treat it as an uncaught error.
  pool.on("error", (err) => config.onError?.(err));
  let closed = false;

  return {
    kind: "postgres",
    async query(sql, params) {
      try {
        const res = await pool.query(sql, params as unknown[]);
        return { rows: res.rows };
      } catch (e) {
        throw mapPgError(e);
      }
    },
    async transaction(fn) {
      let client: pg.PoolClient;
      try {
        client = await pool.connect();
      } catch (e) {
        throw mapPgError(e);
      }
      // A checked-out client has no pool listener: keep its late errors from
      // becoming uncaught ones, and remember them to discard the connection.
      let broken: Error | undefined;
      const onError = (err: Error) => {
        broken = err;
      };
      client.on("error", onError);
      const tx: Queryable = {
        async query(sql, params) {
          try {
            const res = await client.query(sql, params as unknown[]);
            return { rows: res.rows };
          } catch (e) {
            // A connection that timed out or broke is not rolled back over
            // (that would wait on it again) but discarded.
            if (isConnectionError(e)) broken ??= e as Error;
            throw mapPgError(e);
          }
        },
      };
      try {
        await tx.query("BEGIN");
        const result = await fn(tx);
        await tx.query("COMMIT");
        return result;
      } catch (e) {
        if (!broken) {
          await client.query("ROLLBACK").catch((err: Error) => {
            broken = err;
          });
        }
        throw e;
      } finally {
        client.removeListener("error", onError);
        client.release(broken);
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      await pool.end();
    },
  };
}
