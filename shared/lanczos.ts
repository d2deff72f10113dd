/**
 * Pillow's LANCZOS resampling for 8-bit images, reproduced bit for bit.
 *
 * The old Python server resized with `Image.resize((S, S), Image.LANCZOS)`
 * (Pillow 9.4, libImaging/Resample.c). Embeddings are only comparable with
 * the ones already stored if the model sees the same pixels, so this follows
 * the C code step by step rather than "a Lanczos filter":
 *
 * - separable: a horizontal pass over the rows the vertical pass will read,
 *   then a vertical pass;
 * - the filter support (3) is scaled by the downscale factor, never below 1;
 * - each output sample's input window is rounded exactly as
 *   `precompute_coeffs` does, and its weights are normalised to sum to 1;
 * - weights become fixed-point integers with PRECISION_BITS = 32 - 8 - 2,
 *   each pass accumulates from a rounding bias of 1/2 and clips to 0..255,
 *   so the intermediate image is rounded to 8 bits like Pillow's.
 *
 * Pure and isomorphic: typed arrays in, typed arrays out.
 */

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 1 << PRECISION_BITS;
const HALF = 1 << (PRECISION_BITS - 1);

/** Pillow's support radius for LANCZOS. */
export const LANCZOS_SUPPORT = 3;

function sinc(x: number): number {
  if (x === 0) return 1;
  x = x * Math.PI;
  return Math.sin(x) / x;
}

/** Pillow's truncated sinc, `lanczos_filter`; the window is half-open. */
export function lanczos(x: number): number {
  if (-3 <= x && x < 3) return sinc(x) * sinc(x / 3);
  return 0;
}

/**
 * The per-output-sample input windows and fixed-point weights along one axis.
 * Output sample i reads `bounds[2i + 1]` inputs starting at `bounds[2i]`,
 * weighted by `weights[i * ksize ...]`.
 */
export interface AxisCoefficients {
  inSize: number;
  outSize: number;
  ksize: number;
  bounds: Int32Array;
  weights: Int32Array;
}

/**
 * `precompute_coeffs` followed by `normalize_coeffs_8bpc`, for the whole
 * input range (Pillow's default box). Float64 arithmetic in the same order as
 * the C code so that window edges and rounding land on the same integers.
 */
export function axisCoefficients(inSize: number, outSize: number): AxisCoefficients {
  if (!(Number.isInteger(inSize) && inSize > 0 && Number.isInteger(outSize) && outSize > 0)) {
    throw new RangeError(`bad resample sizes ${inSize} -> ${outSize}`);
  }
  // Pillow passes the box as C floats; whole-image boxes are exact integers.
  const in0 = 0;
  const in1 = inSize;
  const scale = (in1 - in0) / outSize;
  const filterscale = scale < 1 ? 1 : scale;
  const support = LANCZOS_SUPPORT * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const weights = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  const ss = 1 / filterscale;
  for (let xx = 0; xx < outSize; xx++) {
    const center = in0 + (xx + 0.5) * scale;
    // C casts with (int), which truncates toward zero.
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const w = lanczos((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    const base = xx * ksize;
    for (let x = 0; x < xmax; x++) {
      const v = ww !== 0 ? k[x] / ww : k[x];
      weights[base + x] = v < 0 ? Math.trunc(-0.5 + v * ONE) : Math.trunc(0.5 + v * ONE);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { inSize, outSize, ksize, bounds, weights };
}

// Coefficient tables depend only on (inSize, outSize); photos from one camera
// share them, so keep the recent ones.
const CACHE_LIMIT = 32;
const cache = new Map<string, AxisCoefficients>();

export function cachedCoefficients(inSize: number, outSize: number): AxisCoefficients {
  const key = `${inSize}:${outSize}`;
  let c = cache.get(key);
  if (c) {
    cache.delete(key);
  } else {
    c = axisCoefficients(inSize, outSize);
    if (cache.size >= CACHE_LIMIT) cache.delete(cache.keys().next().value as string);
  }
  cache.set(key, c);
  return c;
}

/** Interleaved 8-bit pixels; `channels` samples per pixel. */
export interface Raster {
  width: number;
  height: number;
  channels: number;
  data: Uint8Array | Uint8ClampedArray;
}

/** Pillow's `clip8`: drop the fixed-point fraction, clamp to a byte. */
function clip8(ss: number): number {
  const v = ss >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/**
 * Horizontal pass over rows [rowFirst, rowFirst + rows) of `src`, reading the
 * first `bands` samples of each pixel; writes `bands` samples per pixel.
 */
function resampleHorizontal(
  src: Uint8Array,
  srcWidth: number,
  srcChannels: number,
  rowFirst: number,
  rows: number,
  bands: number,
  c: AxisCoefficients,
): Uint8Array {
  const outW = c.outSize;
  const out = new Uint8Array(outW * rows * bands);
  const { ksize, bounds, weights } = c;
  const srcStride = srcWidth * srcChannels;
  let o = 0;
  for (let yy = 0; yy < rows; yy++) {
    const rowBase = (yy + rowFirst) * srcStride;
    for (let xx = 0; xx < outW; xx++) {
      const xmin = bounds[xx * 2];
      const xmax = bounds[xx * 2 + 1];
      const kb = xx * ksize;
      let p = rowBase + xmin * srcChannels;
      if (bands === 3) {
        // The common case, one sweep for all three bands as Pillow does.
        let s0 = HALF;
        let s1 = HALF;
        let s2 = HALF;
        for (let x = 0; x < xmax; x++, p += srcChannels) {
          const w = weights[kb + x];
          s0 += src[p] * w;
          s1 += src[p + 1] * w;
          s2 += src[p + 2] * w;
        }
        out[o++] = clip8(s0);
        out[o++] = clip8(s1);
        out[o++] = clip8(s2);
      } else {
        for (let b = 0; b < bands; b++) {
          let ss = HALF;
          let q = p + b;
          for (let x = 0; x < xmax; x++, q += srcChannels) ss += src[q] * weights[kb + x];
          out[o++] = clip8(ss);
        }
      }
    }
  }
  return out;
}

/** Vertical pass; `src` holds `srcChannels` samples per pixel, `width` pixels a row. */
function resampleVertical(
  src: Uint8Array,
  width: number,
  srcChannels: number,
  bands: number,
  rowShift: number,
  c: AxisCoefficients,
): Uint8Array {
  const outH = c.outSize;
  const out = new Uint8Array(width * outH * bands);
  const { ksize, bounds, weights } = c;
  const stride = width * srcChannels;
  let o = 0;
  for (let yy = 0; yy < outH; yy++) {
    const ymin = bounds[yy * 2] - rowShift;
    const ymax = bounds[yy * 2 + 1];
    const kb = yy * ksize;
    for (let xx = 0; xx < width; xx++) {
      const pb = ymin * stride + xx * srcChannels;
      if (bands === 3) {
        let s0 = HALF;
        let s1 = HALF;
        let s2 = HALF;
        for (let y = 0, p = pb; y < ymax; y++, p += stride) {
          const w = weights[kb + y];
          s0 += src[p] * w;
          s1 += src[p + 1] * w;
          s2 += src[p + 2] * w;
        }
        out[o++] = clip8(s0);
        out[o++] = clip8(s1);
        out[o++] = clip8(s2);
      } else {
        for (let b = 0; b < bands; b++) {
          let ss = HALF;
          for (let y = 0, p = pb + b; y < ymax; y++, p += stride) ss += src[p] * weights[kb + y];
          out[o++] = clip8(ss);
        }
      }
    }
  }
  return out;
}

/**
 * Resize with Pillow's LANCZOS filter, exactly as `Image.resize(..., LANCZOS)`
 * does on an 8-bit image. Every channel is filtered independently. With
 * `bands` smaller than `channels` only the first `bands` samples of each pixel
 * are kept (RGBA in, RGB out). Returns `bands` interleaved samples per pixel.
 */
export function resizeLanczos(src: Raster, outWidth: number, outHeight: number, bands: number = src.channels): Uint8Array {
  const { width, height, channels } = src;
  // One concrete array type keeps the inner loops monomorphic; a view, no copy.
  const data = new Uint8Array(src.data.buffer, src.data.byteOffset, src.data.length);
  if (data.length < width * height * channels) throw new RangeError("raster data shorter than its size");
  if (bands < 1 || bands > channels) throw new RangeError(`cannot keep ${bands} of ${channels} channels`);
  // Pillow's `need_horizontal`/`need_vertical` with the default box.
  const needH = outWidth !== width;
  const needV = outHeight !== height;
  const horiz = cachedCoefficients(width, outWidth);
  const vert = cachedCoefficients(height, outHeight);
  let cur: Uint8Array = data;
  let curChannels = channels;
  let rowShift = 0;
  if (needH) {
    // Only the rows the vertical pass will read, as Pillow does.
    const first = vert.bounds[0];
    const last = vert.bounds[outHeight * 2 - 2] + vert.bounds[outHeight * 2 - 1];
    cur = needV
      ? resampleHorizontal(data, width, channels, first, last - first, bands, horiz)
      : resampleHorizontal(data, width, channels, 0, height, bands, horiz);
    curChannels = bands;
    rowShift = needV ? first : 0;
  }
  if (needV) {
    return resampleVertical(cur, outWidth, curChannels, bands, rowShift, vert);
  }
  if (needH) return cur;
  // Same size: Pillow copies.
  const out = new Uint8Array(width * height * bands);
  for (let i = 0, o = 0; i < width * height * channels; i += channels) {
    for (let b = 0; b < bands; b++) out[o++] = data[i + b];
  }
  return out;
}
