/**
 * shared/lanczos.ts's `resizeLanczos` (Pillow 9.4's LANCZOS, bit for bit) with both passes in WebAssembly SIMD
 * (lanczos-simd.wat): the same coefficients and the same integer arithmetic, so the same bytes, several times
 * faster than the JavaScript loops.
 *
 * The module is compiled and instantiated once per thread, synchronously, when this file is first imported (it is
 * 2.4 kB), and keeps its memory between calls: a call copies the rows it needs and the coefficient tables in, runs
 * the passes and copies the result out. Memory only grows, so a thread keeps about the size of the largest image it
 * has resized (a 4032x3024 RGB photo: about 39 MB). Engines without SIMD get `resizeLanczos` itself.
 */
import { cachedCoefficients, resizeLanczos, type AxisCoefficients, type Raster } from "../../shared/lanczos.js";
import { lanczosSimdWasm } from "./lanczos-simd-wasm.js";

/**
 * The part of the WebAssembly JavaScript API used here. tsconfig.build.json's lib (ES2023, no DOM) does not
 * declare it, though every Node has it.
 */
interface WasmApi {
  validate(bytes: Uint8Array): boolean;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { exports: unknown };
}
const wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

/** Whether this engine runs the SIMD module; without it `resizeLanczosSimd` is `resizeLanczos`. */
export const simdAvailable: boolean = wasm.validate(lanczosSimdWasm);

/** The module's exports; offsets are byte offsets into `memory`. See lanczos-simd.wat for each pass's contract. */
interface Kernel {
  memory: { readonly buffer: ArrayBuffer; grow(pages: number): number };
  horizontal(
    src: number,
    stride: number,
    channels: number,
    rows: number,
    outW: number,
    bounds: number,
    weights: number,
    kstride: number,
    bands: number,
    dst: number,
  ): void;
  vertical(src: number, stride: number, outH: number, bounds: number, weights: number, ksize: number, rowShift: number, dst: number): void;
}

const kernel: Kernel | null = simdAvailable ? (new wasm.Instance(new wasm.Module(lanczosSimdWasm)).exports as Kernel) : null;

/**
 * Bytes kept free after each area: the horizontal pass reads up to 15 bytes past a window (4 pixels a load,
 * weighted 0 there) and stores 4 bytes a pixel whatever the bands.
 */
const PAD = 16;
const PAGE = 65536;

/**
 * The horizontal weights with each pixel's row padded with zeros to a multiple of 4, as the 4-tap loads need.
 * Kept beside the coefficient cache's tables (the same object comes back for the same sizes).
 */
const padded = new WeakMap<AxisCoefficients, { kstride: number; weights: Int32Array }>();

function paddedWeights(c: AxisCoefficients): { kstride: number; weights: Int32Array } {
  let p = padded.get(c);
  if (!p) {
    const kstride = (c.ksize + 3) & ~3;
    const weights = new Int32Array(c.outSize * kstride);
    for (let i = 0; i < c.outSize; i++) weights.set(c.weights.subarray(i * c.ksize, (i + 1) * c.ksize), i * kstride);
    p = { kstride, weights };
    padded.set(c, p);
  }
  return p;
}

/**
 * `resizeLanczos` with the same arguments, checks and result: Pillow's LANCZOS on an 8-bit image, the first `bands`
 * samples of each pixel kept.
 */
export function resizeLanczosSimd(src: Raster, outWidth: number, outHeight: number, bands: number = src.channels): Uint8Array {
  const { width, height, channels } = src;
  const needH = outWidth !== width;
  const needV = outHeight !== height;
  // The JavaScript does: engines without SIMD; more than 4 samples a pixel (a 16-byte load holds 4 pixels of at
  // most 4), which no decoder here produces; and the same-size copy, where there is nothing to compute. It also
  // throws the errors for bad arguments.
  if (!kernel || channels > 4 || (!needH && !needV)) return resizeLanczos(src, outWidth, outHeight, bands);
  const data = new Uint8Array(src.data.buffer, src.data.byteOffset, src.data.length);
  if (data.length < width * height * channels) throw new RangeError("raster data shorter than its size");
  if (bands < 1 || bands > channels) throw new RangeError(`cannot keep ${bands} of ${channels} channels`);
  const horiz = cachedCoefficients(width, outWidth);
  const vert = cachedCoefficients(height, outHeight);

  // Only the rows the vertical pass reads, as Pillow does (all of them with no vertical pass).
  const first = needV ? vert.bounds[0] : 0;
  const last = needV ? vert.bounds[outHeight * 2 - 2] + vert.bounds[outHeight * 2 - 1] : height;
  const rows = last - first;
  const rowBytes = width * channels;
  // Without a horizontal pass the vertical one filters every sample of the pixel; `bands` are picked at the end.
  const outBytes = needV ? (needH ? outWidth * bands : rowBytes) * outHeight : outWidth * bands * height;

  let top = 0;
  const place = (bytes: number): number => {
    const at = top;
    top += (bytes + PAD + 15) & ~15;
    return at;
  };
  const h = needH ? paddedWeights(horiz) : null;
  const hBounds = h ? place(horiz.bounds.byteLength) : 0;
  const hWeights = h ? place(h.weights.byteLength) : 0;
  const vBounds = needV ? place(vert.bounds.byteLength) : 0;
  const vWeights = needV ? place(vert.weights.byteLength) : 0;
  const srcAt = place(rows * rowBytes);
  const midAt = needH && needV ? place(outWidth * bands * rows) : 0;
  const outAt = place(outBytes);

  const { memory } = kernel;
  if (memory.buffer.byteLength < top) {
    try {
      memory.grow(Math.ceil((top - memory.buffer.byteLength) / PAGE));
    } catch {
      // Past what the engine gives one module (4 GiB at most): the JavaScript still can.
      return resizeLanczos(src, outWidth, outHeight, bands);
    }
  }
  const buf = memory.buffer;
  const heap = new Uint8Array(buf);
  heap.set(data.subarray(first * rowBytes, last * rowBytes), srcAt);
  if (h) {
    new Int32Array(buf, hBounds, horiz.bounds.length).set(horiz.bounds);
    new Int32Array(buf, hWeights, h.weights.length).set(h.weights);
  }
  if (needV) {
    new Int32Array(buf, vBounds, vert.bounds.length).set(vert.bounds);
    new Int32Array(buf, vWeights, vert.weights.length).set(vert.weights);
  }

  if (h) {
    const dst = needV ? midAt : outAt;
    kernel.horizontal(srcAt, rowBytes, channels, rows, outWidth, hBounds, hWeights, h.kstride, bands, dst);
  }
  if (needV) {
    const from = needH ? midAt : srcAt;
    const stride = needH ? outWidth * bands : rowBytes;
    kernel.vertical(from, stride, outHeight, vBounds, vWeights, vert.ksize, first, outAt);
  }
  if (needH || bands === channels) return heap.slice(outAt, outAt + outBytes);
  // Vertical pass only, fewer bands than channels.
  const out = new Uint8Array(width * outHeight * bands);
  for (let i = outAt, o = 0; o < out.length; i += channels) {
    for (let b = 0; b < bands; b++) out[o++] = heap[i + b];
  }
  return out;
}
