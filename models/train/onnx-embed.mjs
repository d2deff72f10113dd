// Embeds a float32 (N,3,224,224) .npy with an ONNX model in onnxruntime-node and writes
// the (N,D) float32 embeddings as .npy. Used by the Python evaluation and the parity check,
// since Debian has no Python onnxruntime.
//   node models/train/onnx-embed.mjs model.onnx in.npy out.npy [batch]
import { readFileSync, writeFileSync } from "node:fs";
import * as ort from "onnxruntime-node";

function readNpy(path) {
  const buf = readFileSync(path);
  const headerLen = buf.readUInt16LE(8);
  const header = buf.subarray(10, 10 + headerLen).toString("latin1");
  if (!header.includes("'<f4'") || header.includes("'fortran_order': True")) throw new Error(`need C-order float32 npy: ${header}`);
  const shape = header
    .match(/'shape': \(([^)]*)\)/)[1]
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)
    .map(Number);
  const off = 10 + headerLen;
  const data = new Float32Array(buf.buffer.slice(buf.byteOffset + off, buf.byteOffset + buf.length));
  return { shape, data };
}

function writeNpy(path, data, shape) {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(", ")},), }`;
  const pad = 64 - ((10 + header.length + 1) % 64);
  header = header + " ".repeat(pad % 64) + "\n";
  const head = Buffer.alloc(10);
  head.write("\x93NUMPY", 0, "latin1");
  head[6] = 1;
  head[7] = 0;
  head.writeUInt16LE(header.length, 8);
  writeFileSync(path, Buffer.concat([head, Buffer.from(header, "latin1"), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
}

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
