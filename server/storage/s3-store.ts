import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from "@aws-sdk/client-s3";
import { storageError } from "../errors.js";
import { checkKeyShape } from "./keys.js";
import type { ObjectStore } from "./object-store.js";

export interface S3StoreConfig {
  /** e.g. `https://kr.object.ncloudstorage.com` or `http://127.0.0.1:4569`. */
  endpoint: string;
  region: string;
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** TCP connect timeout per attempt. Default 2000 ms. */
  connectTimeoutMs?: number;
  /**
   * Per attempt: time until the response starts, and the longest silence
   * while a body flows. Default: the operation deadline shared by the
   * attempts, so a retry still fits in it.
   */
  requestTimeoutMs?: number;
  /** Deadline for one operation, retries included. Default 8000 ms. */
  operationTimeoutMs?: number;
  /** Attempts per operation, first one included. Default 2. */
  maxAttempts?: number;
}

/**
 * Objects in an S3-protocol bucket (NCP Object Storage in production).
 *
 * Path-style addressing and checksums only "when required": S3-compatible
 * stores other than AWS often do not support virtual-host buckets or the
 * SDK's default streaming checksums (which store the chunk framing inside the
 * object on some servers). Timeouts are short and attempts few so that an
 * outage fails a request within seconds with a retryable error instead of
 * holding it for the SDK's default minutes.
 */
export function createS3Store(config: S3StoreConfig): ObjectStore {
  const deadline = config.operationTimeoutMs ?? 8000;
  const maxAttempts = config.maxAttempts ?? 2;
  const requestTimeout = config.requestTimeoutMs ?? Math.floor(deadline / maxAttempts);
  const client = new S3Client({
    endpoint: config.endpoint,
    region: config.region,
    credentials: { accessKeyId: config.accessKeyId, secretAccessKey: config.secretAccessKey },
    forcePathStyle: true,
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
    maxAttempts,
    requestHandler: {
      connectionTimeout: config.connectTimeoutMs ?? 2000,
      // requestTimeout ends at the response headers; socketTimeout also
      // covers a body that stops flowing (a stalled link mid-download).
      requestTimeout,
      socketTimeout: requestTimeout,
      // Without this the handler only logs a warning and keeps waiting.
      throwOnRequestTimeout: true,
    },
  });
  const Bucket = config.bucket;
  const opts = () => ({ abortSignal: AbortSignal.timeout(deadline) });

  const fail = (op: string, key: string, e: unknown) => {
    const err = e as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } };
    const status = err?.$metadata?.httpStatusCode;
    const timedOut = err?.name === "TimeoutError" || err?.name === "AbortError";
    const why = timedOut ? `timed out (${err?.message || err?.name})` : err?.message || err?.name;
    return storageError(`object storage: ${op} ${key} failed${status ? ` (HTTP ${status})` : ""}: ${why}`, e);
  };
  const isNotFound = (e: unknown) => {
    const err = e as { name?: string; $metadata?: { httpStatusCode?: number } };
    return err?.name === "NoSuchKey" || err?.name === "NotFound" || err?.$metadata?.httpStatusCode === 404;
  };

  return {
    async get(key) {
      checkKeyShape(key);
      try {
        const res = await client.send(new GetObjectCommand({ Bucket, Key: key }), opts());
        if (!res.Body) return new Uint8Array(0);
        return await res.Body.transformToByteArray();
      } catch (e) {
        // NoSuchBucket is also a 404 but means misconfiguration, not a missing object.
        if (isNotFound(e) && (e as { name?: string }).name !== "NoSuchBucket") return undefined;
        throw fail("get", key, e);
      }
    },

    async put(key, bytes, contentType) {
      checkKeyShape(key);
      try {
        await client.send(
          new PutObjectCommand({
            Bucket,
            Key: key,
            Body: bytes,
            ContentLength: bytes.length,
            ContentType: contentType ?? "application/octet-stream",
          }),
          opts(),
        );
      } catch (e) {
        throw fail("put", key, e);
      }
    },

    async delete(key) {
      checkKeyShape(key);
      try {
        await client.send(new DeleteObjectCommand({ Bucket, Key: key }), opts());
      } catch (e) {
        if (!isNotFound(e) || (e as { name?: string }).name === "NoSuchBucket") throw fail("delete", key, e);
      }
    },

    async exists(key) {
      checkKeyShape(key);
      try {
        await client.send(new HeadObjectCommand({ Bucket, Key: key }), opts());
        return true;
      } catch (e) {
        if (isNotFound(e)) return false;
        throw fail("head", key, e);
      }
    },

    async list(prefix) {
      const keys: string[] = [];
      let token: string | undefined;
      try {
        do {
          const res = await client.send(new ListObjectsV2Command({ Bucket, Prefix: prefix, ContinuationToken: token }), opts());
          for (const o of res.Contents ?? []) if (o.Key) keys.push(o.Key);
          token = res.IsTruncated ? res.NextContinuationToken : undefined;
        } while (token);
      } catch (e) {
        throw fail("list", prefix, e);
      }
      return keys.sort();
    },

    async ping() {
      try {
        await client.send(new HeadBucketCommand({ Bucket }), opts());
      } catch (e) {
        throw fail("head bucket", Bucket, e);
      }
    },
  };
}
