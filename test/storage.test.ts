import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { createServer, type Socket } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { MLErrorCode } from "../gen/nose_embedder_pb.js";
import { MLError, isRetryable } from "../server/errors.js";
import { createFolderStore } from "../server/storage/folder-store.js";
import {
  MAX_KEY_LENGTH,
  imageKey,
  legacyVectorKey,
  validateImageKey,
  validateUploadedPhotoKey,
  vectorKey,
  verifyImageKey,
} from "../server/storage/keys.js";
import { readLegacyVector } from "../server/storage/legacy-vector.js";
import type { ObjectStore } from "../server/storage/object-store.js";
import { createS3Store } from "../server/storage/s3-store.js";
import { startS3, type TestS3 } from "./support/s3.js";
import { ROOT } from "./support/server.js";
import { startTcpProxy } from "./support/tcp-proxy.js";

const DID = "did:ethr:besu:0x" + "ab".repeat(20);
const OTHER = "did:ethr:besu:0x" + "cd".repeat(20);

/** Bounds a hang, not a speed: rejects when `p` has not settled after `ms`. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  const hung = new Promise<never>(
    (_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: still pending after ${ms} ms`)), ms)),
  );
  return Promise.race([p, hung]).finally(() => clearTimeout(timer));
}

function assertMLError(code: MLErrorCode, message?: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof MLError, `expected MLError, got ${String(e)}`);
    assert.equal(e.code, code, `code ${e.code}: ${e.message}`);
    if (message) assert.match(e.message, message);
    return true;
  };
}

describe("key layout", () => {
  test("builds the platform's keys", () => {
    assert.equal(imageKey(DID, 1), `nose-print-photo/${DID}/image_1.jpg`);
    assert.equal(vectorKey(DID), `nose-print-photo/${DID}/vector.npy`);
    assert.equal(verifyImageKey(DID, 1764000000123), `nose-print-photo/${DID}/verify_1764000000123.jpg`);
    assert.equal(legacyVectorKey(DID), `pet-vectors/${DID}.json`);
  });

  test("accepts a file directly under the request's pet folder", () => {
    assert.equal(validateImageKey(`nose-print-photo/${DID}/image_1.jpg`, DID), `nose-print-photo/${DID}/image_1.jpg`);
    assert.equal(validateImageKey(`nose-print-photo/${DID}/verify_1.jpg`, DID), `nose-print-photo/${DID}/verify_1.jpg`);
  });

  const refused: Array<[string, unknown, RegExp]> = [
    ["another pet's photo", `nose-print-photo/${OTHER}/image_1.jpg`, /must lie under nose-print-photo\/did:ethr/],
    ["a key outside the photo area", `pet-vectors/${DID}.json`, /must lie under/],
    ["a '..' segment", `nose-print-photo/${DID}/../${OTHER}/image_1.jpg`, /'\.\.' segment/],
    ["a '.' segment", `nose-print-photo/${DID}/./image_1.jpg`, /'\.' segment/],
    ["an absolute path", `/nose-print-photo/${DID}/image_1.jpg`, /relative/],
    ["a backslash", `nose-print-photo/${DID}/..\\..\\etc\\passwd`, /backslash/],
    ["a NUL byte", `nose-print-photo/${DID}/image_1.jpg\u0000.png`, /control character/],
    ["a newline", `nose-print-photo/${DID}/image\n1.jpg`, /control character/],
    ["a percent-escape", `nose-print-photo/${DID}/%2e%2e/x.jpg`, /percent-escape/],
    ["an empty segment", `nose-print-photo/${DID}//image_1.jpg`, /empty path segment/],
    ["a trailing slash", `nose-print-photo/${DID}/`, /empty path segment/],
    ["a nested folder", `nose-print-photo/${DID}/sub/image_1.jpg`, /directly under/],
    ["an overly long key", `nose-print-photo/${DID}/${"a".repeat(MAX_KEY_LENGTH)}.jpg`, /longer than 512/],
    ["an empty key", "", /empty/],
    ["a non-string", 42, /empty/],
  ];
  for (const [name, key, message] of refused) {
    test(`refuses ${name} with INVALID_REQUEST`, () => {
      assert.throws(() => validateImageKey(key, DID), assertMLError(MLErrorCode.INVALID_REQUEST, message));
    });
  }

  test("an uploaded photo key must sit under a valid pet DID folder", () => {
    assert.deepEqual(validateUploadedPhotoKey(`nose-print-photo/${DID}/a.jpg`), { key: `nose-print-photo/${DID}/a.jpg`, petDid: DID });
    for (const k of [
      "nose-print-photo/not-a-did/a.jpg",
      `other/${DID}/a.jpg`,
      `nose-print-photo/${DID}/x/a.jpg`,
      `nose-print-photo/${DID}/../a.jpg`,
    ]) {
      assert.throws(() => validateUploadedPhotoKey(k), assertMLError(MLErrorCode.INVALID_REQUEST), k);
    }
  });
});

/** The contract every ObjectStore keeps, run against each backend. */
function storeContract(name: string, open: () => ObjectStore) {
  describe(`${name}: object store contract`, () => {
    test("stores bytes exactly, overwrites, and reports missing objects as undefined", async () => {
      const store = open();
      const key = `nose-print-photo/${DID}/image_1.jpg`;
      const bytes = new Uint8Array(randomBytes(1000));
      await store.put(key, bytes, "image/jpeg");
      assert.deepEqual(await store.get(key), bytes);
      assert.equal(await store.exists(key), true);
      const again = new Uint8Array(randomBytes(10));
      await store.put(key, again);
      assert.deepEqual(await store.get(key), again);

      assert.equal(await store.get(`nose-print-photo/${DID}/missing.jpg`), undefined);
      assert.equal(await store.exists(`nose-print-photo/${DID}/missing.jpg`), false);
      assert.equal(await store.get(`nose-print-photo/${OTHER}/image_1.jpg`), undefined);
    });

    test("lists by prefix and deletes idempotently", async () => {
      const store = open();
      await store.put(`nose-print-photo/${OTHER}/image_1.jpg`, new Uint8Array([1]));
      await store.put(`nose-print-photo/${OTHER}/image_2.jpg`, new Uint8Array([2]));
      await store.put(`nose-print-photo/${OTHER}/vector.npy`, new Uint8Array([3]));
      assert.deepEqual(await store.list(`nose-print-photo/${OTHER}/image_`), [
        `nose-print-photo/${OTHER}/image_1.jpg`,
        `nose-print-photo/${OTHER}/image_2.jpg`,
      ]);
      assert.equal((await store.list(`nose-print-photo/${OTHER}/`)).length, 3);
      assert.deepEqual(await store.list("nothing-here/"), []);
      await store.delete(`nose-print-photo/${OTHER}/image_2.jpg`);
      await store.delete(`nose-print-photo/${OTHER}/image_2.jpg`);
      assert.equal(await store.exists(`nose-print-photo/${OTHER}/image_2.jpg`), false);
      await store.ping();
    });

    test("refuses keys that could leave the namespace", async () => {
      const store = open();
      for (const key of ["../outside.jpg", "a/../../outside.jpg", "/etc/passwd", "a\\b", "a//b", "a/%2e%2e/b", "a\u0000b"]) {
        await assert.rejects(store.put(key, new Uint8Array([1])), assertMLError(MLErrorCode.INVALID_REQUEST), key);
        await assert.rejects(store.get(key), assertMLError(MLErrorCode.INVALID_REQUEST), key);
      }
    });
  });
}

describe("folder store", () => {
  const root = mkdtempSync(join(tmpdir(), "nosepaw-objects-"));
  after(() => rmSync(root, { recursive: true, force: true }));
  storeContract("folder", () => createFolderStore({ root }));

  test("readers see a whole old or whole new object while writers race, and no temp files remain", async () => {
    const store = createFolderStore({ root });
    const key = `nose-print-photo/${DID}/race.jpg`;
    const versions = [0, 1, 2, 3].map((v) => new Uint8Array(256 * 1024).fill(v + 1));
    await store.put(key, versions[0]);
    const writes = Promise.all(versions.map((v) => store.put(key, v)));
    const reads: Uint8Array[] = [];
    for (let i = 0; i < 20; i++) reads.push((await store.get(key))!);
    await writes;
    for (const r of reads) {
      assert.equal(r.length, 256 * 1024);
      assert.ok(
        r.every((b) => b === r[0]),
        "torn read",
      );
    }
    const names = readdirSync(join(root, "nose-print-photo", DID));
    assert.deepEqual(
      names.filter((n) => n.includes("tmp")),
      [],
    );
    assert.ok(!(await store.list("nose-print-photo/")).some((k) => k.includes("tmp")));
  });

  test("a failed write keeps the old object and reports STORAGE_CONNECTION_ERROR", async () => {
    const store = createFolderStore({ root });
    const key = `nose-print-photo/${DID}/overwrite.jpg`;
    const old = new Uint8Array(randomBytes(4096));
    await store.put(key, old);
    // The new object fails part-way through being written: a process whose
    // file-size limit (ulimit -f, 8 KiB) stops the write at 8 KiB of 64 KiB.
    const script = `
      import { createFolderStore } from "./server/storage/folder-store.ts";
      process.on("SIGXFSZ", () => {});
      const store = createFolderStore({ root: ${JSON.stringify(root)} });
      try {
        await store.put(${JSON.stringify(key)}, new Uint8Array(65536).fill(7));
        console.log(JSON.stringify({ ok: true }));
      } catch (e) {
        console.log(JSON.stringify({ name: e.name, code: e.code, message: e.message }));
      }`;
    const child = spawnSync("bash", ["-c", 'ulimit -f 8 && exec "$0" --import tsx --input-type=module -e "$1"', process.execPath, script], {
      cwd: ROOT,
      encoding: "utf8",
    });
    assert.equal(child.status, 0, child.stderr);
    const failed = JSON.parse(child.stdout.trim().split("\n").pop()!);
    assert.equal(failed.name, "MLError", child.stdout);
    assert.equal(failed.code, MLErrorCode.STORAGE_CONNECTION_ERROR);
    assert.equal(isRetryable(failed.code), true);
    assert.match(failed.message, /folder store: put .*overwrite\.jpg failed: .*EFBIG/);
    assert.deepEqual(await store.get(key), old, "the old object, whole");
    assert.deepEqual(
      readdirSync(join(root, "nose-print-photo", DID)).filter((n) => n.includes("tmp")),
      [],
      "the partial file is removed",
    );
  });
});

describe("S3 store against s3rver", () => {
  let s3: TestS3;
  before(async () => {
    s3 = await startS3();
  });
  after(async () => {
    await s3?.dispose();
  });
  storeContract("s3", () => createS3Store(s3.config));

  test("an outage fails within the operation deadline with a retryable STORAGE_CONNECTION_ERROR and the same store works after restart", async () => {
    const store = createS3Store(s3.config);
    const key = `nose-print-photo/${DID}/outage.jpg`;
    await store.put(key, new Uint8Array([9, 9, 9]));
    await s3.stop();
    try {
      for (const op of [() => store.get(key), () => store.put(key, new Uint8Array([1])), () => store.exists(key), () => store.ping()]) {
        // Bounded by the operation deadline (2.5 s) plus slack for a loaded machine, not the SDK's minutes.
        await assert.rejects(within<unknown>(op(), s3.config.operationTimeoutMs! + 5000, "a call to a stopped store"), (e: unknown) => {
          assertMLError(MLErrorCode.STORAGE_CONNECTION_ERROR, /object storage/)(e);
          assert.equal(isRetryable((e as MLError).code), true);
          return true;
        });
      }
    } finally {
      await s3.start();
    }
    assert.deepEqual(await store.get(key), new Uint8Array([9, 9, 9]));
  });

  test("a server that accepts connections but never answers fails within the deadline instead of hanging", async () => {
    const sockets: Socket[] = [];
    const blackhole = createServer((socket) => sockets.push(socket));
    await new Promise<void>((resolve) => blackhole.listen(0, "127.0.0.1", resolve));
    const { port } = blackhole.address() as { port: number };
    try {
      const store = createS3Store({
        ...s3.config,
        endpoint: `http://127.0.0.1:${port}`,
        requestTimeoutMs: 600,
        operationTimeoutMs: 10_000,
      });
      // The per-attempt request timeout ends it (its message, not the
      // operation deadline's "Request aborted"); the bound only catches a hang.
      await assert.rejects(
        within(store.get(`nose-print-photo/${DID}/image_1.jpg`), 15_000, "a get from a server that never answers"),
        assertMLError(MLErrorCode.STORAGE_CONNECTION_ERROR, /timed out \(.*exceeded the configured 600 ms requestTimeout/),
      );
      assert.equal(sockets.length, 2, "one connection per attempt (two attempts), then no more");
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => blackhole.close(resolve));
    }
  });

  test("a write cut off mid-body keeps the old object and reports STORAGE_CONNECTION_ERROR", async () => {
    const direct = createS3Store(s3.config);
    const link = await startTcpProxy(Number(new URL(s3.config.endpoint).port));
    try {
      const key = `nose-print-photo/${DID}/overwrite.jpg`;
      const old = new Uint8Array(randomBytes(4096));
      await direct.put(key, old);
      // Every connection through the link is reset after 16 KiB of the 256 KiB upload, retries included.
      link.cutAfter(16 * 1024);
      const cut = createS3Store({ ...s3.config, endpoint: `http://127.0.0.1:${link.port}` });
      await assert.rejects(cut.put(key, new Uint8Array(256 * 1024).fill(7)), (e: unknown) => {
        assertMLError(MLErrorCode.STORAGE_CONNECTION_ERROR, /put .*overwrite\.jpg failed/)(e);
        assert.equal(isRetryable((e as MLError).code), true);
        return true;
      });
      assert.ok(link.opened() >= 1);
      assert.deepEqual(await direct.get(key), old, "the old object, whole");
    } finally {
      await link.close();
    }
  });

  test("a wrong bucket is a storage error, not a missing object", async () => {
    const store = createS3Store({ ...s3.config, bucket: "no-such-bucket" });
    await assert.rejects(store.get(`nose-print-photo/${DID}/image_1.jpg`), assertMLError(MLErrorCode.STORAGE_CONNECTION_ERROR));
  });
});

describe("legacy pet-vectors/{petDID}.json", () => {
  const root = mkdtempSync(join(tmpdir(), "nosepaw-legacy-"));
  after(() => rmSync(root, { recursive: true, force: true }));
  const store = createFolderStore({ root });
  const put = (did: string, doc: unknown) => store.put(legacyVectorKey(did), new TextEncoder().encode(JSON.stringify(doc)));

  test("reads the platform's JSON template", async () => {
    const fv = Array.from({ length: 512 }, (_, i) => Math.cos(i) / 20);
    await put(DID, { petDID: DID, featureVector: fv, vectorSize: 512, createdAt: "2024-05-01T00:00:00Z", version: "1.0" });
    const got = await readLegacyVector(store, DID);
    assert.deepEqual(got?.vector, Float32Array.from(fv));
    assert.equal(got?.version, "1.0");
  });

  test("is undefined when absent, and refuses a wrong size or a broken document", async () => {
    assert.equal(await readLegacyVector(store, "did:pet:absent"), undefined);
    await put("did:pet:short", { petDID: "did:pet:short", featureVector: [0.1, 0.2], vectorSize: 2 });
    await assert.rejects(readLegacyVector(store, "did:pet:short"), assertMLError(MLErrorCode.VECTOR_DIMENSION_MISMATCH, /2 dimensions/));
    await store.put(legacyVectorKey("did:pet:broken"), new TextEncoder().encode("{not json"));
    await assert.rejects(readLegacyVector(store, "did:pet:broken"), assertMLError(MLErrorCode.INTERNAL_SERVER_ERROR, /not valid JSON/));
  });
});
