// Two measurements quantize.py needs from onnxruntime-node (Debian has no Python onnxruntime):
//
//   node models/train/onnx-probe.mjs ranges model.onnx in.npy out.json [batch]
//     runs the model over a float32 (N,3,S,S) .npy in batches and writes, for every graph
//     output, the per-batch minimum and maximum averaged over the batches, and the overall
//     minimum and maximum: {name: {avgMin, avgMax, min, max}}. quantize.py exposes the
//     tensors it wants to quantize as extra outputs of a copy of the model.
//   node models/train/onnx-probe.mjs histograms model.onnx in.npy ranges.json out.json [batch]
//     a second pass over the same data: for every output named in ranges.json (the first
//     pass's file), a 2048-bin histogram over [min(0, min), max(0, max)] and, for 4-D
//     (N,C,H,W) outputs, the mean of each channel: {name: {lo, hi, counts, channelMeans}}.
//     quantize.py picks each activation's range from its histogram and corrects the Conv
//     biases for the weights' rounding with the channel means.
//   node models/train/onnx-probe.mjs latency model.onnx [threads] [runs]
//     median and p95 milliseconds of one batch-1 run, after warm-up, with the given intra-op
//     threads (default 2) and graph optimisation "all": {p50, p95, runs, threads}.
import { readFileSync, writeFileSync } from "node:fs";
import { readNpy } from "./npy-io.mjs";
import * as ort from "onnxruntime-node";

/**
 * Runs the model over a float32 (N,C,H,W) .npy in batches ("basic" optimisation, so every output
 * asked for stays in the graph) and calls `take` with each batch's outputs.
 */
async function overBatches(modelPath, inPath, batch, take) {
  const { shape, data } = readNpy(inPath);
  const [n, c, h, w] = shape;
  const per = c * h * w;
  const session = await ort.InferenceSession.create(modelPath, { intraOpNumThreads: 2, graphOptimizationLevel: "basic" });
  for (let i = 0; i < n; i += batch) {
    const b = Math.min(batch, n - i);
    const res = await session.run({
      [session.inputNames[0]]: new ort.Tensor("float32", data.subarray(i * per, (i + b) * per), [b, c, h, w]),
    });
    take(res, session.outputNames);
  }
}

const [mode, model, ...rest] = process.argv.slice(2);
if (mode === "ranges") {
  const [inPath, outPath, batchArg] = rest;
  const stats = {};
  let batches = 0;
  await overBatches(model, inPath, Number(batchArg ?? 8), (res, names) => {
    batches++;
    for (const name of names) {
      const v = res[name].data;
      let lo = Infinity;
      let hi = -Infinity;
      for (let k = 0; k < v.length; k++) {
        const x = v[k];
        if (x < lo) lo = x;
        if (x > hi) hi = x;
      }
      const s = (stats[name] ??= { sumMin: 0, sumMax: 0, min: Infinity, max: -Infinity });
      s.sumMin += lo;
      s.sumMax += hi;
      s.min = Math.min(s.min, lo);
      s.max = Math.max(s.max, hi);
    }
  });
  const out = {};
  for (const [name, s] of Object.entries(stats))
    out[name] = { avgMin: s.sumMin / batches, avgMax: s.sumMax / batches, min: s.min, max: s.max };
  writeFileSync(outPath, JSON.stringify(out));
} else if (mode === "histograms") {
  const [inPath, rangesPath, outPath, batchArg] = rest;
  const ranges = JSON.parse(readFileSync(rangesPath, "utf8"));
  const BINS = 2048;
  const acc = {};
  await overBatches(model, inPath, Number(batchArg ?? 8), (res, names) => {
    for (const name of names) {
      const r = ranges[name];
      if (!r) continue;
      const lo = Math.min(0, r.min);
      const hi = Math.max(0, r.max);
      const a = (acc[name] ??= { lo, hi, counts: new Float64Array(BINS), sums: null, perChannel: 0 });
      const t = res[name];
      const v = t.data;
      const k = (BINS - 1) / (hi - lo || 1);
      for (let j = 0; j < v.length; j++) a.counts[Math.round((v[j] - lo) * k)]++;
      if (t.dims.length === 4) {
        const [bn, cn, hn, wn] = t.dims;
        const hw = hn * wn;
        a.sums ??= new Float64Array(cn);
        for (let bb = 0; bb < bn; bb++)
          for (let cc = 0; cc < cn; cc++) {
            let s = 0;
            const o = (bb * cn + cc) * hw;
            for (let q = 0; q < hw; q++) s += v[o + q];
            a.sums[cc] += s;
          }
        a.perChannel += bn * hw;
      }
    }
  });
  const out = {};
  for (const [name, a] of Object.entries(acc))
    out[name] = { lo: a.lo, hi: a.hi, counts: [...a.counts], channelMeans: a.sums ? [...a.sums].map((s) => s / a.perChannel) : null };
  writeFileSync(outPath, JSON.stringify(out));
} else if (mode === "latency") {
  const threads = Number(rest[0] ?? 2);
  const runs = Number(rest[1] ?? 30);
  // As the server opens a model (sessionConfig in server/model/embedder.ts): without QDQ propagation, which would
  // run the int8 variant's first MaxPool on uint8 in a generic kernel.
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: threads,
    graphOptimizationLevel: "all",
    extra: { optimization: { disable_specified_optimizers: "QDQPropagationTransformer" } },
  });
  const meta = session.inputMetadata[0];
  const size = typeof meta.shape?.[2] === "number" ? meta.shape[2] : 224;
  const x = new Float32Array(3 * size * size).map((_, i) => ((i * 7919) % 256) / 255);
  const feeds = { [session.inputNames[0]]: new ort.Tensor("float32", x, [1, 3, size, size]) };
  for (let i = 0; i < 5; i++) await session.run(feeds);
  const ms = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    await session.run(feeds);
    ms.push(performance.now() - t);
  }
  ms.sort((a, b) => a - b);
  const at = (p) => ms[Math.min(ms.length - 1, Math.ceil((p / 100) * ms.length) - 1)];
  console.log(JSON.stringify({ p50: at(50), p95: at(95), runs, threads }));
} else {
  console.error(
    "usage: onnx-probe.mjs ranges MODEL IN.npy OUT.json [batch] | histograms MODEL IN.npy RANGES.json OUT.json [batch] | latency MODEL [threads] [runs]",
  );
  process.exit(2);
}
