/**
 * preprocessPhoto's strip path (the libjpeg addon decoding strips straight
 * into the WebAssembly resize's memory while the strips before are
 * resampled) against the plain path it stands in for: sharp's decode, then
 * the exact LANCZOS and the tensor. The same tensor to the bit, the same
 * refusal for every hostile file, and correct results when several photos
 * are preprocessed at once on one thread.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import sharp from "sharp";
import { fitToModel, toChw } from "../../shared/preprocess.js";
import { imageCases } from "../../test/support/hostile-corpus.js";
import { jpeg, rawPicture } from "../../test/support/images.js";
import { INSTALL, requireSystem } from "../../test/support/require-system.js";
import { MLError } from "../errors.js";
import { decodeImage } from "./decode.js";
import { nativeJpegUnavailable } from "./jpeg-native.js";
import { preprocessPhoto } from "./preprocess-photo.js";

const LIMITS = { maxBytes: 64 << 20, maxPixels: 40_000_000 };
const SIZE = 224;

const noAddon = requireSystem("the libjpeg decoder addon", nativeJpegUnavailable, INSTALL.jpegAddon);

/**
 * The tensor by sharp's decode and the JavaScript LANCZOS (shared/lanczos.ts, held against Pillow by its own
 * tests; not the WebAssembly kernel the strips share code with), or the refusal as "code: message".
 */
async function reference(bytes: Uint8Array): Promise<Float32Array | string> {
  try {
    const { image } = await decodeImage(bytes, LIMITS, { decoder: "sharp" });
    return toChw(fitToModel(image, SIZE));
  } catch (err) {
    if (err instanceof MLError) return `${err.code}: ${err.message}`;
    throw err;
  }
}

async function ours(bytes: Uint8Array): Promise<{ tensor: Float32Array; decoder: string } | string> {
  try {
    return await preprocessPhoto(bytes, SIZE, LIMITS, false);
  } catch (err) {
    if (err instanceof MLError) return `${err.code}: ${err.message}`;
    throw err;
  }
}

const same = (a: Float32Array, b: Float32Array) =>
  Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

describe("preprocessPhoto in strips", { skip: noAddon }, () => {
  test("gives the plain path's tensor, bit for bit, over one strip and many", async () => {
    const grey = await sharp(rawPicture(801, 403, 3), { raw: { width: 801, height: 403, channels: 3 } })
      .greyscale()
      .jpeg()
      .toBuffer();
    const photos = [
      await jpeg(1080, 1080, 1),
      await jpeg(1457, 333, 2, 75), // 239 rows a strip: two strips, the last short
      await jpeg(250, 3001, 4), // 1398 rows a strip: three strips
      await jpeg(225, 226, 5), // just over the model's size
      grey,
      await sharp(rawPicture(613, 611, 6), { raw: { width: 613, height: 611, channels: 3 } })
        .jpeg({ chromaSubsampling: "4:4:4" })
        .toBuffer(),
    ];
    for (const [i, bytes] of photos.entries()) {
      const got = await ours(bytes);
      const want = await reference(bytes);
      assert.ok(typeof got !== "string" && typeof want !== "string", `photo ${i}: ${String(got)} / ${String(want)}`);
      assert.equal(got.decoder, "libjpeg-strips", `photo ${i}`);
      assert.ok(same(got.tensor, want), `photo ${i}: tensors differ`);
    }
  });

  test("shrinks a large photo in strips to the tensor of the addon's whole-image shrink", async () => {
    const bytes = await jpeg(2700, 2750, 8); // a quarter is 675 x 688: at least 3 x 224
    const got = await preprocessPhoto(bytes, SIZE, LIMITS, true);
    assert.equal(got.path, "jpeg-shrink");
    assert.equal(got.decoder, "libjpeg-strips");
    const whole = await decodeImage(bytes, LIMITS, { shrinkFor: SIZE });
    assert.deepEqual([whole.decoder, whole.path, whole.image.width, whole.image.height], ["libjpeg", "jpeg-shrink", 675, 688]);
    assert.ok(same(got.tensor, toChw(fitToModel(whole.image, SIZE))), "tensors differ");
  });

  test("refuses what the plain path refuses and accepts the rest, with the same tensor", async () => {
    let strips = 0;
    for (const c of await imageCases()) {
      const [got, want] = [await ours(c.bytes), await reference(c.bytes)];
      if (typeof got === "string" || typeof want === "string") {
        assert.equal(got, want, c.name);
        continue;
      }
      assert.ok(same(got.tensor, want), `${c.name}: tensors differ`);
      if (got.decoder === "libjpeg-strips") strips++;
    }
    assert.ok(strips >= 3, `only ${strips} corpus files went through the strips`);
  });

  test("falls back to sharp's verdict when libjpeg warns partway through the strips", async () => {
    const photo = await jpeg(900, 700, 7);
    // Cut inside the scan, far enough in that the first strips decode cleanly.
    const cut = photo.subarray(0, Math.floor(photo.length * 0.8));
    const [got, want] = [await ours(cut), await reference(cut)];
    assert.equal(typeof want, "string", "sharp's path refuses a truncated JPEG");
    assert.equal(got, want);
  });

  test("preprocesses several photos at once on one thread, each to its own tensor", async () => {
    const photos = await Promise.all(Array.from({ length: 8 }, (_, i) => jpeg(500 + 37 * i, 400 + 11 * i, 20 + i)));
    const got = await Promise.all(photos.map((p) => ours(p)));
    const decoders = new Set<string>();
    for (const [i, p] of photos.entries()) {
      const g = got[i];
      const want = await reference(p);
      assert.ok(typeof g !== "string" && typeof want !== "string", `photo ${i}`);
      decoders.add(g.decoder);
      assert.ok(same(g.tensor, want), `photo ${i}: tensors differ`);
    }
    // One streams while the others take the whole-image path: both ran.
    assert.deepEqual([...decoders].sort(), ["libjpeg", "libjpeg-strips"]);
  });
});
