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
 * Clean baseline JPEGs are decoded by the libjpeg addon (jpeg-native.ts:
 * the library Debian's Pillow links, so the same pixels at full size, in
 * about half of sharp's time; shrunk, libjpeg's DCT scaling as Pillow's
 * `draft`); everything else, and whatever the addon declines, by sharp,
 * which gives the verdicts above.
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
import {
  checkJpegMarkers,
  checkPngChunks,
  describeOther,
  jpegExifOrientation,
  readHeader,
  sniffFormat,
  type ImageFormat,
  type ImageHeader,
} from "./header.js";
import { decodeJpegNative, nativeJpegLoaded, openJpegNative, type JpegStrips, type Shrink } from "./jpeg-native.js";

export { readHeader, sniffFormat, type ImageFormat, type ImageHeader } from "./header.js";

// Decoded images are used once; the cache would only hold memory.
sharp.cache(false);

/** A decode that takes longer than this is abandoned (hostile or broken input). */
export const DECODE_TIMEOUT_S = 20;

export interface DecodeLimits {
  maxBytes: number;
  maxPixels: number;
}

export interface DecodeOptions {
  /**
   * The model's input size. When given, a large JPEG may be shrunk while it
   * is decoded to a square a little larger than this (see shrinkTarget);
   * the caller still resizes the result to the model's size with the exact
   * LANCZOS. Without it the photo is decoded at full size, as Pillow does.
   */
  shrinkFor?: number;
  /**
   * "sharp" never uses the libjpeg addon; "auto" (the default) uses it for
   * the JPEGs it takes (see jpeg-decode.c) when it is built. The tests and
   * the benchmarks compare the two.
   */
  decoder?: "auto" | "sharp";
}

/**
 * "exact": decoded at full size, so the exact LANCZOS that follows gives
 * Pillow's pixels bit for bit; "jpeg-shrink": shrunk at decode time first,
 * within cosine 0.9999 of the exact path's embedding but not bit-exact.
 */
export type DecodePath = "exact" | "jpeg-shrink";

/** Which library produced the pixels: the libjpeg addon or sharp (libvips). */
export type Decoder = "libjpeg" | "sharp";

export interface DecodedImage {
  image: PixelImage;
  format: ImageFormat;
  /** The photo's full size: after EXIF orientation on the exact path, as stored on the shrink path. */
  width: number;
  height: number;
  path: DecodePath;
  decoder: Decoder;
}

/** The pixel layout sharp is asked for, chosen from the header. */
type Layout = "default" | "cmyk" | "rgb16" | "grey16" | "grey16-alpha";

function layoutOf(format: ImageFormat, h: ImageHeader): Layout {
  if (format === "jpeg") return h.components === 4 ? "cmyk" : "default";
  if (h.bitDepth !== 16) return "default";
  if (h.colorType === 0) return "grey16";
  return h.colorType === 4 ? "grey16-alpha" : "rgb16";
}

/** What checkEncoded found: the format and what the header declares. */
export interface CheckedImage {
  format: ImageFormat;
  header: ImageHeader;
}

/**
 * Everything checked before a decoder sees the bytes: size, format, the
 * declared pixel count, and the PNG chunk or JPEG marker structure. Every
 * decode of untrusted bytes goes through it (the embedding's here, the
 * keypoints' in server/geometry). Throws MLError.
 */
export function checkEncoded(bytes: Uint8Array, limits: DecodeLimits): CheckedImage {
  if (bytes.length === 0) throw invalidRequest("image is empty");
  if (bytes.length > limits.maxBytes) {
    throw imageTooLarge(`image is ${bytes.length} bytes, the limit is ${limits.maxBytes}`);
  }
  const format = sniffFormat(bytes);
  if (!format) throw invalidImageFormat(`only JPEG and PNG images are accepted, got ${describeOther(bytes)}`);
  const header = readHeader(bytes, format);
  // Checked before decoding: a tiny file can declare billions of pixels.
  if (header.width * header.height > limits.maxPixels) {
    throw imageTooLarge(`image declares ${header.width}x${header.height} pixels, the limit is ${limits.maxPixels} pixels`);
  }
  if (format === "png") checkPngChunks(bytes);
  else checkJpegMarkers(bytes);
  return { format, header };
}

/**
 * Decode, orient and convert like Pillow. Throws MLError only; sharp's own
 * failures become INVALID_IMAGE with its message attached.
 */
export async function decodeImage(bytes: Uint8Array, limits: DecodeLimits, options: DecodeOptions = {}): Promise<DecodedImage> {
  return decodeChecked(bytes, checkEncoded(bytes, limits), limits, options);
}

/** decodeImage for bytes that already passed checkEncoded. */
export async function decodeChecked(
  bytes: Uint8Array,
  { format, header }: CheckedImage,
  limits: DecodeLimits,
  options: DecodeOptions = {},
): Promise<DecodedImage> {
  const layout = layoutOf(format, header);
  const factor = shrinkFactorFor({ format, header }, options);
  // The image's own size on the exact path (after EXIF orientation), the stored one when shrunk.
  const decoded = (image: PixelImage, decoder: Decoder): DecodedImage =>
    factor === undefined
      ? { image, format, width: image.width, height: image.height, path: "exact", decoder }
      : { image, format, width: header.width, height: header.height, path: "jpeg-shrink", decoder };
  if (libjpegTakes({ format, header }, options)) {
    const image = await decodeWithLibjpeg(bytes, header, factor ?? 1);
    if (image) return decoded(image, "libjpeg");
  }
  let raw: { data: Buffer; info: OutputInfo };
  try {
    let p = pipeline(bytes, layout, limits);
    if (factor !== undefined) {
      const to = await shrunkSize(bytes, header, factor);
      p = p.resize(to.width, to.height, { fit: "fill", kernel: "lanczos3", fastShrinkOnLoad: true });
    }
    raw = await p.toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw fromSharpError(err, format);
  }
  return decoded(toRgb(raw.data, raw.info, layout), "sharp");
}

/**
 * The libjpeg addon's decode (Pillow's pixels bit for bit at full size; with
 * `shrink`, libjpeg's DCT scaling as Pillow's `draft`); undefined when the
 * EXIF orientation is ambiguous or the addon declines (damage, progressive
 * files...): sharp's path then decides, with the verdicts and messages the
 * tests hold against Pillow's.
 */
async function decodeWithLibjpeg(bytes: Uint8Array, header: ImageHeader, shrink: Shrink): Promise<PixelImage | undefined> {
  const orientation = jpegExifOrientation(bytes);
  if (orientation === undefined) return undefined;
  // The header's pixel count passed the limit in checkEncoded; the addon
  // declines a frame of any other size than this buffer holds.
  const data = Buffer.allocUnsafe(Math.ceil(header.width / shrink) * Math.ceil(header.height / shrink) * 3);
  const r = await decodeJpegNative(bytes, data, orientation, shrink);
  if ("declined" in r) return undefined;
  return { width: r.width, height: r.height, channels: 3, data };
}

/** Whether decodeChecked offers the photo to the libjpeg addon: a JPEG, not CMYK, when the addon is loaded. */
function libjpegTakes({ format, header }: CheckedImage, options: DecodeOptions): boolean {
  return nativeJpegLoaded && options.decoder !== "sharp" && format === "jpeg" && layoutOf(format, header) === "default";
}

/**
 * A photo that decodeChecked would decode with the libjpeg addon, upright as
 * stored (EXIF orientation 1 or none), opened to be read in strips of rows
 * (see preprocess-photo.ts), with the path it takes; undefined otherwise, or
 * when the addon declines it at its header, and decodeChecked decodes it.
 * The pixels are the same.
 */
export function openJpegStrips(
  bytes: Uint8Array,
  checked: CheckedImage,
  options: DecodeOptions = {},
): { strips: JpegStrips; path: DecodePath } | undefined {
  if (!libjpegTakes(checked, options) || jpegExifOrientation(bytes) !== 1) return undefined;
  const { header } = checked;
  const factor = shrinkFactorFor(checked, options);
  const shrink = factor ?? 1;
  const strips = openJpegNative(bytes, shrink);
  if ("declined" in strips) return undefined;
  // libjpeg reads the same frame header as readHeader; a mismatch would mean a file unlike any seen.
  if (strips.width !== Math.ceil(header.width / shrink) || strips.height !== Math.ceil(header.height / shrink)) {
    strips.close();
    return undefined;
  }
  return { strips, path: factor === undefined ? "exact" : "jpeg-shrink" };
}

/**
 * How much larger than the model's input the shrunk image stays, so that the
 * exact LANCZOS still does the last, largest share of the reduction. The
 * smallest whole factor at which every photo of the parity corpus (and
 * rendered nose photos from 1080 px to 16 MP) kept its embedding within
 * cosine 0.9999 of the Pillow-exact path; test/fast-path-parity.test.ts
 * holds it there. At 2 a 2400x1800 photo, shrunk to 600x450, gave 0.99977.
 */
export const SHRINK_MARGIN = 3;

/**
 * How much a large JPEG is shrunk while it is decoded, or undefined when the
 * exact path is taken. The libjpeg addon scales the DCT by exactly this
 * factor (what PIL's `draft` does), which skips most of the inverse transform
 * and the full-size image. sharp, where the addon does not decode, asks
 * libjpeg for half of a whole-number ratio (sharp 0.35's guard against
 * libjpeg rounding) and libvips reduces the last 2x: a factor of 4 is a 1/2
 * DCT decode and a reduce by 2, 8 is 1/4 and 2. So no factor of 2: for sharp
 * that would be a full decode and a reduce, slower than the full decode alone
 * (1080x1080: 9.0 against 6.1 ms; 4032x3024: 63.6 against 62.3 ms), where
 * the exact LANCZOS from full size costs 2-3 ms in WebAssembly and stays
 * Pillow-exact. Both decoders' shrunk photos are held to the same bound
 * (test/fast-path-parity.test.ts). 16-bit and CMYK sources (rare, and
 * converted by our own code) always take the exact path.
 */
function shrinkFactor(format: ImageFormat, layout: Layout, header: ImageHeader, size: number): Shrink | undefined {
  if (format !== "jpeg" || layout !== "default") return undefined;
  const short = Math.min(header.width, header.height);
  return SHRINK_FACTORS.find((f) => short / f >= size * SHRINK_MARGIN);
}

const SHRINK_FACTORS: readonly Shrink[] = [8, 4];

/** shrinkFactor for a checked photo, or undefined when the caller did not allow shrinking. */
function shrinkFactorFor({ format, header }: CheckedImage, options: DecodeOptions): Shrink | undefined {
  return options.shrinkFor === undefined ? undefined : shrinkFactor(format, layoutOf(format, header), header, options.shrinkFor);
}

/**
 * The photo's size over the factor, rounded up as libjpeg's scaled DCT rounds,
 * in its displayed orientation: the exact LANCZOS then does every resampling
 * step after sharp's (see shrinkFactor). A further reduce by libvips to an
 * intermediate square cost parity on dark noses with little texture (cosine
 * 0.9997-0.99987 against Pillow).
 */
async function shrunkSize(bytes: Uint8Array, header: ImageHeader, factor: number): Promise<{ width: number; height: number }> {
  const { orientation } = await sharp(bytes).metadata();
  const turned = orientation !== undefined && orientation >= 5;
  const [w, h] = turned ? [header.height, header.width] : [header.width, header.height];
  return { width: Math.ceil(w / factor), height: Math.ceil(h / factor) };
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
