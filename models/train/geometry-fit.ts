/**
 * Fits and measures the geometric check on rendered photo pairs
 * (geometry_pairs.py): genuine pairs, impostor pairs between independent
 * noses, and look-alike impostors (same family, other bead mosaic). Each
 * photo is embedded by the model exactly as the service does (Pillow-exact
 * preprocessing, onnxruntime-node), its keypoints found by the shared
 * geometry module (OpenCV's WebAssembly build, as the service runs it).
 *
 *   npm run model:geometry -- PAIRS_DIR [--model models/nose-embedder.onnx] [--card models/nose-embedder.json]
 *       [--impostors 30000] [--far 1e-4] [--write-card] [--report out.json] [--model-kind homography|affine]
 *
 * Prints a JSON report: inlier quantiles per pair kind, the thresholds fitted
 * at the per-pair false-accept rate --far (with the number of impostor pairs
 * behind them), genuine and impostor pass rates of the decision rules, and
 * the cost per photo and per pair. --write-card stores the policy and the
 * parameters in the card's `geometry` block.
 */
import { readFile, readdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import * as ort from "onnxruntime-node";
import {
  DEFAULT_GEOMETRY_PARAMS,
  extractFeatures,
  featureSetId,
  loadOpenCv,
  matchFeatures,
  type GeometryParams,
  type NoseFeatures,
} from "../../shared/geometry/index.js";
import { calibrate, cosine, type Calibration } from "../../shared/similarity.js";
import { preprocessPhoto } from "../../server/image/preprocess-photo.js";
import { greyForGeometry } from "../../server/geometry/grey.js";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    model: { type: "string", default: "models/nose-embedder.onnx" },
    card: { type: "string", default: "models/nose-embedder.json" },
    impostors: { type: "string", default: "30000" },
    far: { type: "string", default: "1e-4" },
    "write-card": { type: "boolean", default: false },
    report: { type: "string" },
    "model-kind": { type: "string" },
    "max-keypoints": { type: "string" },
    side: { type: "string" },
  },
});
const dir = positionals[0];
if (!dir) {
  console.error("usage: npm run model:geometry -- PAIRS_DIR [options] (see the file's header)");
  process.exit(2);
}
const params: GeometryParams = {
  ...DEFAULT_GEOMETRY_PARAMS,
  ...(values["model-kind"] ? { model: values["model-kind"] as GeometryParams["model"] } : {}),
  ...(values["max-keypoints"] ? { maxKeypoints: Number(values["max-keypoints"]) } : {}),
  ...(values.side
    ? {
        side: Number(values.side),
        reprojectionPx: (DEFAULT_GEOMETRY_PARAMS.reprojectionPx * Number(values.side)) / DEFAULT_GEOMETRY_PARAMS.side,
      }
    : {}),
};
const far = Number(values.far);
const limits = { maxBytes: 50 << 20, maxPixels: 50_000_000 };

interface Photo {
  id: string;
  family: string | null;
  shot: number;
  embedding: Float32Array;
  features: NoseFeatures;
}

const cardText = await readFile(values.card!, "utf8");
const card = JSON.parse(cardText) as { calibration?: { cosine: number[]; similarity: number[] }; geometry?: unknown };
const calibration: Calibration | undefined = card.calibration
  ? { cosine: card.calibration.cosine, similarity: card.calibration.similarity }
  : undefined;
const manifest = JSON.parse(await readFile(path.join(dir, "manifest.json"), "utf8")) as { photos: Record<string, string | null> };
const session = await ort.InferenceSession.create(values.model!, { intraOpNumThreads: 2 });
const cv = await loadOpenCv();

const photos: Photo[] = [];
let featureMs = 0;
for (const id of Object.keys(manifest.photos).sort()) {
  for (const shot of (await readdir(path.join(dir, id))).filter((f) => f.endsWith(".jpg")).sort()) {
    const bytes = new Uint8Array(await readFile(path.join(dir, id, shot)));
    const { tensor } = await preprocessPhoto(bytes, 224, limits, true);
    const out = await session.run({ [session.inputNames[0]]: new ort.Tensor("float32", tensor, [1, 3, 224, 224]) });
    const embedding = out[session.outputNames[0]].data as Float32Array;
    const grey = await greyForGeometry(bytes, params.side, limits);
    const t0 = performance.now();
    const features = extractFeatures(cv, grey, params);
    featureMs += performance.now() - t0;
    photos.push({ id, family: manifest.photos[id], shot: Number(shot.split(".")[0]), embedding, features });
  }
}

type Kind = "genuine" | "impostor" | "lookalike";
interface Pair {
  kind: Kind;
  similarity: number;
  inliers: number;
}
const pairs: Pair[] = [];
let matchMs = 0;
const score = (a: Photo, b: Photo, kind: Kind) => {
  const t0 = performance.now();
  const m = matchFeatures(cv, a.features, b.features, params);
  matchMs += performance.now() - t0;
  pairs.push({ kind, similarity: calibrate(cosine(a.embedding, b.embedding), calibration), inliers: m.inliers });
};
// Enrolment photo (shot 0) against a later photo (shot 1), as verification compares them.
const firsts = photos.filter((p) => p.shot === 0);
const laters = new Map(photos.filter((p) => p.shot === 1).map((p) => [p.id, p]));
for (const a of firsts) {
  const b = laters.get(a.id);
  if (b) score(a, b, "genuine");
}
for (const a of firsts) {
  if (!a.family) continue;
  for (const b of firsts) if (b.family === a.family && b.id !== a.id) score(a, laters.get(b.id)!, "lookalike");
}
// A seeded sample of impostor pairs between different families.
let seed = 20261206;
const rand = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
const wanted = Number(values.impostors);
for (let n = 0; n < wanted;) {
  const a = firsts[Math.floor(rand() * firsts.length)];
  const b = firsts[Math.floor(rand() * firsts.length)];
  if (a.id === b.id || (a.family !== null && a.family === b.family)) continue;
  score(a, laters.get(b.id)!, "impostor");
  n++;
}

const of = (k: Kind) => pairs.filter((p) => p.kind === k);
const quantiles = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const q = (f: number) => s[Math.min(s.length - 1, Math.floor(f * s.length))];
  return { n: s.length, p50: q(0.5), p90: q(0.9), p99: q(0.99), p999: q(0.999), max: s[s.length - 1] };
};
const negatives = [...of("impostor"), ...of("lookalike")];
/** The least inlier count that at most `rate` of the negatives reach (with similarity >= minSim). */
const fit = (minSim: number, rate: number) => {
  for (let t = 4; t <= 400; t++) {
    const pass = negatives.filter((p) => p.similarity >= minSim && p.inliers >= t).length;
    if (pass / negatives.length <= rate) return t;
  }
  return 400;
};
const rate = (list: Pair[], rule: (p: Pair) => boolean) => {
  const k = list.filter(rule).length;
  return { passed: k, of: list.length, rate: k / Math.max(1, list.length) };
};
// The inlier thresholds hold on their own, whatever the cosine: its calibration is what does not carry to photos.
const sameSimilarity = 0.7;
const sameInliers = fit(0, far);
// Refusing a registration as another pet's is a 1:N decision: ten times stricter, or past every impostor seen
// when the pairs cannot certify that.
const certifiable = negatives.length * (far / 10) >= 3;
const duplicateInliers = certifiable ? fit(0, far / 10) : Math.max(sameInliers, 1 + Math.max(...negatives.map((p) => p.inliers)));
/** Upper 95% bound of a rate seen k times in n (Wilson score; 3/n when none was seen). */
const upper95 = (k: number, n: number) => {
  if (k === 0) return 3 / n;
  const z = 1.96;
  const p = k / n;
  return (p + (z * z) / (2 * n) + z * Math.sqrt((p * (1 - p)) / n + (z * z) / (4 * n * n))) / (1 + (z * z) / n);
};
const atSame = negatives.filter((p) => p.inliers >= sameInliers).length;
const rules: Record<string, (p: Pair) => boolean> = {
  "similarity >= 0.85": (p) => p.similarity >= 0.85,
  "similarity >= 0.70": (p) => p.similarity >= 0.7,
  [`inliers >= ${sameInliers}`]: (p) => p.inliers >= sameInliers,
  "similarity >= 0.70 and inliers >= 16": (p) => p.similarity >= 0.7 && p.inliers >= 16,
  [`similarity >= 0.85 and inliers >= 8`]: (p) => p.similarity >= 0.85 && p.inliers >= 8,
  [`similarity >= ${sameSimilarity} and inliers >= ${sameInliers} (SAME)`]: (p) =>
    p.similarity >= sameSimilarity && p.inliers >= sameInliers,
};
const report = {
  pairs: dir,
  params,
  featureSetId: featureSetId(params),
  far,
  photos: photos.length,
  keypoints: quantiles(photos.map((p) => p.features.count)),
  inliers: {
    genuine: quantiles(of("genuine").map((p) => p.inliers)),
    impostor: quantiles(of("impostor").map((p) => p.inliers)),
    lookalike: quantiles(of("lookalike").map((p) => p.inliers)),
  },
  policy: { sameSimilarity, sameInliers, duplicateInliers, consistencyInliers: sameInliers, minKeypoints: sameInliers * 2 },
  negativesAtSameInliers: {
    passed: atSame,
    of: negatives.length,
    rate: atSame / negatives.length,
    upper95: upper95(atSame, negatives.length),
  },
  duplicateRule: certifiable
    ? `fitted at ${far / 10}`
    : `one more than the most inliers any of ${negatives.length} negative pairs reached (too few pairs to certify ${far / 10})`,
  rules: Object.fromEntries(
    Object.entries(rules).map(([name, r]) => [
      name,
      { genuine: rate(of("genuine"), r), impostor: rate(of("impostor"), r), lookalike: rate(of("lookalike"), r) },
    ]),
  ),
  costMs: { featuresPerPhoto: featureMs / photos.length, matchPerPair: matchMs / pairs.length },
};
console.log(JSON.stringify(report, null, 1));
if (values.report) await writeFile(values.report, JSON.stringify(report, null, 1) + "\n");
if (values["write-card"]) {
  const { pairs: _p, ...kept } = report;
  card.geometry = {
    ...kept,
    fitted_on: `${report.photos} rendered photos (models/train/geometry_pairs.py): ${of("genuine").length} genuine, ${of("impostor").length} impostor and ${of("lookalike").length} look-alike pairs`,
  };
  await writeFile(values.card!, JSON.stringify(card, null, 2) + "\n");
}
