/**
 * What decodeImage refuses, and with which code. Hostile input must be
 * refused from its header, before any pixel is decoded; broken input must
 * come back as INVALID_IMAGE, never as a crash or a hang. Where Pillow is
 * installed, the files refused as broken are checked to be refused by the
 * old server's Pillow too.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { before, describe, test } from "node:test";
import sharp from "sharp";
import { MLErrorCode } from "../gen/nose_embedder_pb.js";
import { MLError } from "../server/errors.js";
import { decodeImage, readHeader, sniffFormat, type DecodeLimits } from "../server/image/decode.js";
import { randomBytes } from "./support/images.js";
import { INSTALL, requireSystem } from "./support/require-system.js";

const W = 200;
const H = 150;
const LIMITS: DecodeLimits = { maxBytes: 1 << 20, maxPixels: 1_000_000 };

const crcTable = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(b: Buffer): number {
  let c = 0xffffffff;
  for (const x of b) c = crcTable[(c ^ x) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function pngChunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, "latin1");
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])));
  return Buffer.concat([head, data, crc]);
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** A PNG that is only a signature and an IHDR declaring `w` x `h`. */
function pngHeaderOnly(w: number, h: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  return Buffer.concat([PNG_SIGNATURE, pngChunk("IHDR", ihdr), pngChunk("IEND", Buffer.alloc(0))]);
}

/** A minimal 1x1 24-bit BMP. */
function bmp(): Buffer {
  const b = Buffer.alloc(58);
  b.write("BM", 0, "latin1");
  b.writeUInt32LE(58, 2);
  b.writeUInt32LE(54, 10);
  b.writeUInt32LE(40, 14);
  b.writeInt32LE(1, 18);
  b.writeInt32LE(1, 22);
  b.writeUInt16LE(1, 26);
  b.writeUInt16LE(24, 28);
  return b;
}

function sofOffset(jpeg: Buffer): number {
  for (let i = 2; i < jpeg.length - 1; i++) if (jpeg[i] === 0xff && jpeg[i + 1] === 0xc0) return i;
  throw new Error("no SOF0");
}

/** A copy of `jpeg` whose frame header declares `w` x `h`. */
function withDeclaredSize(jpeg: Buffer, w: number, h: number): Buffer {
  const out = Buffer.from(jpeg);
  const sof = sofOffset(out);
  out.writeUInt16BE(h, sof + 5);
  out.writeUInt16BE(w, sof + 7);
  return out;
}

async function rejectsWith(bytes: Uint8Array, code: MLErrorCode, limits = LIMITS, message?: RegExp): Promise<void> {
  await assert.rejects(decodeImage(bytes, limits), (err: unknown) => {
    assert.ok(err instanceof MLError, `expected an MLError, got ${String(err)}`);
    assert.equal(err.code, code, `expected ${MLErrorCode[code]}, got ${MLErrorCode[err.code]}: ${err.message}`);
    if (message) assert.match(err.message, message);
    return true;
  });
}

const pixels = randomBytes(W * H * 3, 7);
const raw = () => sharp(pixels, { raw: { width: W, height: H, channels: 3 } });
const fx = {} as Record<"jpeg" | "progressive" | "png" | "gif" | "webp" | "tiff", Buffer>;

before(async () => {
  fx.jpeg = await raw().jpeg({ quality: 90 }).toBuffer();
  fx.progressive = await raw().jpeg({ quality: 90, progressive: true }).toBuffer();
  fx.png = await raw().png().toBuffer();
  fx.gif = await raw().gif().toBuffer();
  fx.webp = await raw().webp().toBuffer();
  fx.tiff = await raw().tiff().toBuffer();
});

describe("sniffFormat", () => {
  test("knows JPEG and PNG by their magic bytes and nothing else", () => {
    assert.equal(sniffFormat(fx.jpeg), "jpeg");
    assert.equal(sniffFormat(fx.png), "png");
    for (const other of [fx.gif, fx.webp, fx.tiff, bmp(), randomBytes(64, 1), Buffer.from([0xff, 0xd8]), Buffer.alloc(0)]) {
      assert.equal(sniffFormat(other), undefined);
    }
  });
});

describe("readHeader", () => {
  test("reads the declared size from PNG IHDR and JPEG SOF without decoding", () => {
    assert.deepEqual(readHeader(fx.png, "png"), { width: W, height: H, bitDepth: 8, colorType: 2 });
    assert.deepEqual(readHeader(fx.jpeg, "jpeg"), { width: W, height: H, components: 3 });
    assert.deepEqual(readHeader(fx.progressive, "jpeg"), { width: W, height: H, components: 3 });
  });
});

describe("decodeImage limits", () => {
  test("rejects an empty image as INVALID_REQUEST", async () => {
    await rejectsWith(new Uint8Array(0), MLErrorCode.INVALID_REQUEST);
  });

  test("rejects more than maxBytes as IMAGE_TOO_LARGE whatever the bytes are", async () => {
    await rejectsWith(randomBytes(LIMITS.maxBytes + 1, 2), MLErrorCode.IMAGE_TOO_LARGE, LIMITS, /bytes/);
    await rejectsWith(fx.jpeg, MLErrorCode.IMAGE_TOO_LARGE, { ...LIMITS, maxBytes: fx.jpeg.length - 1 });
  });

  test("accepts an image of exactly maxBytes and exactly maxPixels", async () => {
    const d = await decodeImage(fx.jpeg, { maxBytes: fx.jpeg.length, maxPixels: W * H });
    assert.equal(d.width, W);
  });

  test("rejects GIF, WebP, BMP, TIFF and unknown bytes as INVALID_IMAGE_FORMAT", async () => {
    await rejectsWith(fx.gif, MLErrorCode.INVALID_IMAGE_FORMAT, LIMITS, /GIF/);
    await rejectsWith(fx.webp, MLErrorCode.INVALID_IMAGE_FORMAT, LIMITS, /WebP/);
    await rejectsWith(bmp(), MLErrorCode.INVALID_IMAGE_FORMAT, LIMITS, /BMP/);
    await rejectsWith(fx.tiff, MLErrorCode.INVALID_IMAGE_FORMAT, LIMITS, /TIFF/);
    await rejectsWith(randomBytes(4096, 3), MLErrorCode.INVALID_IMAGE_FORMAT);
    await rejectsWith(Buffer.from("not an image"), MLErrorCode.INVALID_IMAGE_FORMAT);
  });

  test("rejects a tiny PNG whose IHDR declares 50000x50000 as IMAGE_TOO_LARGE before decoding", async () => {
    const bomb = pngHeaderOnly(50_000, 50_000);
    assert.ok(bomb.length < 100);
    // The file has no image data at all: only the header can have said no.
    await rejectsWith(bomb, MLErrorCode.IMAGE_TOO_LARGE, { maxBytes: 1 << 20, maxPixels: 50_000_000 }, /50000x50000/);
  });

  test("rejects a JPEG whose SOF declares 65000x65000 as IMAGE_TOO_LARGE before decoding", async () => {
    const bomb = withDeclaredSize(fx.jpeg, 65_000, 65_000);
    await rejectsWith(bomb, MLErrorCode.IMAGE_TOO_LARGE, { maxBytes: 1 << 20, maxPixels: 50_000_000 }, /65000x65000/);
  });

  test("rejects one pixel over maxPixels", async () => {
    await rejectsWith(fx.png, MLErrorCode.IMAGE_TOO_LARGE, { ...LIMITS, maxPixels: W * H - 1 });
    await rejectsWith(fx.progressive, MLErrorCode.IMAGE_TOO_LARGE, { ...LIMITS, maxPixels: W * H - 1 });
  });
});

/** Broken files, each refused as INVALID_IMAGE (and by Pillow too). */
function brokenFiles(): Record<string, Buffer> {
  const cut = (b: Buffer, f: number) => b.subarray(0, Math.floor(b.length * f));
  const files: Record<string, Buffer> = {};
  for (const f of [0.05, 0.3, 0.6, 0.95]) {
    files[`jpeg cut at ${f * 100}%`] = cut(fx.jpeg, f);
    files[`progressive JPEG cut at ${f * 100}%`] = cut(fx.progressive, f);
    files[`PNG cut at ${f * 100}%`] = cut(fx.png, f);
  }
  files["JPEG missing only its EOI marker"] = fx.jpeg.subarray(0, fx.jpeg.length - 2);
  files["JPEG of only SOI"] = fx.jpeg.subarray(0, 3);
  files["PNG of only its signature"] = PNG_SIGNATURE;
  // Valid frame header, then noise where the tables and scan should be.
  const sof = sofOffset(fx.jpeg);
  const sofEnd = sof + 2 + fx.jpeg.readUInt16BE(sof + 2);
  files["JPEG with noise after its frame header"] = Buffer.concat([fx.jpeg.subarray(0, sofEnd), randomBytes(4000, 4)]);
  // A block of noise in the middle of the scan: libjpeg meets a bogus marker.
  const mid = Buffer.from(fx.jpeg);
  mid.set(randomBytes(300, 5), Math.floor(mid.length / 2));
  files["JPEG with noise in its scan"] = mid;
  // Valid IHDR, then noise inside the compressed data (CRC and zlib fail).
  const idat = fx.png.indexOf("IDAT");
  const png = Buffer.from(fx.png);
  png.set(randomBytes(200, 6), idat + 100);
  files["PNG with noise in its IDAT"] = png;
  // An ancillary chunk with a bad CRC: libpng would skip it, Pillow refuses.
  const text = pngChunk("tEXt", Buffer.from("Comment\0nose"));
  text[text.length - 1] ^= 1;
  files["PNG with a corrupt tEXt chunk"] = Buffer.concat([fx.png.subarray(0, 33), text, fx.png.subarray(33)]);
  files["PNG header without image data"] = pngHeaderOnly(W, H);
  return files;
}

/** Damage libjpeg and libpng only warn about: Pillow opens these, so must we. */
function toleratedFiles(): Record<string, Buffer> {
  const dht = fx.jpeg.indexOf(Buffer.from([0xff, 0xc4]));
  return {
    "JPEG with stray bytes before a marker": Buffer.concat([fx.jpeg.subarray(0, dht), Buffer.from([1, 2, 3]), fx.jpeg.subarray(dht)]),
    "JPEG with data after its EOI": Buffer.concat([fx.jpeg, Buffer.from("trailer written by some phone")]),
    "progressive JPEG with data after its EOI": Buffer.concat([fx.progressive, randomBytes(100, 8)]),
    "PNG with data after its IEND": Buffer.concat([fx.png, Buffer.from("trailer")]),
  };
}

/** Pillow's verdict ("accepted" or "refused") on each file, in order. */
function pillowVerdicts(files: Buffer[]): string[] {
  const dir = mkdtempSync(path.join(tmpdir(), "nosepaw-broken-"));
  try {
    files.forEach((bytes, i) => writeFileSync(path.join(dir, String(i)), bytes));
    const script = `
import os, sys
from PIL import Image
for i in range(${files.length}):
    try:
        im = Image.open(os.path.join(sys.argv[1], str(i))); im.load(); print("accepted")
    except Exception:
        print("refused")`;
    const r = spawnSync("/usr/bin/python3", ["-c", script, dir], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    return r.stdout.trim().split("\n");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const noPillow = requireSystem(
  "Pillow under /usr/bin/python3",
  spawnSync("/usr/bin/python3", ["-c", "import PIL"]).status !== 0 && "import PIL failed",
  INSTALL.python,
);

describe("decodeImage on broken files", () => {
  test("rejects truncated and corrupt JPEGs and PNGs as INVALID_IMAGE", async () => {
    for (const [name, bytes] of Object.entries(brokenFiles())) {
      await assert.rejects(
        decodeImage(bytes, LIMITS),
        (err: unknown) => {
          assert.ok(err instanceof MLError, `${name}: ${String(err)}`);
          assert.equal(err.code, MLErrorCode.INVALID_IMAGE, `${name}: ${MLErrorCode[err.code]} ${err.message}`);
          return true;
        },
        name,
      );
    }
  });

  test("accepts files with damage Pillow tolerates", async () => {
    for (const [name, bytes] of Object.entries(toleratedFiles())) {
      const d = await decodeImage(bytes, LIMITS);
      assert.deepEqual([d.width, d.height], [W, H], name);
    }
  });

  test("Pillow refuses the refused files and opens the tolerated ones", { skip: noPillow }, () => {
    const broken = Object.entries(brokenFiles());
    const tolerated = Object.entries(toleratedFiles());
    const verdicts = pillowVerdicts([...broken, ...tolerated].map(([, b]) => b));
    const expected = [...broken.map(() => "refused"), ...tolerated.map(() => "accepted")];
    const names = [...broken, ...tolerated].map(([n]) => n);
    assert.deepEqual(
      names.filter((_, i) => verdicts[i] !== expected[i]),
      [],
      "Pillow disagrees on these files",
    );
  });

  test("never crashes on randomly damaged files: an image or an MLError", async (t) => {
    let decoded = 0;
    for (let seed = 0; seed < 120; seed++) {
      const src = seed % 3 === 0 ? fx.png : seed % 3 === 1 ? fx.jpeg : fx.progressive;
      const bytes = Buffer.from(src);
      const noise = randomBytes(16, 100 + seed);
      for (let k = 0; k < 8; k++) bytes[(noise[2 * k] * 256 + noise[2 * k + 1]) % bytes.length] = noise[k + 8];
      try {
        const d = await decodeImage(bytes, LIMITS);
        assert.equal(d.image.data.length, d.width * d.height * d.image.channels);
        decoded++;
      } catch (err) {
        assert.ok(err instanceof MLError, `seed ${seed}: ${String(err)}`);
      }
    }
    t.diagnostic(`${decoded} of 120 damaged files still decoded, the rest were refused`);
  });
});

describe("decodeImage output", () => {
  test("returns the header's size, RGB for an opaque image", async () => {
    for (const bytes of [fx.jpeg, fx.progressive, fx.png]) {
      const d = await decodeImage(bytes, LIMITS);
      assert.deepEqual([d.width, d.height, d.image.width, d.image.height, d.image.channels], [W, H, W, H, 3]);
    }
    const png = await decodeImage(fx.png, LIMITS);
    assert.deepEqual([...png.image.data.subarray(0, 6)], [...pixels.subarray(0, 6)]);
  });

  test("replicates grey to three channels", async () => {
    const grey = await sharp(Buffer.from([0, 64, 128, 255]), { raw: { width: 2, height: 2, channels: 1 } })
      .png()
      .toBuffer();
    const d = await decodeImage(grey, LIMITS);
    assert.equal(d.image.channels, 3);
    assert.deepEqual([...d.image.data], [0, 0, 0, 64, 64, 64, 128, 128, 128, 255, 255, 255]);
  });

  test("keeps the colour under transparent pixels (alpha is dropped, not composited)", async () => {
    const rgba = await sharp(Buffer.from([10, 20, 30, 0, 200, 100, 50, 128]), { raw: { width: 2, height: 1, channels: 4 } })
      .png()
      .toBuffer();
    const d = await decodeImage(rgba, LIMITS);
    const rgb = d.image.channels === 4 ? [0, 1, 2, 4, 5, 6].map((i) => d.image.data[i]) : [...d.image.data];
    assert.deepEqual(rgb, [10, 20, 30, 200, 100, 50]);
  });

  test("applies EXIF orientation: 6 turns a landscape photo upright", async () => {
    const rotated = await raw().jpeg({ quality: 90 }).withMetadata({ orientation: 6 }).toBuffer();
    const d = await decodeImage(rotated, LIMITS);
    assert.deepEqual([d.width, d.height], [H, W]);
  });

  test("decodes a CMYK JPEG to three channels", async () => {
    const cmyk = await raw().toColourspace("cmyk").jpeg({ quality: 90 }).toBuffer();
    assert.equal(readHeader(cmyk, "jpeg").components, 4);
    const d = await decodeImage(cmyk, LIMITS);
    assert.deepEqual([d.width, d.height, d.image.channels], [W, H, 3]);
  });
});
