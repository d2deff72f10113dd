import { timed } from "../observe/request-context.js";
import type { Database, Queryable } from "./database.js";

export type DatabaseOperation = "query" | "transaction";

/**
 * The database as the registry uses it, observed at one place: each query,
 * and each transaction as a whole (its statements are not counted again), is
 * booked to the call's `database` stage, and every failure is reported to
 * `onError` (then rethrown unchanged). Migrations and closing pass through.
 */
export function observeDatabase(db: Database, onError: (op: DatabaseOperation, err: unknown) => void = () => {}): Database {
  const report = (op: DatabaseOperation) => (e: unknown) => {
    onError(op, e);
    throw e;
  };
  return {
    kind: db.kind,
    query: <T>(sql: string, params?: unknown[]) => timed("database", async () => db.query<T>(sql, params)).catch(report("query")),
    transaction: <R>(fn: (tx: Queryable) => Promise<R>) =>
      timed("database", async () => db.transaction<R>(fn)).catch(report("transaction")),
    close: () => db.close(),
  };
}
