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
import { resizeLanczos } from "./lanczos.js";

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
export function resizeForModel(img: PixelImage, size: number): Uint8Array {
  checkImage(img);
  if (!(Number.isInteger(size) && size > 0)) throw new RangeError(`bad model input size ${size}`);
  return resizeLanczos(img, size, size, 3);
}

/** CHW float32 tensor data of length 3 * size * size with values in [0, 1]. */
export function toModelInput(img: PixelImage, size: number): Float32Array {
  return toChw(resizeForModel(img, size), size);
}

/** A square interleaved RGB image (as `resizeForModel` returns) to CHW float32 in [0, 1]. */
export function toChw(rgb: Uint8Array, size: number): Float32Array {
  if (rgb.length !== 3 * size * size) throw new RangeError(`expected ${3 * size * size} RGB bytes, got ${rgb.length}`);
  const out = new Float32Array(3 * size * size);
  writeChw(rgb, size, out, 0);
  return out;
}

/** NCHW float32 tensor data for a batch of images, one after another. */
export function toModelBatch(images: readonly PixelImage[], size: number): Float32Array {
  const plane = 3 * size * size;
  const out = new Float32Array(images.length * plane);
  images.forEach((img, i) => writeChw(resizeForModel(img, size), size, out, i * plane));
  return out;
}

function writeChw(rgb: Uint8Array, size: number, out: Float32Array, offset: number): void {
  const n = size * size;
  // v / 255 in float64 then rounded to float32 equals numpy's float32
  // division: float64 has more than twice float32's precision.
  for (let i = 0, p = 0; i < n; i++, p += 3) {
    out[offset + i] = rgb[p] / 255;
    out[offset + n + i] = rgb[p + 1] / 255;
    out[offset + 2 * n + i] = rgb[p + 2] / 255;
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
