import { timed } from "../observe/request-context.js";
import type { ObjectStore } from "./object-store.js";

export type StoreOperation = keyof ObjectStore;

/**
 * The object store as the registry uses it, observed at one place: each
 * operation's time is booked to the call's `storage` stage, and every failure
 * is reported to `onError` (then rethrown unchanged), whichever backend is
 * behind it.
 */
export function observeStore(store: ObjectStore, onError: (op: StoreOperation, err: unknown) => void = () => {}): ObjectStore {
  const observed =
    <A extends unknown[], R>(op: StoreOperation, fn: (...args: A) => Promise<R>) =>
    (...args: A): Promise<R> =>
      timed("storage", async () => fn(...args)).catch((e: unknown) => {
        onError(op, e);
        throw e;
      });
  return {
    get: observed("get", (key: string) => store.get(key)),
    put: observed("put", (key: string, bytes: Uint8Array, contentType?: string) => store.put(key, bytes, contentType)),
    delete: observed("delete", (key: string) => store.delete(key)),
    exists: observed("exists", (key: string) => store.exists(key)),
    list: observed("list", (prefix: string) => store.list(prefix)),
    ping: observed("ping", () => store.ping()),
  };
}
