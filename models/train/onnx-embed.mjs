// Embeds a float32 (N,3,224,224) .npy with an ONNX model in onnxruntime-node and writes
// the (N,D) float32 embeddings as .npy. Used by the Python evaluation and the parity check,
// since Debian has no Python onnxruntime.
//   node models/train/onnx-embed.mjs model.onnx in.npy out.npy [batch]
import { readNpy, writeNpy } from "./npy-io.mjs";
import * as ort from "onnxruntime-node";

const [model, inPath, outPath, batchArg] = process.argv.slice(2);
const batch = Number(batchArg ?? 16);
const { shape, data } = readNpy(inPath);
const [n, c, h, w] = shape;
const session = await ort.InferenceSession.create(model, { intraOpNumThreads: 2, graphOptimizationLevel: "all" });
const inName = session.inputNames[0];
const outName = session.outputNames[0];
const per = c * h * w;
let dim = 0;
let out = null;
for (let i = 0; i < n; i += batch) {
  const b = Math.min(batch, n - i);
  const x = new ort.Tensor("float32", data.subarray(i * per, (i + b) * per), [b, c, h, w]);
  const y = (await session.run({ [inName]: x }))[outName];
  dim = y.dims[1];
  if (!out) out = new Float32Array(n * dim);
  out.set(y.data, i * dim);
}
writeNpy(outPath, out ?? new Float32Array(0), [n, dim]);
