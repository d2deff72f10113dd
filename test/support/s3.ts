import { mkdtempSync, rmSync } from "node:fs";
import type { Server } from "node:http";
import { createRequire } from "node:module";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { S3StoreConfig } from "../../server/storage/s3-store.js";

interface S3rverInstance {
  run(): Promise<unknown>;
  httpServer?: Server;
}
type S3rverCtor = new (options: {
  address: string;
  port: number;
  directory: string;
  silent: boolean;
  configureBuckets: Array<{ name: string }>;
}) => S3rverInstance;

// s3rver ships no type declarations; load it through require with a local type.
const S3rver = createRequire(import.meta.url)("s3rver") as S3rverCtor;

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

export interface TestS3 {
  config: S3StoreConfig;
  directory: string;
  /** Stops serving; objects stay on disk. */
  stop(): Promise<void>;
  /** Serves again on the same port and directory. */
  start(): Promise<void>;
  /** Stops and deletes the directory. */
  dispose(): Promise<void>;
}

/** An S3-protocol server (s3rver) on 127.0.0.1, a free port and a temp dir, with one bucket. */
export async function startS3(bucket = "nosepaw-test"): Promise<TestS3> {
  const directory = mkdtempSync(join(tmpdir(), "nosepaw-s3-"));
  const port = await freePort();
  let server: S3rverInstance | undefined;

  const start = async () => {
    if (server) return;
    const s = new S3rver({ address: "127.0.0.1", port, directory, silent: true, configureBuckets: [{ name: bucket }] });
    await s.run();
    server = s;
  };
  const stop = async () => {
    const http = server?.httpServer;
    server = undefined;
    if (!http) return;
    // Drop keep-alive sockets too, as a crashed server would.
    const closed = new Promise<void>((resolve) => http.close(() => resolve()));
    http.closeAllConnections();
    await closed;
  };
  await start();
  return {
    config: {
      endpoint: `http://127.0.0.1:${port}`,
      region: "us-east-1",
      bucket,
      accessKeyId: "S3RVER",
      secretAccessKey: "S3RVER",
      connectTimeoutMs: 500,
      requestTimeoutMs: 1500,
      operationTimeoutMs: 2500,
    },
    directory,
    start,
    stop,
    async dispose() {
      await stop();
      rmSync(directory, { recursive: true, force: true });
    },
  };
}
