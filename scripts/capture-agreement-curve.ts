/**
 * The agreement curve of docs/capture/checks.md: the shipped embedding's cosine between two captures of one
 * rendered nose (capture 0 and the re-take 2 of test/support/nose_photos.py) as the re-take is blurred (sigma in
 * px at the model's 224 px input) or darkened (a gain, then noise of 2 grey levels), and what the capture checks
 * say of the same degraded re-take shown as a 640 px close-up in a 1280x720 frame.
 *
 *   node --import tsx scripts/capture-agreement-curve.ts
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import sharp from "sharp";
import * as ort from "onnxruntime-node";
import { toModelInput } from "../shared/preprocess.js";
import { blurRgb } from "../shared/quality/test-support/stand-in-noses.js";
import { resizeLanczos } from "../shared/lanczos.js";
import { assessFrame } from "../shared/quality/index.js";
const DOGS = 12,
  W = 1280,
  H = 720;
const ROOT = path.resolve(import.meta.dirname, "..");
const renders = mkdtempSync(path.join(tmpdir(), "nosepaw-agreement-"));
execFileSync("/usr/bin/python3", [path.join(ROOT, "test/support/nose_photos.py"), renders, String(DOGS)], { stdio: "pipe" });
const sess = await ort.InferenceSession.create(path.join(ROOT, "models/nose-embedder.onnx"), { intraOpNumThreads: 2 });
async function load(d: number, k: number) {
  const { data, info } = await sharp(path.join(renders, `dog${d}_${k}.jpg`))
    .removeAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data), width: info.width, height: info.height };
}
async function embed(imgs: { data: Uint8Array; width: number; height: number }[]) {
  const per = 3 * 224 * 224,
    x = new Float32Array(imgs.length * per);
  imgs.forEach((im, i) => x.set(toModelInput({ ...im, channels: 3 }, 224), i * per));
  const y = (await sess.run({ [sess.inputNames[0]]: new ort.Tensor("float32", x, [imgs.length, 3, 224, 224]) }))[sess.outputNames[0]];
  return Array.from({ length: imgs.length }, (_, i) => (y.data as Float32Array).subarray(i * 512, (i + 1) * 512));
}
const cos = (a: Float32Array, b: Float32Array) => {
  let s = 0,
    na = 0,
    nb = 0;
  for (let i = 0; i < a.length; i++) ((s += a[i] * b[i]), (na += a[i] ** 2), (nb += b[i] ** 2));
  return s / Math.sqrt(na * nb);
};
const refs = await embed(await Promise.all(Array.from({ length: DOGS }, (_, d) => load(d, 0))));
const probes = await Promise.all(Array.from({ length: DOGS }, (_, d) => load(d, 2)));
const rnd = (() => {
  let a = 99;
  return () => {
    a = (a * 1103515245 + 12345) >>> 0;
    return a / 4294967296;
  };
})();
const gauss = () => Math.sqrt(-2 * Math.log(rnd() + 1e-12)) * Math.cos(2 * Math.PI * rnd());
function degrade(im: { data: Uint8Array; width: number; height: number }, sigma224: number, gain: number) {
  let d = im.data;
  if (sigma224 > 0) d = blurRgb(d, im.width, im.height, (sigma224 * im.width) / 224);
  if (gain !== 1) d = d.map((v) => Math.max(0, Math.min(255, Math.round(v * gain + 2 * gauss()))));
  return { ...im, data: d };
}
function checks(im: { data: Uint8Array; width: number; height: number }) {
  const p = resizeLanczos({ ...im, channels: 3 }, 640, 640, 3);
  const f = new Uint8Array(W * H * 3);
  for (let i = 0; i < W * H; i++) f.set([118, 104, 90], i * 3);
  for (let y = 0; y < 640; y++) f.set(p.subarray(y * 640 * 3, (y + 1) * 640 * 3), ((40 + y) * W + 320) * 3);
  const a = assessFrame({ data: f, width: W, height: H, channels: 3 });
  const get = (n: string) => a.checks.find((c) => c.name === n)!;
  return {
    sharp: get("sharpness").value,
    expo: get("exposure").value,
    pass: a.pass,
    why: a.checks
      .filter((c) => !c.pass)
      .map((c) => c.name)
      .join(","),
  };
}
async function row(label: string, sigma: number, gain: number) {
  const deg = probes.map((p) => degrade(p, sigma, gain));
  const e = await embed(deg);
  const gen = e.map((v, d) => cos(v, refs[d]));
  const imp = e.flatMap((v, d) => refs.filter((_, j) => j !== d).map((r) => cos(v, r)));
  const c = deg.map(checks);
  const med = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1];
  const mean = (a: number[]) => a.reduce((s, x) => s + x, 0) / a.length;
  console.log(
    `${label.padEnd(14)} genuine ${mean(gen).toFixed(3)} (min ${Math.min(...gen).toFixed(3)})  impostor mean ${mean(imp).toFixed(3)} max ${Math.max(...imp).toFixed(3)}  sharpness median ${med(c.map((x) => x.sharp)).toFixed(3)}  exposure mean ${med(c.map((x) => x.expo)).toFixed(3)}  pass ${c.filter((x) => x.pass).length}/${DOGS} ${[...new Set(c.map((x) => x.why))].join("|")}`,
  );
}
for (const s of [0, 0.5, 1, 1.5, 2, 3, 4, 6]) await row(`blur ${s}`, s, 1);
for (const g of [0.7, 0.5, 0.35, 0.25, 0.18, 0.12, 0.08]) await row(`gain ${g}`, 0, g);
