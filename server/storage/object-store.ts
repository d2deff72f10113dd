/**
 * Where nose photos and vectors live: an S3-protocol bucket in production, a
 * local folder for development. Both keep the same key layout (see keys.ts).
 *
 * Contract shared by every implementation:
 * - a missing object is not an error: `get` answers undefined, `exists` false,
 *   `delete` succeeds;
 * - a backend failure (unreachable, timed out, refused) throws
 *   `storageError(...)`, which the gateway treats as retryable;
 * - a key that could escape the store's namespace throws `invalidRequest`.
 */
export interface ObjectStore {
  get(key: string): Promise<Uint8Array | undefined>;
  put(key: string, bytes: Uint8Array, contentType?: string): Promise<void>;
  delete(key: string): Promise<void>;
  exists(key: string): Promise<boolean>;
  /** Keys under a prefix, sorted. */
  list(prefix: string): Promise<string[]>;
  /** Cheap reachability probe for health checks; throws storageError when down. */
  ping(): Promise<void>;
}
