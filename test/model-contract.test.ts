/**
 * The shipped embedder keeps the service's model contract: (N,3,224,224) float32 RGB in
 * [0,1] with a dynamic batch axis in, (N,512) L2-normalised float32 out, deterministic,
 * and a model card whose calibration the server can load.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, statSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as ort from "onnxruntime-node";

const modelPath = fileURLToPath(new URL("../models/nose-embedder.onnx", import.meta.url));
const cardPath = fileURLToPath(new URL("../models/nose-embedder.json", import.meta.url));
const PIXELS = 3 * 224 * 224;

function seededInput(n: number, seed: number): Float32Array {
  const x = new Float32Array(n * PIXELS);
  let s = seed >>> 0;
  for (let i = 0; i < x.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    x[i] = s / 4294967296;
  }
  return x;
}

async function embed(session: ort.InferenceSession, x: Float32Array, n: number): Promise<ort.Tensor> {
  const out = await session.run({ input: new ort.Tensor("float32", x, [n, 3, 224, 224]) });
  return out.embedding;
}

let sessionPromise: Promise<ort.InferenceSession> | undefined;
function session(): Promise<ort.InferenceSession> {
  sessionPromise ??= ort.InferenceSession.create(modelPath, { intraOpNumThreads: 1 });
  return sessionPromise;
}

test("the ONNX file is at most 25 MB and names its tensors input and embedding", async () => {
  assert.ok(statSync(modelPath).size <= 25 * 1024 * 1024);
  const s = await session();
  assert.deepEqual(s.inputNames, ["input"]);
  assert.deepEqual(s.outputNames, ["embedding"]);
});

test("embeds a batch of 1 and a batch of 3 into (N,512) float32", async () => {
  const s = await session();
  for (const n of [1, 3]) {
    const y = await embed(s, seededInput(n, 7), n);
    assert.equal(y.type, "float32");
    assert.deepEqual(y.dims, [n, 512]);
  }
});

test("every embedding is L2-normalised", async () => {
  const y = await embed(await session(), seededInput(3, 11), 3);
  const v = y.data as Float32Array;
  for (let r = 0; r < 3; r++) {
    let ss = 0;
    for (let i = 0; i < 512; i++) ss += v[r * 512 + i] ** 2;
    assert.ok(Math.abs(Math.sqrt(ss) - 1) < 1e-3, `row ${r} norm ${Math.sqrt(ss)}`);
  }
});

test("is deterministic and batch-independent", async () => {
  const s = await session();
  const x = seededInput(3, 5);
  const a = (await embed(s, x, 3)).data as Float32Array;
  const b = (await embed(s, x, 3)).data as Float32Array;
  assert.deepEqual(a, b);
  const single = (await embed(s, x.slice(PIXELS, 2 * PIXELS), 1)).data as Float32Array;
  for (let i = 0; i < 512; i++) assert.ok(Math.abs(single[i] - a[512 + i]) < 1e-4);
});

test("different images give different embeddings", async () => {
  const s = await session();
  const flat = new Float32Array(PIXELS).fill(0.3);
  const y = (await embed(s, new Float32Array([...seededInput(1, 1), ...seededInput(1, 2), ...flat]), 3)).data as Float32Array;
  for (const [i, j] of [
    [0, 1],
    [0, 2],
    [1, 2],
  ]) {
    let dot = 0;
    let diff = 0;
    for (let k = 0; k < 512; k++) {
      dot += y[i * 512 + k] * y[j * 512 + k];
      diff = Math.max(diff, Math.abs(y[i * 512 + k] - y[j * 512 + k]));
    }
    assert.ok(diff > 1e-3, `embeddings ${i} and ${j} are identical`);
    assert.ok(dot < 0.99999, `embeddings ${i} and ${j} have cosine ${dot}`);
  }
});

test("the model card parses and carries the contract and a monotone calibration", () => {
  const card = JSON.parse(readFileSync(cardPath, "utf8"));
  assert.equal(typeof card.name, "string");
  assert.equal(typeof card.version, "string");
  assert.ok(card.version.length > 0);
  assert.equal(card.license, "MIT");
  assert.equal(card.input.name, "input");
  assert.deepEqual(card.input.shape, [null, 3, 224, 224]);
  assert.equal(card.input.dtype, "float32");
  assert.deepEqual(card.input.range, [0, 1]);
  assert.equal(card.output.name, "embedding");
  assert.deepEqual(card.output.shape, [null, 512]);
  assert.equal(card.output.l2_normalized, true);
  assert.equal(typeof card.preprocessing, "string");
  for (const k of ["auc", "eer", "rank1"]) assert.equal(typeof card.evaluation[k], "number");
  const { cosine, similarity } = card.calibration as { cosine: number[]; similarity: number[] };
  assert.ok(cosine.length >= 2 && cosine.length === similarity.length);
  for (let i = 0; i < cosine.length; i++) {
    assert.ok(Number.isFinite(cosine[i]) && cosine[i] >= -1 && cosine[i] <= 1);
    assert.ok(similarity[i] >= 0 && similarity[i] <= 1);
    if (i > 0) {
      assert.ok(cosine[i] > cosine[i - 1], "cosine knots ascend");
      assert.ok(similarity[i] >= similarity[i - 1], "similarity knots do not decrease");
    }
  }
  // the decision thresholds are reachable and sit where the card says they hold their FAR
  assert.ok(similarity[0] < 0.7 && similarity[similarity.length - 1] >= 0.85);
  assert.ok(card.calibration["far_at_0.85"] <= 1e-3);
  assert.ok(card.calibration["far_at_0.70"] <= 1e-2);
});
