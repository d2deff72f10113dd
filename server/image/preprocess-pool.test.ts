import assert from "node:assert/strict";
import { test } from "node:test";
import { MLErrorCode } from "../../gen/nose_embedder_pb.js";
import { toModelInput } from "../../shared/preprocess.js";
import { jpeg } from "../../test/support/images.js";
import { MLError } from "../errors.js";
import { decodeImage } from "./decode.js";
import { createPreprocessPool } from "./preprocess-pool.js";

const limits = { maxBytes: 1 << 24, maxPixels: 1 << 24 };

test("workers give the same tensors as decoding in process, for more jobs than workers", async () => {
  const pool = createPreprocessPool(limits, 2);
  try {
    const photos = await Promise.all([0, 1, 2, 3, 4].map((i) => jpeg(100 + i * 37, 90 + i * 11, i)));
    const got = await Promise.all(photos.map((p) => pool.preprocess(p, 224)));
    for (let i = 0; i < photos.length; i++) {
      const want = toModelInput((await decodeImage(photos[i], limits)).image, 224);
      assert.deepEqual(got[i], want);
    }
  } finally {
    await pool.close();
  }
});

test("decoder errors keep their ML code across the thread boundary", async () => {
  const pool = createPreprocessPool(limits, 1);
  try {
    await assert.rejects(
      pool.preprocess(new Uint8Array([0x47, 0x49, 0x46, 0x38]), 224),
      (e: unknown) => e instanceof MLError && e.code === MLErrorCode.INVALID_IMAGE_FORMAT,
    );
    await assert.rejects(
      pool.preprocess(new Uint8Array(0), 224),
      (e: unknown) => e instanceof MLError && e.code === MLErrorCode.INVALID_REQUEST,
    );
    const ok = await pool.preprocess(await jpeg(64, 64, 1), 32);
    assert.equal(ok.length, 3 * 32 * 32);
  } finally {
    await pool.close();
  }
});

test("a closed pool refuses work instead of hanging", async () => {
  const pool = createPreprocessPool(limits, 1);
  await pool.close();
  await assert.rejects(
    pool.preprocess(new Uint8Array([1]), 224),
    (e: unknown) => e instanceof MLError && e.code === MLErrorCode.INTERNAL_SERVER_ERROR,
  );
});

test("past the queue limit, photos are refused as SERVICE_UNAVAILABLE (retryable) instead of piling up", async () => {
  const pool = createPreprocessPool(limits, 1, 2);
  try {
    const big = await jpeg(1600, 1200, 3);
    // One job first, so the worker is up and idle: then of six photos sent at
    // once, one goes to the worker, two wait, and exactly three are refused.
    await pool.preprocess(big, 224);
    const all = Promise.allSettled([0, 1, 2, 3, 4, 5].map(() => pool.preprocess(big, 224)));
    const { busy, queued, refused } = pool.stats();
    assert.deepEqual({ busy, queued, refused }, { busy: 1, queued: 2, refused: 3 });
    const settled = await all;
    assert.deepEqual(
      settled.map((r) => r.status),
      ["fulfilled", "fulfilled", "fulfilled", "rejected", "rejected", "rejected"],
    );
    for (const r of settled.slice(3)) {
      const reason = (r as PromiseRejectedResult).reason;
      assert.ok(reason instanceof MLError && reason.code === MLErrorCode.SERVICE_UNAVAILABLE, String(reason));
      assert.match(reason.message, /2 photos already wait for preprocessing/);
    }
    assert.equal(pool.stats().refused, 3);
  } finally {
    await pool.close();
  }
});

test("a photo already at the model's size is preprocessed without a worker, to the same tensor", async () => {
  const pool = createPreprocessPool(limits, 1);
  try {
    const crop = await jpeg(224, 224, 9);
    const near = await jpeg(225, 224, 9);
    const before = pool.stats();
    const got = await pool.preprocess(crop, 224);
    await pool.preprocess(near, 224);
    const after = pool.stats();
    assert.equal(after.inline - before.inline, 1, "the 224x224 crop should not go to a worker");
    assert.equal(after.started - before.started, 1, "the 225x224 photo needs a resize and goes to a worker");
    assert.deepEqual(got, toModelInput((await decodeImage(crop, limits)).image, 224));
  } finally {
    await pool.close();
  }
});
