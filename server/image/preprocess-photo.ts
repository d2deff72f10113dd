import { fitToModel, toChw } from "../../shared/preprocess.js";
import {
  checkEncoded,
  decodeChecked,
  openJpegStrips,
  readHeader,
  sniffFormat,
  type Decoder,
  type DecodeLimits,
  type DecodePath,
} from "./decode.js";
import type { JpegStrips } from "./jpeg-native.js";
import { resizeLanczosSimd, streamingResize } from "./lanczos-simd.js";

/** Milliseconds per stage of one photo's preprocessing. */
export interface PhotoTimings {
  decode: number;
  resize: number;
  tensor: number;
}

export interface PreprocessedPhoto {
  tensor: Float32Array;
  ms: PhotoTimings;
  path: DecodePath;
  /** Who decoded it: sharp, the libjpeg addon, or the addon in strips overlapped with the resize. */
  decoder: Decoder | "libjpeg-strips";
}

/**
 * Bytes to the model's CHW tensor: decode (shrinking large JPEGs if allowed), exact LANCZOS, /255. Throws MLError.
 * The LANCZOS is the WebAssembly one: the same bytes as shared/lanczos.ts, 11-15x faster. A JPEG the libjpeg addon
 * takes is decoded in strips on libuv's thread pool while this thread resamples the strips before it, so the two
 * overlap: then `decode` is the time until the last strip arrived and `resize` what followed it.
 */
export async function preprocessPhoto(bytes: Uint8Array, size: number, limits: DecodeLimits, shrink: boolean): Promise<PreprocessedPhoto> {
  const t0 = performance.now();
  const checked = checkEncoded(bytes, limits);
  const options = shrink ? { shrinkFor: size } : {};
  // A photo already the model's size needs no resize, so nothing to overlap with its decode.
  const modelSized = checked.header.width === size && checked.header.height === size;
  const opened = modelSized ? undefined : openJpegStrips(bytes, checked, options);
  const piped = opened && (await resizeStrips(opened.strips, size));
  if (piped && piped !== "declined") {
    const t3 = performance.now();
    const tensor = toChw({ width: size, height: size, channels: 3, data: piped.pixels });
    const ms = { decode: piped.decoded - t0, resize: t3 - piped.decoded, tensor: performance.now() - t3 };
    return { tensor, ms, path: opened.path, decoder: "libjpeg-strips" };
  }
  // Declined partway (libjpeg warned): sharp decides, as for any file the addon declines.
  const { image, path, decoder } = await decodeChecked(
    bytes,
    checked,
    limits,
    piped === "declined" ? { ...options, decoder: "sharp" } : options,
  );
  const t1 = performance.now();
  const fitted = fitToModel(image, size, resizeLanczosSimd);
  const t2 = performance.now();
  const tensor = toChw(fitted);
  const t3 = performance.now();
  return { tensor, ms: { decode: t1 - t0, resize: t2 - t1, tensor: t3 - t2 }, path, decoder };
}

/**
 * About 1 MB of rows a strip (4 strips for a 1080 px photo). Most of what the strips save is the full-size image
 * itself: rows go straight into the kernel's memory, where the whole-image path allocates a 3.5 MB buffer and copies
 * it in. The overlap adds a little on two cores; smaller strips lost it again to the hops to the thread pool
 * (1080 px in 16-row strips: 10.2 ms, in 240-row strips: 7.1 ms, in one: 6.1 to 8.1 ms, on a noisy machine).
 */
const STRIP_BYTES = 1 << 20;

/**
 * Decodes `strips` into the WebAssembly kernel's memory and resamples each strip while the next is decoded.
 * "declined" when the addon declined the file partway; undefined when the kernel cannot take the image now. The
 * strips are closed either way.
 */
async function resizeStrips(strips: JpegStrips, size: number): Promise<{ pixels: Uint8Array; decoded: number } | "declined" | undefined> {
  const { width, height } = strips;
  const resize = streamingResize(width, height, size, size);
  if (!resize) {
    strips.close();
    return undefined;
  }
  const rows = Math.max(16, Math.floor(STRIP_BYTES / (width * 3)));
  let done = 0;
  let decoded = 0;
  const readFrom = (row: number) => {
    const count = Math.min(rows, height - row);
    return strips.read(resize.rows(row, count), count);
  };
  let pending: Promise<number | undefined> | undefined = readFrom(0);
  try {
    while (done < height) {
      const got = await pending;
      pending = undefined;
      // Declined partway (closed by the addon), or stopped short without a warning (never seen; never loop on it).
      if (!got) return "declined";
      const from = done;
      done += got;
      if (done < height) pending = readFrom(done);
      else decoded = performance.now();
      resize.horizontal(from, done);
    }
    return { pixels: resize.finish(), decoded };
  } catch (e) {
    // A read still running writes into the kernel's memory: let it end before that memory is handed on.
    await pending?.catch(() => undefined);
    throw e;
  } finally {
    strips.close();
    resize.release();
  }
}

/**
 * True when the header says the photo is already the model's size (a crop
 * made on the device): then there is no resize, the decode runs off the
 * event loop (on libuv's thread pool, or in libvips' threads), and the little
 * JavaScript left is cheaper than a hop to a worker and back. Unreadable headers say false and go the usual way.
 */
export function isModelSized(bytes: Uint8Array, size: number): boolean {
  const format = sniffFormat(bytes);
  if (!format) return false;
  try {
    const { width, height } = readHeader(bytes, format);
    return width === size && height === size;
  } catch {
    return false;
  }
}
