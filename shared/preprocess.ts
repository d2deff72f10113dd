/**
 * Pixels to model input, matching the old Python server's preprocessing:
 *
 *   img = img.convert("RGB")
 *   img = img.resize((S, S), Image.LANCZOS)        # aspect not kept
 *   arr = np.asarray(img, np.float32) / 255
 *   arr.transpose(2, 0, 1)                          # CHW
 *
 * Decoding, EXIF orientation and the mode conversions that PIL's `convert`
 * does for grey, palette, 16-bit and CMYK sources happen before this, where
 * the bytes are decoded (server/image/decode.ts); a browser canvas hands over
 * RGBA ImageData directly. Pure and isomorphic.
 */
import { resizeLanczos, type Raster } from "./lanczos.js";

/**
 * Pillow's LANCZOS: `resizeLanczos`, or a faster implementation that gives the
 * same bytes (the server's WebAssembly one, server/image/lanczos-simd.ts).
 */
export type ResizeLanczos = (src: Raster, outWidth: number, outHeight: number, bands?: number) => Uint8Array;

/**
 * Interleaved 8-bit RGB or RGBA pixels. Alpha is ignored, as PIL's
 * `convert("RGB")` drops it without compositing onto a background.
 */
export interface PixelImage {
  width: number;
  height: number;
  channels: 3 | 4;
  data: Uint8Array | Uint8ClampedArray;
}

/** The square RGB image the model sees, 8-bit, interleaved. */
export function resizeForModel(img: PixelImage, size: number, resize: ResizeLanczos = resizeLanczos): Uint8Array {
  checkImage(img);
  if (!(Number.isInteger(size) && size > 0)) throw new RangeError(`bad model input size ${size}`);
  return resize(img, size, size, 3);
}

/**
 * The image at the model's size: resized with the exact LANCZOS, or the
 * image itself when it already has that size (Pillow's resize then returns
 * a copy, so the pixels are the same and the copy can be skipped).
 */
export function fitToModel(img: PixelImage, size: number, resize: ResizeLanczos = resizeLanczos): PixelImage {
  checkImage(img);
  if (img.width === size && img.height === size) return img;
  return { width: size, height: size, channels: 3, data: resizeForModel(img, size, resize) };
}

/** CHW float32 tensor data of length 3 * size * size with values in [0, 1]. */
export function toModelInput(img: PixelImage, size: number): Float32Array {
  return toChw(fitToModel(img, size));
}

/** A square image at the model's size (as `fitToModel` returns) to CHW float32 in [0, 1]; alpha is dropped. */
export function toChw(img: PixelImage): Float32Array {
  checkImage(img);
  if (img.width !== img.height) throw new RangeError(`expected a square image, got ${img.width}x${img.height}`);
  const out = new Float32Array(3 * img.width * img.height);
  writeChw(img, out, 0);
  return out;
}

/** NCHW float32 tensor data for a batch of images, one after another. */
export function toModelBatch(images: readonly PixelImage[], size: number): Float32Array {
  const plane = 3 * size * size;
  const out = new Float32Array(images.length * plane);
  images.forEach((img, i) => writeChw(fitToModel(img, size), out, i * plane));
  return out;
}

// v / 255 in float64 then rounded to float32 equals numpy's float32
// division (float64 has more than twice float32's precision); a table of
// the 256 results turns a division per sample into a lookup.
const UNIT = Float32Array.from({ length: 256 }, (_, v) => v / 255);

function writeChw(img: PixelImage, out: Float32Array, offset: number): void {
  const n = img.width * img.height;
  const { data, channels } = img;
  const g = offset + n;
  const b = offset + 2 * n;
  for (let i = 0, p = 0; i < n; i++, p += channels) {
    out[offset + i] = UNIT[data[p]];
    out[g + i] = UNIT[data[p + 1]];
    out[b + i] = UNIT[data[p + 2]];
  }
}

function checkImage(img: PixelImage): void {
  const { width, height, channels, data } = img;
  if (!(Number.isInteger(width) && width > 0 && Number.isInteger(height) && height > 0)) {
    throw new RangeError(`bad image size ${width}x${height}`);
  }
  if (channels !== 3 && channels !== 4) throw new RangeError(`expected 3 or 4 channels, got ${channels}`);
  if (data.length !== width * height * channels) {
    throw new RangeError(`pixel data has ${data.length} bytes, expected ${width * height * channels}`);
  }
}
