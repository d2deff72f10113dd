/**
 * Large JPEGs are shrunk while they are decoded (server/image/decode.ts)
 * before the exact LANCZOS: not bit-exact, so the bound is on what matters,
 * the embedding. Every JPEG of the parity corpus and rendered nose photos
 * from 1080 px to 12 MP (EXIF-rotated ones among them) go through the
 * server's fast path and through Pillow 9.4 (test/pil/reference.py); the
 * shipped model's embeddings of the two must agree to cosine 0.9999, and
 * photos the fast path leaves on the exact path must match Pillow to one
 * 8-bit step.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import sharp from "sharp";
import { decodeImage, SHRINK_MARGIN } from "../server/image/decode.js";
import { nativeJpegLoaded } from "../server/image/jpeg-native.js";
import { loadEmbedder, type Embedder } from "../server/model/embedder.js";
import { toModelInput } from "../shared/preprocess.js";
import { cosine } from "../shared/similarity.js";
import { nosePhotos } from "./support/nose-photos.js";
import { ROOT } from "./support/server.js";

const PYTHON = "/usr/bin/python3";
const SIZE = 224;
const LIMITS = { maxBytes: 64 << 20, maxPixels: 40_000_000 };
const MIN_COSINE = 0.9999;
const ONE_STEP = 1 / 255 + 1e-6;

interface Entry {
  file: string;
  kind: string;
}

function run(args: string[]): void {
  const r = spawnSync(PYTHON, args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${path.basename(args[0])} failed: ${r.stderr || r.error}`);
}

function readF32(file: string): Float32Array {
  const b = readFileSync(file);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
}

/** Rendered nose photos scaled to phone sizes; two carry EXIF orientation 6 as portrait phone shots do. */
async function writeNosePhotos(dir: string): Promise<Entry[]> {
  const shots = nosePhotos(4);
  const entries: Entry[] = [];
  const sizes: [number, number][] = [
    [1080, 1080],
    [1600, 1200],
    [2400, 1800],
    [3584, 2688],
    [4032, 3024],
    [4624, 3472],
  ];
  for (let dog = 0; dog < 4; dog++) {
    for (const [w, h] of sizes) {
      const file = `nose${dog}-${w}x${h}.jpg`;
      writeFileSync(path.join(dir, file), await sharp(shots(dog, 1)).resize(w, h).jpeg({ quality: 92 }).toBuffer());
      entries.push({ file, kind: `nose-${w}x${h}` });
    }
    if (dog < 2) {
      const file = `nose${dog}-portrait.jpg`;
      const jpeg = await sharp(shots(dog, 2)).resize(4032, 3024).jpeg({ quality: 90 }).withMetadata({ orientation: 6 }).toBuffer();
      writeFileSync(path.join(dir, file), jpeg);
      entries.push({ file, kind: "nose-exif-6" });
    }
  }
  return entries;
}

describe("shrink-on-load keeps embeddings within cosine 0.9999 of Pillow", () => {
  let dir = "";
  let entries: Entry[] = [];
  let embedder: Embedder;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "nosepaw-fastpath-"));
    run([path.join(ROOT, "test/pil/make_corpus.py"), dir, "20240601"]);
    const corpus = (JSON.parse(readFileSync(path.join(dir, "manifest.json"), "utf8")) as Entry[]).filter((e) => e.file.endsWith(".jpg"));
    entries = [...corpus, ...(await writeNosePhotos(dir))];
    writeFileSync(path.join(dir, "manifest.json"), JSON.stringify(entries));
    run([path.join(ROOT, "test/pil/reference.py"), dir, String(SIZE)]);
    embedder = await loadEmbedder({
      modelPath: path.join(ROOT, "models/nose-embedder.onnx"),
      inputSize: SIZE,
      intraOpThreads: 1,
      batchWindowMs: 0,
      maxBatch: 1,
    });
  });

  after(async () => {
    await embedder?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  // Each decoder that can shrink: the libjpeg addon (scaling the DCT by the whole factor) where it is built, and
  // sharp (half the factor in the DCT, then libvips), which decodes where it is not.
  for (const decoder of ["auto", "sharp"] as const) {
    test(`every JPEG takes the path its size calls for and stays within the bound (decoder: ${decoder})`, async (t) => {
      const refs = JSON.parse(readFileSync(path.join(dir, "reference.json"), "utf8")) as Record<string, { error: string | null }>;
      const failures: string[] = [];
      let shrunk = 0;
      let exact = 0;
      let worst = { cos: 1, file: "" };
      for (const { file, kind } of entries) {
        assert.equal(refs[file].error, null, `Pillow could not open ${file}`);
        const bytes = readFileSync(path.join(dir, file));
        const decoded = await decodeImage(bytes, LIMITS, { shrinkFor: SIZE, decoder });
        if (decoder === "sharp") assert.equal(decoded.decoder, "sharp", file);
        else if (nativeJpegLoaded && decoded.path === "jpeg-shrink") assert.equal(decoded.decoder, "libjpeg", file);
        const ours = toModelInput(decoded.image, SIZE);
        const pillow = readF32(path.join(dir, `${file}.f32`));
        const { width, height } = await sharp(bytes).metadata();
        // The decoder shrinks by 4 or 8 only (decode.ts): the short side must leave the margin at a quarter.
        const big = Math.min(width!, height!) >= 4 * SIZE * SHRINK_MARGIN;
        const isCmyk = kind === "jpeg-CMYK";
        assert.equal(decoded.path, big && !isCmyk ? "jpeg-shrink" : "exact", `${file} (${width}x${height}) took the ${decoded.path} path`);
        if (decoded.path === "exact") {
          exact++;
          let diff = 0;
          for (let i = 0; i < ours.length; i++) diff = Math.max(diff, Math.abs(ours[i] - pillow[i]));
          if (diff > ONE_STEP) failures.push(`${file}: exact path differs from Pillow by ${(diff * 255).toFixed(2)}/255`);
          continue;
        }
        shrunk++;
        const cos = cosine(await embedder.embed(ours), await embedder.embed(pillow));
        if (cos < worst.cos) worst = { cos, file };
        if (!(cos >= MIN_COSINE)) failures.push(`${file} (${kind}): cosine ${cos.toFixed(7)} < ${MIN_COSINE}`);
      }
      t.diagnostic(`${shrunk} photos shrunk on load, worst cosine ${worst.cos.toFixed(7)} (${worst.file}); ${exact} on the exact path`);
      assert.ok(shrunk >= 14, `only ${shrunk} photos took the shrink path`);
      assert.deepEqual(failures, []);
    });
  }

  test("without shrinkFor a large JPEG is decoded at full size, Pillow-exact", async () => {
    const bytes = readFileSync(path.join(dir, "nose0-1600x1200.jpg"));
    const decoded = await decodeImage(bytes, LIMITS);
    assert.equal(decoded.path, "exact");
    assert.deepEqual([decoded.image.width, decoded.image.height], [1600, 1200]);
    const ours = toModelInput(decoded.image, SIZE);
    const pillow = readF32(path.join(dir, "nose0-1600x1200.jpg.f32"));
    let diff = 0;
    for (let i = 0; i < ours.length; i++) diff = Math.max(diff, Math.abs(ours[i] - pillow[i]));
    assert.ok(diff <= ONE_STEP, `exact path differs from Pillow by ${(diff * 255).toFixed(2)}/255`);
  });
});
