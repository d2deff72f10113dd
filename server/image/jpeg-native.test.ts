/**
 * The libjpeg addon against Pillow and against the sharp path it stands in
 * for: Pillow's pixels bit for bit, every EXIF orientation, and on every
 * hostile or unusual file of the corpus the same pixels or the same refusal
 * as sharp's path, since whatever the addon declines goes there.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import sharp from "sharp";
import { benchPhotos } from "../../bench/photos.js";
import { exifApp1, imageCases, layoutSamples, orientation, withSegments } from "../../test/support/hostile-corpus.js";
import { jpeg, rawPicture } from "../../test/support/images.js";
import { INSTALL, requireSystem } from "../../test/support/require-system.js";
import { MLError } from "../errors.js";
import { decodeImage, type DecodedImage } from "./decode.js";
import { jpegExifOrientation } from "./header.js";
import { decodeJpegNative, nativeJpegUnavailable } from "./jpeg-native.js";

const LIMITS = { maxBytes: 64 << 20, maxPixels: 40_000_000 };
const PYTHON = "/usr/bin/python3";

const noAddon = requireSystem("the libjpeg decoder addon", nativeJpegUnavailable, INSTALL.jpegAddon);
const pillowCheck = spawnSync(PYTHON, ["-c", "import PIL"], { encoding: "utf8" });
const noPillow = requireSystem(
  `Pillow under ${PYTHON}`,
  pillowCheck.status !== 0 && (pillowCheck.stderr || "not found").trim(),
  INSTALL.python,
);

/** The decode, or the refusal as "ML code: message". */
async function outcome(bytes: Uint8Array, decoder: "auto" | "sharp"): Promise<DecodedImage | string> {
  try {
    return await decodeImage(bytes, LIMITS, { decoder });
  } catch (err) {
    if (err instanceof MLError) return `${err.code}: ${err.message}`;
    throw err;
  }
}

function assertSamePixels(a: DecodedImage, b: DecodedImage, name: string): void {
  assert.deepEqual([a.image.width, a.image.height, a.image.channels], [b.image.width, b.image.height, b.image.channels], name);
  assert.ok(Buffer.from(a.image.data).equals(Buffer.from(b.image.data)), `${name}: pixels differ`);
}

const scratch = mkdtempSync(path.join(tmpdir(), "nosepaw-jpeg-native-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

/** Pillow 9.4's `Image.open(f).convert("RGB")` bytes of each file (no EXIF transpose). */
function pillowRgb(files: Buffer[]): Buffer[] {
  const names = files.map((bytes, i) => {
    const f = path.join(scratch, `pillow-${i}.jpg`);
    writeFileSync(f, bytes);
    return f;
  });
  const script = `import sys\nfrom PIL import Image\nfor f in sys.argv[1:]:\n    with open(f + ".rgb", "wb") as out:\n        out.write(Image.open(f).convert("RGB").tobytes())\n`;
  const run = spawnSync(PYTHON, ["-c", script, ...names], { encoding: "utf8" });
  assert.equal(run.status, 0, run.stderr);
  return names.map((f) => readFileSync(`${f}.rgb`));
}

describe("libjpeg decoder addon", { skip: noAddon }, () => {
  test("decodes camera-like photos to Pillow's pixels, bit for bit", { skip: noPillow }, async () => {
    const photos = (await benchPhotos(1)).flatMap((s) => s.jpegs);
    const odd = [await jpeg(1, 1, 1), await jpeg(7, 5, 2), await jpeg(513, 301, 3, 75), await jpeg(301, 513, 4, 98)];
    const grey = await sharp(rawPicture(97, 61, 5), { raw: { width: 97, height: 61, channels: 3 } })
      .greyscale()
      .jpeg()
      .toBuffer();
    const full = await sharp(rawPicture(130, 77, 6), { raw: { width: 130, height: 77, channels: 3 } })
      .jpeg({ chromaSubsampling: "4:4:4" })
      .toBuffer();
    const files = [...photos, ...odd, grey, full];
    const pillow = pillowRgb(files);
    for (const [i, bytes] of files.entries()) {
      const ours = await decodeImage(bytes, LIMITS);
      assert.equal(ours.decoder, "libjpeg", `file ${i} went to ${ours.decoder}`);
      assert.equal(ours.image.channels, 3);
      assert.ok(Buffer.from(ours.image.data).equals(pillow[i]), `file ${i} (${ours.image.width}x${ours.image.height}) differs from Pillow`);
    }
  });

  test("applies every EXIF orientation as sharp's path does", async () => {
    const base = await jpeg(37, 23, 7);
    for (let o = 1; o <= 8; o++) {
      const bytes = withSegments(base, exifApp1([orientation(o)]));
      assert.equal(jpegExifOrientation(bytes), o);
      const ours = await decodeImage(bytes, LIMITS);
      assert.equal(ours.decoder, "libjpeg", `orientation ${o}`);
      assertSamePixels(ours, await decodeImage(bytes, LIMITS, { decoder: "sharp" }), `orientation ${o}`);
      assert.deepEqual([ours.width, ours.height], o >= 5 ? [23, 37] : [37, 23]);
    }
  });

  test("gives the sharp path's pixels or refusal on every hostile and unusual file, and leaves it the unclear ones", async () => {
    const cases = [...(await imageCases()).map((c) => [c.name, c.bytes] as const), ...Object.entries(await layoutSamples(45, 29))];
    const base = await jpeg(40, 30, 8);
    cases.push(
      ["two EXIF segments", withSegments(base, exifApp1([orientation(6)]), exifApp1([orientation(3)]))],
      ["stray bytes before a marker", Buffer.concat([base.subarray(0, 2), Buffer.from([1, 2, 3]), base.subarray(2)])],
      ["cut in its scan", base.subarray(0, base.length - 40)],
    );
    let native = 0;
    for (const [name, bytes] of cases) {
      const [ours, theirs] = [await outcome(bytes, "auto"), await outcome(bytes, "sharp")];
      if (typeof theirs === "string" || typeof ours === "string") {
        assert.equal(ours, theirs, name);
        continue;
      }
      assertSamePixels(ours, theirs, name);
      if (ours.decoder === "libjpeg") native++;
      if (/two EXIF|stray bytes|progressive|CMYK|YCCK|arithmetic|orientation (0|9|65535)/.test(name)) {
        assert.equal(ours.decoder, "sharp", `${name} should be left to sharp`);
      }
    }
    // Not vacuous: the clean baseline files went through the addon.
    assert.ok(native >= 3, `only ${native} files went through the addon`);
  });

  test("declines a frame that the output buffer does not fit, and refuses arguments of the wrong type", async () => {
    const bytes = await jpeg(16, 8, 9);
    assert.deepEqual(await decodeJpegNative(bytes, new Uint8Array(16 * 8 * 3), 1, 1), { width: 16, height: 8 });
    const short = await decodeJpegNative(bytes, new Uint8Array(16 * 8 * 3 - 1), 1, 1);
    assert.ok("declined" in short && /does not fit/.test(short.message));
    assert.throws(() => decodeJpegNative("jpeg" as unknown as Uint8Array, new Uint8Array(3), 1, 1), TypeError);
    assert.throws(() => decodeJpegNative(bytes, new Float32Array(3) as unknown as Uint8Array, 1, 1), TypeError);
    assert.throws(() => decodeJpegNative(bytes, new Uint8Array(16 * 8 * 3), 1, 3 as 1), TypeError);
  });

  test("decodes many photos at once, each to its own pixels", async () => {
    const files = await Promise.all(Array.from({ length: 24 }, (_, i) => jpeg(64 + i, 48 + (i % 5), 100 + i)));
    const ours = await Promise.all(files.map((f) => decodeImage(f, LIMITS)));
    for (const [i, f] of files.entries()) {
      assert.equal(ours[i].decoder, "libjpeg");
      assertSamePixels(ours[i], await decodeImage(f, LIMITS, { decoder: "sharp" }), `photo ${i}`);
    }
  });
});
