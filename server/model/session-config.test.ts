/**
 * The settings the server opens a model with (sessionConfig), on the bundled
 * int8 variant: its MaxPool runs in float, every Conv the quantizer did not
 * leave float runs as an integer QLinearConv, and the embeddings are the bits
 * ONNX Runtime's defaults give.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import * as ort from "onnxruntime-node";
import { ROOT } from "../package-root.js";
import { sessionConfig } from "./embedder.js";

const INT8 = path.join(ROOT, "models", "nose-embedder.int8.onnx");
const dir = mkdtempSync(path.join(tmpdir(), "nosepaw-session-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const open = (extra: Record<string, unknown>, profile = false) =>
  ort.InferenceSession.create(readFileSync(INT8), {
    graphOptimizationLevel: "all",
    executionProviders: ["cpu"],
    intraOpNumThreads: 1,
    extra,
    ...(profile ? { enableProfiling: true, profileFilePrefix: path.join(dir, "run") } : {}),
  });

const input = (seed: number) => new Float32Array(3 * 224 * 224).map((_, i) => ((i * 7919 + seed * 104729) % 256) / 255);

async function embed(session: ort.InferenceSession, x: Float32Array): Promise<Float32Array> {
  const out = await session.run({ [session.inputNames[0]]: new ort.Tensor("float32", x, [1, 3, 224, 224]) });
  return out[session.outputNames[0]].data as Float32Array;
}

type ProfileEvent = { cat?: string; name: string; args?: { op_name?: string; input_type_shape?: Record<string, number[]>[] } };

/** The kernels of one run of the int8 variant with the server's settings, from ONNX Runtime's profile. */
const kernels: Promise<ProfileEvent[]> = (async () => {
  const session = await open(sessionConfig(), true);
  await embed(session, input(1));
  session.endProfiling();
  await session.release();
  const file = readdirSync(dir).find((f) => f.startsWith("run") && f.endsWith(".json"));
  assert.ok(file, "ONNX Runtime wrote no profile");
  const events = JSON.parse(readFileSync(path.join(dir, file), "utf8")) as ProfileEvent[];
  return events.filter((e) => e.cat === "Node" && e.name.endsWith("_kernel_time"));
})();
// Each test awaits it and fails with its error; this only keeps a failure before the first await from
// ending the file as an unhandled rejection.
kernels.catch(() => undefined);

test("the int8 variant's MaxPool runs on float values, not on uint8 in a generic kernel", async () => {
  const pools = (await kernels).filter((e) => e.args?.op_name === "MaxPool");
  assert.ok(pools.length > 0, "the model ran no MaxPool");
  for (const p of pools) {
    const types = (p.args?.input_type_shape ?? []).flatMap((t) => Object.keys(t));
    assert.deepEqual(types, ["float"], `${p.name} ran on ${types.join(",")}`);
  }
});

test("every Conv of the int8 variant runs as QLinearConv but those the quantizer left float", async () => {
  const record = JSON.parse(readFileSync(path.join(ROOT, "models", "nose-embedder.variants.json"), "utf8")) as {
    int8_float_nodes: string[];
  };
  const ran = await kernels;
  const float = ran.filter((e) => e.args?.op_name === "Conv").map((e) => e.name);
  assert.ok(ran.filter((e) => e.args?.op_name === "QLinearConv").length > 0, "no QLinearConv ran");
  // ONNX Runtime renames the Convs it fuses (the stem's is named after its Relu), so count them.
  assert.equal(float.length, record.int8_float_nodes.length, `float Convs: ${float.join(", ")}`);
});

test("the embeddings are the same bits as with ONNX Runtime's default settings", async () => {
  const ours = await open(sessionConfig());
  const plain = await open({});
  try {
    for (const seed of [1, 2]) {
      const x = input(seed);
      assert.deepEqual(await embed(ours, x), await embed(plain, x));
    }
  } finally {
    await Promise.all([ours.release(), plain.release()]);
  }
});
