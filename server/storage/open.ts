import type { Config } from "../config.js";
import { createFolderStore } from "./folder-store.js";
import type { ObjectStore } from "./object-store.js";
import { createS3Store } from "./s3-store.js";

/** The object store the configuration names: S3 when NCP_ENDPOINT is set, else the local folder. */
export function openObjectStore(config: Config): ObjectStore {
  return config.s3
    ? createS3Store({
        ...config.s3,
        operationTimeoutMs: config.storageTimeoutMs,
        connectTimeoutMs: config.storageConnectTimeoutMs,
        maxAttempts: config.storageMaxAttempts,
      })
    : createFolderStore({ root: config.objectDir });
}
