import { fitToModel, toChw } from "../../shared/preprocess.js";
import { decodeImage, readHeader, sniffFormat, type DecodeLimits, type DecodePath } from "./decode.js";
import { resizeLanczosSimd } from "./lanczos-simd.js";

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
}

/**
 * Bytes to the model's CHW tensor: decode (shrinking large JPEGs if allowed), exact LANCZOS, /255. Throws MLError.
 * The LANCZOS is the WebAssembly one: the same bytes as shared/lanczos.ts, 11-15x faster.
 */
export async function preprocessPhoto(bytes: Uint8Array, size: number, limits: DecodeLimits, shrink: boolean): Promise<PreprocessedPhoto> {
  const t0 = performance.now();
  const { image, path } = await decodeImage(bytes, limits, shrink ? { shrinkFor: size } : {});
  const t1 = performance.now();
  const fitted = fitToModel(image, size, resizeLanczosSimd);
  const t2 = performance.now();
  const tensor = toChw(fitted);
  const t3 = performance.now();
  return { tensor, ms: { decode: t1 - t0, resize: t2 - t1, tensor: t3 - t2 }, path };
}

/**
 * True when the header says the photo is already the model's size (a crop
 * made on the device): then there is no resize, the decode runs in libvips'
 * own threads, and the little JavaScript left is cheaper than a hop to a
 * worker and back. Unreadable headers say false and go the usual way.
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
