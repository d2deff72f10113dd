/**
 * The model must see the same tensor the old Python server built:
 * Image.open -> ImageOps.exif_transpose -> convert("RGB") -> resize(LANCZOS)
 * -> float32 / 255 -> CHW, on Pillow 9.4. A seeded corpus of JPEGs and PNGs
 * (every layout Pillow converts differently, JPEG encodings, EXIF
 * orientations, ICC profiles, sizes from 37 px wide to 4032x3024) is
 * written at test time; test/pil/reference.py runs Pillow on it and each
 * image goes through decodeImage + toModelInput here.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import sharp from "sharp";
import { decodeImage } from "../server/image/decode.js";
import { toModelInput } from "../shared/preprocess.js";
import { cosine } from "../shared/similarity.js";
import { randomBytes } from "./support/images.js";
import { INSTALL, requireSystem } from "./support/require-system.js";

const PYTHON = "/usr/bin/python3";
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const SIZE = Number(process.env.MODEL_INPUT_SIZE ?? 224);
const MODEL = process.env.MODEL_PATH ?? path.join(root, "models/nose-embedder.onnx");
const SEED = 20240601;
const LIMITS = { maxBytes: 64 << 20, maxPixels: 40_000_000 };
/** One 8-bit step; in practice every image matches exactly. */
const TOLERANCE = 1 / 255 + 1e-6;

const pythonCheck = spawnSync(PYTHON, ["-c", "import PIL, numpy"], { encoding: "utf8" });
const noPython = requireSystem(
  `Pillow and numpy under ${PYTHON}`,
  pythonCheck.status !== 0 && (pythonCheck.stderr || "not found").trim(),
  INSTALL.python,
);

interface Entry {
  file: string;
  kind: string;
}
interface Reference {
  mode: string | null;
  size: [number, number] | null;
  icc: boolean;
  error: string | null;
}

function run(args: string[]): void {
  const r = spawnSync(PYTHON, args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${args[0]} failed: ${r.stderr || r.error}`);
}

/** Images carrying a Display P3 profile, which Pillow ignores and so must we. */
async function writeIccImages(dir: string): Promise<Entry[]> {
  const w = 320;
  const h = 240;
  const noise = randomBytes(w * h * 3, SEED);
  // Smooth the noise a little so that JPEG keeps some structure.
  const raw = await sharp(noise, { raw: { width: w, height: h, channels: 3 } })
    .blur(1.2)
    .raw()
    .toBuffer();
  const img = () => sharp(raw, { raw: { width: w, height: h, channels: 3 } }).withIccProfile("p3");
  writeFileSync(path.join(dir, "icc-p3.jpg"), await img().jpeg({ quality: 90 }).toBuffer());
  writeFileSync(path.join(dir, "icc-p3.png"), await img().png().toBuffer());
  return [
    { file: "icc-p3.jpg", kind: "jpeg-icc" },
    { file: "icc-p3.png", kind: "png-icc" },
  ];
}

function readF32(file: string): Float32Array {
  const b = readFileSync(file);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe("preprocessing matches Pillow 9.4", { skip: noPython }, () => {
  let dir = "";
  let entries: Entry[] = [];
  let refs: Record<string, Reference> = {};
  const ours = new Map<string, Float32Array>();

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "nosepaw-parity-"));
    run([path.join(root, "test/pil/make_corpus.py"), dir, String(SEED)]);
    const manifestPath = path.join(dir, "manifest.json");
    entries = [...(JSON.parse(readFileSync(manifestPath, "utf8")) as Entry[]), ...(await writeIccImages(dir))];
    writeFileSync(manifestPath, JSON.stringify(entries));
    run([path.join(root, "test/pil/reference.py"), dir, String(SIZE)]);
    refs = JSON.parse(readFileSync(path.join(dir, "reference.json"), "utf8"));
  });

  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("Pillow opens every image of the corpus", () => {
    const failed = entries.filter((e) => refs[e.file]?.error !== null);
    assert.deepEqual(
      failed.map((e) => `${e.file}: ${refs[e.file]?.error}`),
      [],
    );
    assert.ok(entries.length >= 50, `corpus has only ${entries.length} images`);
    // The corpus really covers the layouts it claims to.
    const modes = new Set(entries.map((e) => refs[e.file].mode));
    for (const m of ["RGB", "L", "LA", "RGBA", "P", "1", "I", "CMYK"]) assert.ok(modes.has(m), `no image opens as mode ${m}`);
    assert.ok(refs["icc-p3.jpg"].icc && refs["icc-p3.png"].icc, "ICC test images carry no profile");
  });

  test("every image decodes and preprocesses to Pillow's tensor within one 8-bit step", async (t) => {
    const worst = new Map<string, { diff: number; file: string }>();
    const failures: string[] = [];
    for (const { file, kind } of entries) {
      const ref = refs[file];
      if (ref.error !== null) continue;
      const decoded = await decodeImage(readFileSync(path.join(dir, file)), LIMITS);
      // EXIF orientation 5..8 swaps the sides; Pillow's size is after exif_transpose.
      assert.deepEqual([decoded.width, decoded.height], ref.size, `${file}: oriented size`);
      const x = toModelInput(decoded.image, SIZE);
      ours.set(file, x);
      const diff = maxAbsDiff(x, readF32(path.join(dir, `${file}.f32`)));
      if (diff > TOLERANCE) failures.push(`${file} (${kind}, mode ${ref.mode}): max |diff| ${(diff * 255).toFixed(2)}/255`);
      const w = worst.get(kind);
      if (!w || diff > w.diff) worst.set(kind, { diff, file });
    }
    for (const [kind, { diff, file }] of [...worst].sort()) {
      t.diagnostic(`${kind.padEnd(22)} worst max|diff| ${(diff * 255).toFixed(3)}/255  (${file})`);
    }
    assert.deepEqual(failures, []);
  });

  test("embeddings of our tensors and Pillow's agree (cosine >= 0.9999)", async (t) => {
    const noModel = requireSystem(
      "the model",
      !existsSync(MODEL) && `no file at ${MODEL}`,
      "restore models/nose-embedder.onnx from git, or set MODEL_PATH",
    );
    if (noModel) {
      t.skip(noModel);
      return;
    }
    const ort = await import("onnxruntime-node");
    const session = await ort.InferenceSession.create(MODEL, { intraOpNumThreads: 1, executionProviders: ["cpu"] });
    const embed = async (chw: Float32Array) => {
      const out = await session.run({ [session.inputNames[0]]: new ort.Tensor("float32", chw, [1, 3, SIZE, SIZE]) });
      return out[session.outputNames[0]].data as Float32Array;
    };
    let worst = { cos: 1, file: "" };
    const low: string[] = [];
    for (const { file } of entries) {
      const x = ours.get(file);
      if (!x) continue;
      const a = await embed(x);
      const b = await embed(readF32(path.join(dir, `${file}.f32`)));
      const cos = cosine(a, b);
      if (cos < worst.cos) worst = { cos, file };
      if (!(cos >= 0.9999)) low.push(`${file}: cosine ${cos}`);
    }
    await session.release();
    t.diagnostic(`worst embedding cosine ${worst.cos.toFixed(7)} (${worst.file || "every image: 1"})`);
    assert.ok(ours.size > 0, "no tensors to compare: the parity test above did not run");
    assert.deepEqual(low, []);
  });
});
