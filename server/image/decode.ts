/**
 * Untrusted image bytes to 8-bit RGB(A) pixels, as the old Python server saw
 * them after `ImageOps.exif_transpose(Image.open(...)).convert("RGB")`
 * (Pillow 9.4). Only the pixel conversion matters for the model input; the
 * checks come first so that hostile input is rejected before any decoding:
 *
 *   empty                          -> INVALID_REQUEST
 *   more than maxBytes             -> IMAGE_TOO_LARGE
 *   not JPEG or PNG (magic bytes)  -> INVALID_IMAGE_FORMAT
 *   header declares > maxPixels    -> IMAGE_TOO_LARGE (read here, not by the decoder)
 *   broken header, truncated data,
 *   decoder error                  -> INVALID_IMAGE
 *
 * Broken files are refused where Pillow refuses them: truncation, decoder
 * errors, a PNG chunk with a bad CRC before the image data, an unknown marker
 * inside a JPEG scan. Damage libjpeg only warns about (stray bytes before a
 * marker, flipped bits in a scan) is tolerated, as Pillow tolerates it.
 *
 * Pillow's conversions, measured on Pillow 9.4 and reproduced here:
 * - ICC profiles and PNG gamma are ignored (no colour management).
 * - alpha is dropped, never composited; palettes are looked up, tRNS ignored.
 * - 16-bit RGB(A) and grey+alpha PNGs keep the high byte of each sample.
 * - 16-bit grey PNGs open as 32-bit integer mode "I"; `convert("RGB")` clips
 *   each value to 255, so anything brighter than 255/65535 turns white.
 * - CMYK JPEGs (Adobe inverted or not) are read as plain CMYK and converted
 *   without a profile: X = (255 - K) - round(C * (255 - K) / 255).
 */
import sharp, { type OutputInfo, type Sharp } from "sharp";
import { imageTooLarge, invalidImage, invalidImageFormat, invalidRequest, MLError } from "../errors.js";
import type { PixelImage } from "../../shared/preprocess.js";

// Decoded images are used once; the cache would only hold memory.
sharp.cache(false);

/** A decode that takes longer than this is abandoned (hostile or broken input). */
export const DECODE_TIMEOUT_S = 20;

export interface DecodeLimits {
  maxBytes: number;
  maxPixels: number;
}

export type ImageFormat = "jpeg" | "png";

export interface DecodeOptions {
  /**
   * The model's input size. When given, a large JPEG may be shrunk while it
   * is decoded to a square a little larger than this (see shrinkTarget);
   * the caller still resizes the result to the model's size with the exact
   * LANCZOS. Without it the photo is decoded at full size, as Pillow does.
   */
  shrinkFor?: number;
}

/**
 * "exact": decoded at full size, so the exact LANCZOS that follows gives
 * Pillow's pixels bit for bit; "jpeg-shrink": shrunk at decode time first,
 * within cosine 0.9999 of the exact path's embedding but not bit-exact.
 */
export type DecodePath = "exact" | "jpeg-shrink";

export interface DecodedImage {
  image: PixelImage;
  format: ImageFormat;
  /** The photo's full size: after EXIF orientation on the exact path, as stored on the shrink path. */
  width: number;
  height: number;
  path: DecodePath;
}

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

function startsWith(bytes: Uint8Array, prefix: readonly number[], at = 0): boolean {
  if (bytes.length < at + prefix.length) return false;
  return prefix.every((b, i) => bytes[at + i] === b);
}

const ascii = (s: string) => Array.from(s, (c) => c.charCodeAt(0));

/** JPEG or PNG by magic bytes; anything else is undefined. */
export function sniffFormat(bytes: Uint8Array): ImageFormat | undefined {
  if (startsWith(bytes, [0xff, 0xd8, 0xff])) return "jpeg";
  if (startsWith(bytes, PNG_SIGNATURE)) return "png";
  return undefined;
}

/** A name for the formats people actually send, for the error message. */
function describeOther(bytes: Uint8Array): string {
  if (startsWith(bytes, ascii("GIF8"))) return "GIF";
  if (startsWith(bytes, ascii("RIFF")) && startsWith(bytes, ascii("WEBP"), 8)) return "WebP";
  if (startsWith(bytes, ascii("BM"))) return "BMP";
  if (startsWith(bytes, ascii("II*\0")) || startsWith(bytes, ascii("MM\0*"))) return "TIFF";
  if (startsWith(bytes, ascii("ftyp"), 4)) return describeIsoMedia(bytes);
  if (startsWith(bytes, [0xff, 0x0a]) || startsWith(bytes, ascii("\0\0\0\x0cJXL "))) return "JPEG XL";
  if (startsWith(bytes, [0xff, 0x4f, 0xff, 0x51]) || startsWith(bytes, ascii("\0\0\0\x0cjP  "))) return "JPEG 2000";
  if (startsWith(bytes, ascii("%PDF"))) return "PDF";
  // A file cut inside the magic bytes is not recognisable as JPEG or PNG, but
  // saying what it starts like tells the caller the upload was truncated.
  if (bytes.length === 2 && startsWith(bytes, [0xff, 0xd8])) return `the first ${bytes.length} bytes of a JPEG (cut short)`;
  if (bytes.length >= 2 && bytes.length < 8 && PNG_SIGNATURE.slice(0, bytes.length).every((b, i) => bytes[i] === b)) {
    return `the first ${bytes.length} bytes of a PNG (cut short)`;
  }
  return "unrecognised data";
}

/** ISO base media files (ftyp box): name the image formats by their brands. */
function describeIsoMedia(bytes: Uint8Array): string {
  const boxEnd = Math.min(bytes.length, Math.max(16, u32(bytes, 0)));
  const brands = new Set<string>();
  for (let i = 8; i + 4 <= boxEnd; i += i === 8 ? 8 : 4) brands.add(String.fromCharCode(...bytes.subarray(i, i + 4)));
  if (brands.has("avif") || brands.has("avis")) return "AVIF";
  if (["heic", "heix", "heim", "heis", "hevc", "hevx"].some((b) => brands.has(b))) return "HEIC";
  if (brands.has("mif1") || brands.has("msf1")) return "HEIF";
  return "an ISO media file (MP4, MOV or similar)";
}

/** What the header declares, read without decoding any pixels. */
export interface ImageHeader {
  width: number;
  height: number;
  /** PNG: bit depth and colour type from IHDR. */
  bitDepth?: number;
  colorType?: number;
  /** JPEG: number of components in the frame (4 = CMYK or YCCK). */
  components?: number;
}

const u16 = (b: Uint8Array, i: number) => (b[i] << 8) | b[i + 1];
const u32 = (b: Uint8Array, i: number) => ((b[i] << 24) >>> 0) + ((b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]);

/** PNG IHDR: it must be the first chunk. */
function readPngHeader(b: Uint8Array): ImageHeader {
  if (b.length < 8 + 8 + 13) throw invalidImage("PNG is truncated before its IHDR header");
  if (u32(b, 8) !== 13 || !startsWith(b, ascii("IHDR"), 12)) throw invalidImage("PNG does not start with an IHDR header");
  const width = u32(b, 16);
  const height = u32(b, 20);
  if (width === 0 || height === 0 || width > 0x7fffffff || height > 0x7fffffff) {
    throw invalidImage(`PNG declares an impossible size ${width}x${height}`);
  }
  return { width, height, bitDepth: b[24], colorType: b[25] };
}

let crcTable: Uint32Array | undefined;

function crc32(b: Uint8Array, start: number, end: number): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = start; i < end; i++) c = crcTable[(c ^ b[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * Pillow reads every chunk before the image data when it opens a PNG and
 * refuses the file if one is cut short or fails its CRC; libpng would only
 * drop a broken ancillary chunk, so check them here.
 */
function checkPngChunks(b: Uint8Array): void {
  let i = 8;
  for (;;) {
    if (i + 8 > b.length) throw invalidImage("PNG is truncated before its image data");
    const length = u32(b, i);
    const type = String.fromCharCode(b[i + 4], b[i + 5], b[i + 6], b[i + 7]);
    // Chunk types are four ASCII letters; anything else is damage, not a chunk to name.
    if (!/^[A-Za-z]{4}$/.test(type)) throw invalidImage(`PNG is corrupt (no valid chunk type at byte ${i + 4})`);
    if (type === "IDAT") return;
    if (type === "IEND") throw invalidImage("PNG has no image data");
    const end = i + 8 + length;
    if (length > 0x7fffffff || end + 4 > b.length) throw invalidImage(`PNG is truncated in its ${type} chunk`);
    if (crc32(b, i + 4, end) !== u32(b, end)) throw invalidImage(`PNG ${type} chunk is corrupt (CRC mismatch)`);
    i = end + 4;
  }
}

// SOF0..SOF15 minus DHT (C4), JPG (C8) and DAC (CC).
const isStartOfFrame = (m: number) => m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc;

/** JPEG: walk the marker segments up to the first frame header (SOFn). */
function readJpegHeader(b: Uint8Array): ImageHeader {
  let i = 2;
  for (;;) {
    if (i >= b.length) throw invalidImage("JPEG is truncated before its frame header");
    if (b[i] !== 0xff) throw invalidImage("JPEG header is corrupt (expected a marker)");
    while (i < b.length && b[i] === 0xff) i++; // fill bytes
    if (i >= b.length) throw invalidImage("JPEG is truncated before its frame header");
    const marker = b[i++];
    if ((marker >= 0xd0 && marker <= 0xd7) || marker === 0x01) continue; // no payload
    if (marker === 0xd8 || marker === 0xd9 || marker === 0xda) {
      throw invalidImage("JPEG has no frame header before its image data");
    }
    if (i + 2 > b.length) throw invalidImage("JPEG is truncated before its frame header");
    const length = u16(b, i);
    if (length < 2) throw invalidImage("JPEG header is corrupt (bad segment length)");
    if (isStartOfFrame(marker)) {
      if (length < 8 || i + 8 > b.length) throw invalidImage("JPEG frame header is truncated");
      const height = u16(b, i + 3);
      const width = u16(b, i + 5);
      const components = b[i + 7];
      // A zero height would be given later by a DNL marker, which neither
      // libjpeg nor Pillow supports.
      if (width === 0 || height === 0) throw invalidImage(`JPEG declares an unsupported size ${width}x${height}`);
      return { width, height, components };
    }
    i += length;
  }
}

// Markers libjpeg's reader knows; meeting any other one is a fatal error for
// it (JERR_UNKNOWN_MARKER): SOFn/DHT/JPG/DAC, RSTn, SOI, EOI, SOS, DQT, DNL,
// DRI, APPn, COM and TEM.
const isKnownMarker = (m: number) =>
  (m >= 0xc0 && m <= 0xdd) || (m >= 0xe0 && m <= 0xef) || m === 0xfe || m === 0x01;

/**
 * Walks the marker structure of a JPEG up to its EOI, including the
 * entropy-coded data of every scan. Noise written over a scan usually holds
 * an 0xFF followed by a byte that is no marker: libjpeg then fails when
 * Pillow finishes the decompression, but sharp has already stopped reading
 * and returns the damaged picture. Refuse those files the way Pillow does.
 * Truncation is left to the decoder, which reports it.
 */
function checkJpegMarkers(b: Uint8Array): void {
  let i = 2;
  while (i < b.length) {
    if (b[i] !== 0xff) {
      i++; // stray bytes between segments: a libjpeg warning only
      continue;
    }
    while (i < b.length && b[i] === 0xff) i++;
    if (i >= b.length) return;
    const marker = b[i++];
    if (marker === 0xd9) return;
    if (!isKnownMarker(marker)) {
      throw invalidImage(`JPEG data is corrupt (unknown marker 0x${marker.toString(16)} at byte ${i - 1})`);
    }
    if ((marker >= 0xd0 && marker <= 0xd8) || marker === 0x01) continue;
    if (i + 2 > b.length) return;
    i += u16(b, i);
    if (marker !== 0xda) continue;
    // Entropy-coded data runs to the first 0xFF that is not a stuffed zero,
    // a restart marker or a fill byte.
    for (;;) {
      const f = b.indexOf(0xff, i);
      if (f < 0 || f + 1 >= b.length) return;
      const next = b[f + 1];
      if (next === 0x00 || (next >= 0xd0 && next <= 0xd7)) i = f + 2;
      else if (next === 0xff) i = f + 1;
      else {
        i = f;
        break;
      }
    }
  }
}

/** Declared size (and layout) from the header; throws INVALID_IMAGE when unreadable. */
export function readHeader(bytes: Uint8Array, format: ImageFormat): ImageHeader {
  return format === "png" ? readPngHeader(bytes) : readJpegHeader(bytes);
}

/** The pixel layout sharp is asked for, chosen from the header. */
type Layout = "default" | "cmyk" | "rgb16" | "grey16" | "grey16-alpha";

function layoutOf(format: ImageFormat, h: ImageHeader): Layout {
  if (format === "jpeg") return h.components === 4 ? "cmyk" : "default";
  if (h.bitDepth !== 16) return "default";
  if (h.colorType === 0) return "grey16";
  return h.colorType === 4 ? "grey16-alpha" : "rgb16";
}

/**
 * Decode, orient and convert like Pillow. Throws MLError only; sharp's own
 * failures become INVALID_IMAGE with its message attached.
 */
/**
 * Everything checked before a decoder sees the bytes: size, format, the
 * declared pixel count, and the PNG chunk or JPEG marker structure. Every
 * decode of untrusted bytes goes through it (the embedding's here, the
 * keypoints' in server/geometry). Throws MLError.
 */
export function checkEncoded(bytes: Uint8Array, limits: DecodeLimits): { format: ImageFormat; header: ImageHeader } {
  if (bytes.length === 0) throw invalidRequest("image is empty");
  if (bytes.length > limits.maxBytes) {
    throw imageTooLarge(`image is ${bytes.length} bytes, the limit is ${limits.maxBytes}`);
  }
  const format = sniffFormat(bytes);
  if (!format) throw invalidImageFormat(`only JPEG and PNG images are accepted, got ${describeOther(bytes)}`);
  const header = readHeader(bytes, format);
  // Checked before decoding: a tiny file can declare billions of pixels.
  if (header.width * header.height > limits.maxPixels) {
    throw imageTooLarge(
      `image declares ${header.width}x${header.height} pixels, the limit is ${limits.maxPixels} pixels`,
    );
  }
  if (format === "png") checkPngChunks(bytes);
  else checkJpegMarkers(bytes);
  return { format, header };
}

export async function decodeImage(bytes: Uint8Array, limits: DecodeLimits, options: DecodeOptions = {}): Promise<DecodedImage> {
  const { format, header } = checkEncoded(bytes, limits);
  const layout = layoutOf(format, header);
  const shrinkTo = options.shrinkFor === undefined ? undefined : shrinkTarget(format, layout, header, options.shrinkFor);
  let raw: { data: Buffer; info: OutputInfo };
  try {
    let p = pipeline(bytes, layout, limits);
    if (shrinkTo !== undefined) p = p.resize(shrinkTo, shrinkTo, { fit: "fill", kernel: "lanczos3", fastShrinkOnLoad: true });
    raw = await p.toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw fromSharpError(err, format);
  }
  const image = toRgb(raw.data, raw.info, layout);
  if (shrinkTo === undefined) return { image, format, width: image.width, height: image.height, path: "exact" };
  return { image, format, width: header.width, height: header.height, path: "jpeg-shrink" };
}

/**
 * How much larger than the model's input the shrunk image stays, so that the
 * exact LANCZOS still does the last, largest share of the reduction. The
 * smallest factor at which every photo of the parity corpus (and rendered
 * nose photos from 640 px to 12 MP) kept its embedding within cosine 0.9999
 * of the Pillow-exact path; test/fast-path-parity.test.ts holds it there.
 */
export const SHRINK_MARGIN = 1.5;

/**
 * The side of the square a large JPEG is shrunk to while it is decoded, or
 * undefined when the exact path is taken. libjpeg scales the DCT by 1/2, 1/4
 * or 1/8 at decode time (what PIL's `draft` and libvips' shrink-on-load do),
 * which skips most of the inverse transform and the full-size image; libvips
 * then reduces the rest of the way to the margin. Only worth it, and only
 * done, where the decoder can shrink at least 2x; 16-bit and CMYK sources
 * (rare, and converted by our own code) always take the exact path.
 */
function shrinkTarget(format: ImageFormat, layout: Layout, header: ImageHeader, size: number): number | undefined {
  if (format !== "jpeg" || layout !== "default") return undefined;
  const target = Math.ceil(size * SHRINK_MARGIN);
  return Math.min(header.width, header.height) >= 2 * target ? target : undefined;
}

function pipeline(bytes: Uint8Array, layout: Layout, limits: DecodeLimits): Sharp {
  const s = sharp(bytes, {
    // Pillow refuses truncated files and decoder errors but tolerates libjpeg
    // warnings (e.g. extraneous bytes before a marker), so "error" and not
    // sharp's default "warning".
    failOn: "error",
    // A second line of defence behind the header check; 0 would mean no limit.
    limitInputPixels: Math.max(1, Math.floor(limits.maxPixels)),
    // Pillow applies no colour management.
    ignoreIcc: true,
    // ImageOps.exif_transpose.
    autoOrient: true,
  }).timeout({ seconds: DECODE_TIMEOUT_S });
  switch (layout) {
    case "cmyk":
      // Keep the decoder's CMYK; sharp would otherwise convert through an ICC profile.
      return s.pipelineColourspace("cmyk").toColourspace("cmyk").raw();
    case "rgb16":
      return s.pipelineColourspace("rgb16").toColourspace("rgb16").raw({ depth: "ushort" });
    case "grey16":
    case "grey16-alpha":
      return s.toColourspace("grey16").raw({ depth: "ushort" });
    default:
      return s.raw();
  }
}

function fromSharpError(err: unknown, format: ImageFormat): MLError {
  const message = err instanceof Error ? err.message : String(err);
  if (/pixel limit/i.test(message)) return imageTooLarge(`image exceeds the pixel limit: ${message}`);
  // libvips sometimes reports damage inside compressed data with no detail
  // ("Unknown error", or a label with nothing after its colon): say what it means.
  const first = message.split("\n")[0].trim();
  const detail = first === "" || /unknown error$|:$/i.test(first) ? "the compressed image data is corrupt" : first;
  return invalidImage(`cannot decode ${format.toUpperCase()}: ${detail}`, err);
}

/** sharp's raw output to interleaved 8-bit RGB or RGBA, following Pillow's conversions. */
function toRgb(data: Buffer, info: OutputInfo, layout: Layout): PixelImage {
  const { width, height, channels } = info;
  const n = width * height;
  if (layout === "cmyk") {
    if (channels !== 4) throw invalidImage(`CMYK JPEG decoded to ${channels} channels`);
    return { width, height, channels: 3, data: cmykToRgb(data, n) };
  }
  if (layout !== "default") {
    // Native-endian 16-bit samples; copy first if the buffer is not 2-aligned.
    const bytes = data.byteOffset % 2 === 0 ? data : Buffer.from(data);
    const samples = new Uint16Array(bytes.buffer, bytes.byteOffset, n * channels);
    // A 16-bit grey PNG is Pillow's mode "I" (a tRNS chunk does not change
    // that): clip. Grey with an alpha channel is read as LA;16B: high byte.
    // Colour: high byte.
    const clip = layout === "grey16";
    const out = new Uint8Array(n * 3);
    for (let i = 0, p = 0, o = 0; i < n; i++, p += channels, o += 3) {
      if (channels >= 3) {
        out[o] = samples[p] >> 8;
        out[o + 1] = samples[p + 1] >> 8;
        out[o + 2] = samples[p + 2] >> 8;
      } else {
        const v = clip ? Math.min(samples[p], 255) : samples[p] >> 8;
        out[o] = out[o + 1] = out[o + 2] = v;
      }
    }
    return { width, height, channels: 3, data: out };
  }
  if (channels === 3 || channels === 4) return { width, height, channels, data };
  if (channels === 1 || channels === 2) {
    // Grey (with or without alpha): replicate, drop alpha.
    const out = new Uint8Array(n * 3);
    for (let i = 0, p = 0, o = 0; i < n; i++, p += channels, o += 3) out[o] = out[o + 1] = out[o + 2] = data[p];
    return { width, height, channels: 3, data: out };
  }
  throw invalidImage(`image decoded to an unsupported ${channels}-channel layout`);
}

/** Pillow's `cmyk2rgb`: X = (255 - K) - MULDIV255(C, 255 - K), no profile. */
function cmykToRgb(cmyk: Uint8Array, n: number): Uint8Array {
  const out = new Uint8Array(n * 3);
  for (let i = 0, p = 0, o = 0; i < n; i++, p += 4, o += 3) {
    const nk = 255 - cmyk[p + 3];
    for (let c = 0; c < 3; c++) {
      const t = cmyk[p + c] * nk + 128;
      out[o + c] = nk - (((t >> 8) + t) >> 8);
    }
  }
  return out;
}
