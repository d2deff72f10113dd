/**
 * Hostile and unusual input for the service, generated (deterministic, no
 * files on disk): broken and exotic images for ExtractNoseVector, and object
 * keys and pet DIDs for the calls that take them. Every case states the
 * outcome the README's error table documents for it, so one list serves the
 * wire test (test/hostile-input.test.ts) and seeds the decoder fuzzer
 * (scripts/fuzz.ts).
 */
import { deflateSync } from "node:zlib";
import sharp from "sharp";
import { randomBytes, rawPicture } from "./images.js";

/** The in-band codes as the gateway reads them, with their documented ML_ names. */
export const ML_CODES = {
  ML_4001: "INVALID_IMAGE",
  ML_4002: "IMAGE_TOO_LARGE",
  ML_4003: "INVALID_IMAGE_FORMAT",
  ML_4004: "VECTOR_NOT_FOUND",
  ML_4005: "VECTOR_DIMENSION_MISMATCH",
  ML_4006: "INVALID_REQUEST",
  ML_5001: "MODEL_NOT_LOADED",
  ML_5002: "INFERENCE_ERROR",
  ML_5003: "STORAGE_CONNECTION_ERROR",
  ML_5004: "INTERNAL_SERVER_ERROR",
  ML_5005: "SERVICE_UNAVAILABLE",
} as const;
export type MlCode = keyof typeof ML_CODES;

export type Expected =
  | { ok: true }
  /** Refused in-band with this code; the message (after "ML_xxxx: ") must match. */
  | { ok: false; ml: MlCode; message: RegExp }
  /**
   * The RPC itself fails with this gRPC status: only for bytes that are not
   * a valid protobuf message, which the RPC framework refuses before any
   * handler runs (as the old grpcio server did).
   */
  | { ok: false; transport: "INTERNAL"; message: RegExp };

export const accepted: Expected = { ok: true };
export const refused = (ml: MlCode, message: RegExp): Expected => ({ ok: false, ml, message });
export const unparsable = (message: RegExp): Expected => ({ ok: false, transport: "INTERNAL", message });

export interface ImageCase {
  name: string;
  bytes: Buffer;
  /** The request's image_format hint; the server sniffs the bytes whatever it says. */
  label: string;
  expected: Expected;
  /** JPEG or PNG bytes whose verdict (decoded or refused) must be Pillow 9.4's. */
  pillow?: boolean;
}

// --- PNG writing by hand, so depth, colour type and chunks are exact ---------------

const crcTable = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

export function crc32(b: Uint8Array, start = 0, end = b.length): number {
  let c = 0xffffffff;
  for (let i = start; i < end; i++) c = crcTable[(c ^ b[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

export const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

export function pngChunk(type: string, data: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, "latin1");
  out.set(data, 8);
  out.writeUInt32BE(crc32(out, 4, 8 + data.length), 8 + data.length);
  return out;
}

function ihdr(width: number, height: number, bitDepth: number, colorType: number, interlace = 0): Buffer {
  const d = Buffer.alloc(13);
  d.writeUInt32BE(width, 0);
  d.writeUInt32BE(height, 4);
  d.set([bitDepth, colorType, 0, 0, interlace], 8);
  return pngChunk("IHDR", d);
}

const SAMPLES: Record<number, number> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };

/** A non-interlaced PNG of seeded noise with the given layout; `extra` chunks go before IDAT. */
function pngOf(o: { width: number; height: number; bitDepth: number; colorType: number; seed: number; extra?: Buffer[] }): Buffer {
  const rowBytes = Math.ceil((o.width * SAMPLES[o.colorType] * o.bitDepth) / 8);
  const noise = randomBytes(rowBytes * o.height, o.seed);
  const raw = Buffer.alloc((rowBytes + 1) * o.height);
  for (let y = 0; y < o.height; y++) noise.copy(raw, y * (rowBytes + 1) + 1, y * rowBytes, (y + 1) * rowBytes);
  const chunks = [ihdr(o.width, o.height, o.bitDepth, o.colorType)];
  if (o.colorType === 3) chunks.push(pngChunk("PLTE", randomBytes(3 * 256, o.seed + 1)));
  chunks.push(...(o.extra ?? []), pngChunk("IDAT", deflateSync(raw)), pngChunk("IEND", Buffer.alloc(0)));
  return Buffer.concat([PNG_SIGNATURE, ...chunks]);
}

/** A PNG whose IDAT inflates to `rawBytes` zero bytes, whatever size the header declares. */
function zeroPng(width: number, height: number, rawBytes: number): Buffer {
  const idat = deflateSync(Buffer.alloc(rawBytes), { level: 9 });
  return Buffer.concat([PNG_SIGNATURE, ihdr(width, height, 8, 2), pngChunk("IDAT", idat), pngChunk("IEND", Buffer.alloc(0))]);
}

/** Offset just past the first chunk of `type`, or -1. */
function afterChunk(png: Buffer, type: string): number {
  const at = png.indexOf(type, 8, "latin1");
  return at < 0 ? -1 : at + 4 + png.readUInt32BE(at - 4) + 4;
}

// --- JPEG surgery -----------------------------------------------------------------

/** Offset of the first marker `code` (the 0xFF byte), or -1. */
export function markerAt(jpeg: Buffer, code: number): number {
  for (let i = 2; i < jpeg.length - 1; i++) if (jpeg[i] === 0xff && jpeg[i + 1] === code) return i;
  return -1;
}

/** Offset just past the marker segment that starts at `at`. */
const segmentEnd = (jpeg: Buffer, at: number) => at + 2 + jpeg.readUInt16BE(at + 2);

const segment = (code: number, payload: Buffer) => {
  const head = Buffer.from([0xff, code, 0, 0]);
  head.writeUInt16BE(payload.length + 2, 2);
  return Buffer.concat([head, payload]);
};

/** `jpeg` with `segments` inserted right after SOI. */
export const withSegments = (jpeg: Buffer, ...segments: Buffer[]) => Buffer.concat([jpeg.subarray(0, 2), ...segments, jpeg.subarray(2)]);

/** An APP1 Exif segment: big-endian TIFF header and one IFD of (tag, type, count, 4-byte value) entries. */
export function exifApp1(entries: Array<[number, number, number, number]>, declaredCount = entries.length, padTo = 0): Buffer {
  const ifd = Buffer.alloc(2 + 12 * entries.length + 4);
  ifd.writeUInt16BE(declaredCount, 0);
  entries.forEach(([tag, type, count, value], i) => {
    const o = 2 + 12 * i;
    ifd.writeUInt16BE(tag, o);
    ifd.writeUInt16BE(type, o + 2);
    ifd.writeUInt32BE(count, o + 4);
    // A SHORT value sits left-justified in the 4-byte field.
    if (type === 3 && count === 1) ifd.writeUInt16BE(value, o + 8);
    else ifd.writeUInt32BE(value >>> 0, o + 8);
  });
  const tiff = Buffer.concat([Buffer.from("MM\0*\0\0\0\x08", "latin1"), ifd]);
  const body = Buffer.concat([Buffer.from("Exif\0\0", "latin1"), tiff]);
  return segment(0xe1, padTo > body.length ? Buffer.concat([body, Buffer.alloc(padTo - body.length)]) : body);
}

const ORIENTATION = 0x0112;
export const orientation = (value: number): [number, number, number, number] => [ORIENTATION, 3, 1, value];

/** A copy of a baseline JPEG whose frame header declares `w` x `h`. */
function withDeclaredSize(jpeg: Buffer, w: number, h: number): Buffer {
  const out = Buffer.from(jpeg);
  const sof = markerAt(out, 0xc0);
  out.writeUInt16BE(h, sof + 5);
  out.writeUInt16BE(w, sof + 7);
  return out;
}

/** 24x16 pictures written once with libjpeg-turbo's `cjpeg -arithmetic [-progressive]` (sharp cannot write them). */
const ARITHMETIC_JPEG =
  "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAUDBAQEAwUEBAQFBQUGBwwIBwcHBw8LCwkMEQ8SEhEPERETFhwXExQaFRERGCEYGh0dHx8fExciJCIeJBweHx7/2wBDAQUFBQcGBw4ICA4eFBEUHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh7/yQARCAAQABgDASIAAhEBAxEB/8wACgAQEAUBEBEF/9oADAMBAAIRAxEAPwD/ANhw/wA0yMi+ZATs2w1QFml8mEA7gbxbuH0CifTSvXvPpNkB0RgtbRises+wEN7Gt4F2z6ck1lRFeJT/2Q==";
const ARITHMETIC_PROGRESSIVE_JPEG =
  "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAUDBAQEAwUEBAQFBQUGBwwIBwcHBw8LCwkMEQ8SEhEPERETFhwXExQaFRERGCEYGh0dHx8fExciJCIeJBweHx7/2wBDAQUFBQcGBw4ICA4eFBEUHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh7/ygARCAAQABgDASIAAhEBAxEB/8wABgAQARD/2gAMAwEAAhADEAAAAf8Ar/bhtBj8ny4/L0J1aCD/zAAEEAX/2gAIAQEAAQUCFEFWvNXcXxpy/8wABBEF/9oACAEDAQE/ARXF1Sfc0SC+IP/MAAQRBf/aAAgBAgEBPwEXulYw/8wABBAF/9oACAEBAAY/Al4T8v/MAAQQBf/aAAgBAQABPyHTHpD/2gAMAwEAAgADAAAAEEAw/8wABBEF/9oACAEDAQE/ENdEgP/MAAQRBf/aAAgBAgEBPxBMRf/MAAQQBf/aAAgBAQABPxAnKkH1kPRMYv/Z";

/** A minimal 2x2 24-bit BMP. */
function bmp(): Buffer {
  const b = Buffer.alloc(54 + 16);
  b.write("BM", 0, "latin1");
  b.writeUInt32LE(b.length, 2);
  b.writeUInt32LE(54, 10);
  b.writeUInt32LE(40, 14);
  b.writeInt32LE(2, 18);
  b.writeInt32LE(2, 22);
  b.writeUInt16LE(1, 26);
  b.writeUInt16LE(24, 28);
  return b;
}

/** The start of an ISO-BMFF (HEIF family) file: an ftyp box with `brand`. */
const ftyp = (brand: string) =>
  Buffer.concat([Buffer.from([0, 0, 0, 0x18]), Buffer.from(`ftyp${brand}\0\0\0\0mif1${brand}`, "latin1"), randomBytes(200, 9)]);

/** The well-formed pictures of every layout the decoder takes, `w` x `h`: the fuzzer's seeds too. */
export async function layoutSamples(w: number, h: number, seed = 1): Promise<Record<string, Buffer>> {
  const pic = rawPicture(w, h, seed);
  const rgb = () => sharp(pic, { raw: { width: w, height: h, channels: 3 } });
  const jpeg = await rgb().jpeg({ quality: 90 }).toBuffer();
  const cmyk = await rgb().toColourspace("cmyk").jpeg({ quality: 90 }).toBuffer();
  // Adobe APP14 transform 2 declares YCCK; the same scan then decodes as YCCK.
  const ycck = Buffer.from(cmyk);
  const adobe = markerAt(ycck, 0xee);
  ycck[adobe + 15] = 2;
  const png8 = await rgb().png().toBuffer();
  return {
    "baseline JPEG": jpeg,
    "progressive JPEG": await rgb().jpeg({ quality: 90, progressive: true }).toBuffer(),
    "grey JPEG": await rgb().greyscale().jpeg({ quality: 90 }).toBuffer(),
    "4:4:4 JPEG": await rgb().jpeg({ quality: 90, chromaSubsampling: "4:4:4" }).toBuffer(),
    "arithmetic-coded JPEG": Buffer.from(ARITHMETIC_JPEG, "base64"),
    "arithmetic-coded progressive JPEG": Buffer.from(ARITHMETIC_PROGRESSIVE_JPEG, "base64"),
    "CMYK JPEG (Adobe)": cmyk,
    "YCCK JPEG (Adobe transform 2)": ycck,
    "8-bit RGB PNG": png8,
    "interlaced (Adam7) PNG": await rgb().png({ progressive: true }).toBuffer(),
    "16-bit RGB PNG": pngOf({ width: w, height: h, bitDepth: 16, colorType: 2, seed }),
    "16-bit RGBA PNG": pngOf({ width: w, height: h, bitDepth: 16, colorType: 6, seed }),
    "16-bit grey PNG": pngOf({ width: w, height: h, bitDepth: 16, colorType: 0, seed }),
    "16-bit grey+alpha PNG": pngOf({ width: w, height: h, bitDepth: 16, colorType: 4, seed }),
    "8-bit grey+alpha PNG": pngOf({ width: w, height: h, bitDepth: 8, colorType: 4, seed }),
    "1-bit grey PNG": pngOf({ width: w, height: h, bitDepth: 1, colorType: 0, seed }),
    "palette PNG": pngOf({ width: w, height: h, bitDepth: 8, colorType: 3, seed }),
    "4-bit palette PNG with tRNS": pngOf({
      width: w,
      height: h,
      bitDepth: 4,
      colorType: 3,
      seed,
      extra: [pngChunk("tRNS", Buffer.from([0, 128, 255]))],
    }),
    // acTL + fcTL before IDAT: a one-frame animation whose default image is the first frame.
    APNG: Buffer.concat([
      png8.subarray(0, 33),
      pngChunk("acTL", Buffer.from([0, 0, 0, 1, 0, 0, 0, 0])),
      pngChunk("fcTL", Buffer.concat([Buffer.alloc(4), u32be(w), u32be(h), Buffer.alloc(8), Buffer.from([0, 0, 0, 1, 0, 0])])),
      png8.subarray(33),
    ]),
    "JPEG with EXIF orientation 0": withSegments(jpeg, exifApp1([orientation(0)])),
    "JPEG with EXIF orientation 9": withSegments(jpeg, exifApp1([orientation(9)])),
    "JPEG with EXIF orientation 65535": withSegments(jpeg, exifApp1([orientation(65535)])),
  };
}

const u32be = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};

/** Every image case, each with the outcome the README documents for it. */
export async function imageCases(): Promise<ImageCase[]> {
  const W = 160;
  const H = 120;
  const samples = await layoutSamples(W, H);
  const jpeg = samples["baseline JPEG"];
  const progressive = samples["progressive JPEG"];
  const png = samples["8-bit RGB PNG"];
  const cases: ImageCase[] = [];
  const add = (name: string, bytes: Buffer, expected: Expected, label = "jpeg", pillow = true) =>
    cases.push({ name, bytes, label, expected, pillow });

  for (const [name, bytes] of Object.entries(samples)) add(name, bytes, accepted, name.includes("PNG") ? "png" : "jpeg");

  // Truncation at the interesting places: inside the signature, inside each
  // header structure, in the scan, and just before the end marker.
  const sof = markerAt(jpeg, 0xc0);
  const sos = markerAt(jpeg, 0xda);
  const TRUNCATED = /truncated|premature|cannot decode|corrupt/i;
  add(
    "JPEG cut after 2 bytes (SOI only)",
    jpeg.subarray(0, 2),
    refused("ML_4003", /got the first 2 bytes of a JPEG \(cut short\)/),
    "jpeg",
    false,
  );
  add("JPEG cut after 3 bytes", jpeg.subarray(0, 3), refused("ML_4001", /JPEG is truncated before its frame header/));
  add("JPEG cut inside APP0", jpeg.subarray(0, 11), refused("ML_4001", /JPEG is truncated before its frame header/));
  add("JPEG cut inside the quantisation tables", jpeg.subarray(0, 60), refused("ML_4001", /JPEG is truncated before its frame header/));
  add("JPEG cut inside the frame header", jpeg.subarray(0, sof + 6), refused("ML_4001", /JPEG frame header is truncated/));
  add("JPEG cut right after the frame header", jpeg.subarray(0, segmentEnd(jpeg, sof)), refused("ML_4001", TRUNCATED));
  add("JPEG cut right after the scan header", jpeg.subarray(0, segmentEnd(jpeg, sos)), refused("ML_4001", TRUNCATED));
  add("JPEG cut in the middle of the scan", jpeg.subarray(0, Math.floor(jpeg.length / 2)), refused("ML_4001", TRUNCATED));
  add("JPEG cut 1 byte before the end", jpeg.subarray(0, jpeg.length - 1), refused("ML_4001", TRUNCATED));
  add(
    "progressive JPEG cut after its first scan",
    progressive.subarray(0, markerAt(progressive.subarray(markerAt(progressive, 0xda) + 2), 0xda) + markerAt(progressive, 0xda) + 2),
    refused("ML_4001", TRUNCATED),
  );
  add("progressive JPEG cut at 75%", progressive.subarray(0, Math.floor(progressive.length * 0.75)), refused("ML_4001", TRUNCATED));
  add("PNG cut after 4 bytes", png.subarray(0, 4), refused("ML_4003", /got the first 4 bytes of a PNG \(cut short\)/), "png", false);
  add("PNG cut after its signature", png.subarray(0, 8), refused("ML_4001", /PNG is truncated before its IHDR header/), "png");
  add("PNG cut inside IHDR", png.subarray(0, 20), refused("ML_4001", /PNG is truncated before its IHDR header/), "png");
  add("PNG cut right after IHDR", png.subarray(0, 33), refused("ML_4001", /PNG is truncated before its image data/), "png");
  add("PNG cut in the middle of IDAT", png.subarray(0, Math.floor(png.length / 2)), refused("ML_4001", TRUNCATED), "png");
  add("PNG without IEND", png.subarray(0, png.length - 12), accepted, "png");

  // Not an image at all.
  add("empty image", Buffer.alloc(0), refused("ML_4006", /image is empty/), "jpeg", false);
  add("one 0xFF byte", Buffer.from([0xff]), refused("ML_4003", /only JPEG and PNG/), "jpeg", false);
  add(
    "4 kB of zero bytes",
    Buffer.alloc(4096),
    refused("ML_4003", /only JPEG and PNG images are accepted, got unrecognised data/),
    "jpeg",
    false,
  );
  add(
    "4 kB of random bytes",
    randomBytes(4096, 11),
    refused("ML_4003", /only JPEG and PNG images are accepted, got unrecognised data/),
    "png",
    false,
  );
  add("text that says it is a JPEG", Buffer.from("JFIF image/jpeg"), refused("ML_4003", /unrecognised data/), "jpeg", false);

  // Valid header, garbage after it.
  add(
    "JPEG frame header followed by noise",
    Buffer.concat([jpeg.subarray(0, segmentEnd(jpeg, sof)), randomBytes(8000, 12)]),
    refused("ML_4001", /JPEG/),
  );
  add(
    "JPEG scan replaced by noise",
    Buffer.concat([jpeg.subarray(0, segmentEnd(jpeg, sos)), randomBytes(8000, 13), Buffer.from([0xff, 0xd9])]),
    refused("ML_4001", /JPEG/),
  );
  add(
    "PNG IHDR followed by noise",
    Buffer.concat([png.subarray(0, 33), randomBytes(8000, 14)]),
    refused("ML_4001", /PNG is corrupt \(no valid chunk type at byte 37\)/),
    "png",
  );
  add(
    "PNG IDAT of noise with a valid CRC",
    Buffer.concat([png.subarray(0, 33), pngChunk("IDAT", randomBytes(8000, 15)), pngChunk("IEND", Buffer.alloc(0))]),
    refused("ML_4001", /PNG/),
    "png",
  );
  const badCrc = Buffer.from(png);
  badCrc[29] ^= 0xff;
  add("PNG IHDR with a bad CRC", badCrc, refused("ML_4001", /IHDR chunk is corrupt \(CRC mismatch\)/), "png");

  // Sizes the header declares.
  add("JPEG declaring 65535x65535", withDeclaredSize(jpeg, 65535, 65535), refused("ML_4002", /65535x65535/));
  add("JPEG declaring 0x120", withDeclaredSize(jpeg, 0, H), refused("ML_4001", /unsupported size 0x120/));
  add(
    "PNG declaring 65535x65535",
    Buffer.concat([PNG_SIGNATURE, ihdr(65535, 65535, 8, 2), png.subarray(33)]),
    refused("ML_4002", /65535x65535/),
    "png",
  );
  add(
    "PNG declaring 0x0",
    Buffer.concat([PNG_SIGNATURE, ihdr(0, 0, 8, 2), png.subarray(33)]),
    refused("ML_4001", /impossible size 0x0/),
    "png",
  );
  add(
    "PNG declaring 2^31x1",
    Buffer.concat([PNG_SIGNATURE, ihdr(0x80000000, 1, 8, 2), png.subarray(33)]),
    refused("ML_4001", /impossible size/),
    "png",
  );
  // Decompression bombs: a few kB of zlib that inflate to hundreds of MB.
  add(
    "PNG bomb: 20000x20000 declared, 12 MB of zeros in 12 kB",
    zeroPng(20000, 20000, 12_000_000),
    refused("ML_4002", /20000x20000/),
    "png",
  );
  add("PNG bomb within the pixel limit: 1200x1200 of zeros", zeroPng(1200, 1200, 1200 * 3601), accepted, "png");
  add("PNG bomb: 64x64 declared, IDAT inflating to 40 MB", zeroPng(64, 64, 40_000_000), accepted, "png");

  // Coding processes libjpeg does not decode.
  const lossless = Buffer.from(jpeg);
  lossless[sof + 1] = 0xc3;
  add("lossless JPEG (SOF3)", lossless, refused("ML_4001", /cannot decode JPEG/));
  const twelveBit = Buffer.from(jpeg);
  twelveBit[sof + 1] = 0xc1;
  twelveBit[sof + 4] = 12;
  add("12-bit JPEG (SOF1, precision 12)", twelveBit, refused("ML_4001", /cannot decode JPEG/));

  // Metadata.
  add("JPEG with an EXIF IFD declaring 65535 entries", withSegments(jpeg, exifApp1([orientation(6)], 65535)), accepted);
  add(
    "JPEG with a 64 kB EXIF block of 5000 entries",
    withSegments(
      jpeg,
      exifApp1([orientation(3), ...Array.from({ length: 5000 }, (_, i): [number, number, number, number] => [0xc800 + i, 3, 1, i])]),
    ),
    accepted,
  );
  add(
    "JPEG with 512 kB of EXIF in 8 APP1 segments",
    withSegments(jpeg, ...Array.from({ length: 8 }, () => exifApp1([orientation(1)], 1, 65000))),
    accepted,
  );

  // Labels and extreme shapes.
  add("PNG labelled jpeg", png, accepted, "jpeg");
  add("JPEG labelled gif", jpeg, accepted, "gif");
  add("JPEG labelled with 10 kB of text", jpeg, accepted, "x".repeat(10_000));
  const tiny = sharp(Buffer.from([200, 40, 90]), { raw: { width: 1, height: 1, channels: 3 } });
  add("1x1 JPEG", await tiny.clone().jpeg().toBuffer(), accepted);
  add("1x1 PNG", await tiny.clone().png().toBuffer(), accepted, "png");
  add("10000x1 PNG", pngOf({ width: 10_000, height: 1, bitDepth: 8, colorType: 2, seed: 16 }), accepted, "png");
  add(
    "1x10000 JPEG",
    await sharp(randomBytes(30_000, 17), { raw: { width: 1, height: 10_000, channels: 3 } })
      .jpeg()
      .toBuffer(),
    accepted,
  );

  // Other formats: refused by name.
  const other = (name: string, bytes: Buffer, format: RegExp) => add(name, bytes, refused("ML_4003", format), "jpeg", false);
  const small = () => sharp(rawPicture(32, 24, 3), { raw: { width: 32, height: 24, channels: 3 } });
  other("GIF", await small().gif().toBuffer(), /only JPEG and PNG images are accepted, got GIF/);
  other("WebP", await small().webp().toBuffer(), /got WebP/);
  other("AVIF", await small().avif().toBuffer(), /got AVIF/);
  other("HEIC (ftyp heic)", ftyp("heic"), /got HEIC/);
  other("BMP", bmp(), /got BMP/);
  other("JPEG XL codestream", Buffer.concat([Buffer.from([0xff, 0x0a]), randomBytes(100, 19)]), /got JPEG XL/);
  other("PDF", Buffer.from("%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "latin1"), /got PDF/);
  other("TIFF (little-endian)", await small().tiff().toBuffer(), /got TIFF/);
  other("TIFF (big-endian header)", Buffer.concat([Buffer.from("MM\0*\0\0\0\x08", "latin1"), randomBytes(100, 18)]), /got TIFF/);
  return cases;
}

export type KeyRpc = "CompareWithStoredImage" | "VerifyPet" | "RegisterPet" | "IdentifyPet";

export interface RequestCase {
  name: string;
  rpc: KeyRpc;
  /** The request as the gateway's @grpc/grpc-js client sends it (snake_case fields). */
  request?: Record<string, unknown>;
  /** Or a hand-encoded protobuf message, for bytes a JS string cannot hold (invalid UTF-8). */
  wire?: Buffer;
  expected: Expected;
}

/** Protobuf length-delimited field `field` holding `bytes`, encoded by hand. */
export function lengthDelimited(field: number, bytes: Buffer): Buffer {
  const varint: number[] = [];
  let n = bytes.length;
  do {
    varint.push((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
    n >>>= 7;
  } while (n > 0);
  return Buffer.concat([Buffer.from([(field << 3) | 2, ...varint]), bytes]);
}

/**
 * Object keys and pet DIDs. `did` is a registered pet whose first enrolment
 * photo exists at `nose-print-photo/{did}/image_1.jpg`: every traversal below
 * would reach a real object if some layer normalised it. `objectDir` is the
 * folder store's root, for the absolute-path forms; `photo` a valid image.
 */
export function keyCases(ctx: { did: string; objectDir: string; photo: Buffer }): RequestCase[] {
  const { did, objectDir, photo } = ctx;
  const own = `nose-print-photo/${did}`;
  const key = `${own}/image_1.jpg`;
  const cases: RequestCase[] = [];
  const compare = (name: string, image_key: string, expected: Expected, pet_did = did) =>
    cases.push({ name, rpc: "CompareWithStoredImage", request: { image_key, pet_did }, expected });

  compare("the pet's own photo (control)", key, accepted);
  const SHAPE = "ML_4006";
  compare("../ inside the pet's folder", `${own}/../${did}/image_1.jpg`, refused(SHAPE, /has a '\.\.' segment/));
  compare("leading ../", `../${key}`, refused(SHAPE, /has a '\.\.' segment/));
  compare("./ segment", `${own}/./image_1.jpg`, refused(SHAPE, /has a '\.' segment/));
  compare("..\\ (Windows separators)", `${own}/..\\..\\${did}\\image_1.jpg`, refused(SHAPE, /contains a backslash/));
  compare("URL-encoded ../ (%2e%2e%2f)", `${own}/%2e%2e%2f${did}%2fimage_1.jpg`, refused(SHAPE, /contains a percent-escape/));
  compare(
    "double-encoded ../ (%252e%252e%252f)",
    `${own}/%252e%252e%252f${did}%252fimage_1.jpg`,
    refused(SHAPE, /contains a percent-escape/),
  );
  compare("mixed-case encoded ..%2F", `${own}/..%2F${did}%2Fimage_1.jpg`, refused(SHAPE, /contains a percent-escape/));
  compare("absolute key", `/${key}`, refused(SHAPE, /must be relative, not absolute/));
  compare("absolute path of the stored file", `${objectDir}/${key}`, refused(SHAPE, /must be relative, not absolute/));
  compare("file: URL of the stored file", `file://${objectDir}/${key}`, refused(SHAPE, /has an empty path segment/));
  compare("NUL before an extension", `${key}\u0000.png`, refused(SHAPE, /contains a control character/));
  compare("NUL in place of a separator", `${own}\u0000image_1.jpg`, refused(SHAPE, /contains a control character/));
  compare("newline in the key", `${key}\n`, refused(SHAPE, /contains a control character/));
  compare(
    "right-to-left override in the key",
    `${own}/\u202egpj.1_egami`,
    refused(SHAPE, /contains an invisible formatting character \(U\+202E\)/),
  );
  compare(
    "zero-width space in the key",
    `${own}/image_1\u200b.jpg`,
    refused(SHAPE, /contains an invisible formatting character \(U\+200B\)/),
  );
  compare("empty segment (//)", `${own}//image_1.jpg`, refused(SHAPE, /has an empty path segment/));
  // Look-alikes are ordinary characters: a file of that literal name, which does not exist.
  compare("fullwidth look-alikes (．．／)", `${own}/\uff0e\uff0e\uff0f${did}\uff0fimage_1.jpg`, refused(SHAPE, /image not found/));
  compare("one-dot leaders and division slash (․․∕)", `${own}/\u2024\u2024\u2215image_1.jpg`, refused(SHAPE, /image not found/));
  compare("combining dot look-alike of ..", `${own}/.\u0307./image_1.jpg`, refused(SHAPE, /must name a file directly under/));
  compare(
    "key of another pet's folder",
    `nose-print-photo/did:pet:other-dog/image_1.jpg`,
    refused(SHAPE, /must lie under nose-print-photo\/did:/),
  );
  compare("key outside the photo area", `pet-vectors/${did}.json`, refused(SHAPE, /must lie under nose-print-photo\//));
  compare("a subfolder of the pet's folder", `${own}/sub/image_1.jpg`, refused(SHAPE, /must name a file directly under/));
  compare("10 kB key", `${own}/${"a".repeat(10_000)}.jpg`, refused(SHAPE, /longer than 512 characters/));
  compare("lone UTF-16 surrogate in the key", `${own}/\ud800.jpg`, refused(SHAPE, /image not found|invalid|UTF-8/));
  compare("key of a photo that does not exist", `${own}/image_9.jpg`, refused(SHAPE, /image not found/));

  const badDid = (name: string, pet_did: string, message = /invalid pet DID/) =>
    compare(name, `nose-print-photo/${pet_did}/image_1.jpg`, refused(SHAPE, message), pet_did);
  badDid("DID with ../", `${did}/../${did}`);
  badDid("DID that is ..", "..");
  badDid("did:pet:.. (dots only)", "did:pet:..");
  badDid("DID with a backslash", `did:pet:a\\..\\b`);
  badDid("DID with %2e%2e", "did:pet:%2e%2e");
  badDid("DID one hex digit short", did.startsWith("did:ethr:besu:0x") ? did.slice(0, -1) : "did:ethr:besu:0x" + "a".repeat(39));
  badDid("DID with a Cyrillic look-alike (е)", "did:\u0435thr:besu:0x" + "a".repeat(40));
  badDid("DID with fullwidth digits", "did:ethr:besu:0x" + "\uff11".repeat(40));
  badDid("DID with a trailing NUL", `${did}\u0000`);
  badDid("10 kB DID", `did:pet:${"a".repeat(10_000)}`, /invalid pet DID "did:pet:a{72}\.\.\."/);
  compare("empty DID", key, refused(SHAPE, /invalid pet DID ""/), "");
  compare(
    "a well-formed DID nobody registered",
    "nose-print-photo/did:pet:nobody/image_1.jpg",
    refused("ML_4004", /no enrolled nose print for pet did:pet:nobody/),
    "did:pet:nobody",
  );

  // Bytes no JS string holds (the gateway cannot send them): invalid UTF-8 in
  // proto3 string fields makes the whole message unparsable.
  const rawCompare = (name: string, imageKey: Buffer, petDid: Buffer) =>
    cases.push({
      name,
      rpc: "CompareWithStoredImage",
      wire: Buffer.concat([lengthDelimited(1, imageKey), lengthDelimited(2, petDid)]),
      expected: unparsable(/not valid for encoding utf-8/),
    });
  rawCompare(
    "non-UTF-8 bytes in the key",
    Buffer.concat([Buffer.from(`${own}/`), Buffer.from([0xc0, 0xae, 0xc0, 0xae, 0xff])]),
    Buffer.from(did),
  );
  rawCompare("non-UTF-8 bytes in the DID", Buffer.from(key), Buffer.concat([Buffer.from("did:pet:"), Buffer.from([0xfe, 0xff, 0x80])]));

  // The same checks behind the registry calls.
  cases.push(
    {
      name: "../ in the photo key",
      rpc: "VerifyPet",
      request: { pet_did: did, photo: { image_key: `${own}/../${did}/image_1.jpg` } },
      expected: refused(SHAPE, /photo: image key has a '\.\.' segment/),
    },
    {
      name: "another pet's photo key",
      rpc: "VerifyPet",
      request: { pet_did: did, photo: { image_key: "nose-print-photo/did:pet:other-dog/image_1.jpg" } },
      expected: refused(SHAPE, /photo: image key must lie under/),
    },
    {
      name: "10 kB DID",
      rpc: "VerifyPet",
      request: { pet_did: "did:pet:" + "b".repeat(10_000), photo: { image_data: photo } },
      expected: refused(SHAPE, /invalid pet DID/),
    },
    {
      name: "10 kB requested_by",
      rpc: "VerifyPet",
      request: { pet_did: did, photo: { image_data: photo }, requested_by: "c".repeat(10_000) },
      expected: refused(SHAPE, /requested by must be text of at most 256 characters/),
    },
    {
      name: "traversal out of the photo area",
      rpc: "RegisterPet",
      request: { photos: [{ image_key: "nose-print-photo/../../etc/passwd" }, { image_key: key }] },
      expected: refused(SHAPE, /photo 1: image key has a '\.\.' segment/),
    },
    {
      name: "key whose folder is not a DID",
      rpc: "RegisterPet",
      request: { photos: [{ image_key: "nose-print-photo/not-a-did/x.jpg" }, { image_key: key }] },
      expected: refused(SHAPE, /photo 1: image key must have the form nose-print-photo\/\{petDID\}\/\{fileName\}/),
    },
    {
      name: "10 kB request id",
      rpc: "RegisterPet",
      request: { photos: [{ image_data: photo }, { image_data: photo }], request_id: "r".repeat(10_000) },
      expected: refused(SHAPE, /request id must be text of at most 128 characters/),
    },
    {
      name: "NUL in requested_by",
      rpc: "RegisterPet",
      request: { photos: [{ image_data: photo }, { image_data: photo }], requested_by: "0xabc\u0000" },
      expected: refused(SHAPE, /requested by must be text/),
    },
    {
      name: "double-encoded traversal",
      rpc: "IdentifyPet",
      request: { photo: { image_key: `nose-print-photo/${did}/%252e%252e%252fimage_1.jpg` } },
      expected: refused(SHAPE, /photo: image key contains a percent-escape/),
    },
  );
  return cases;
}
