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

/** Where one resize's tables, rows and results lie in the kernel's memory. */
interface Layout {
  horiz: AxisCoefficients;
  vert: AxisCoefficients;
  h: { kstride: number; weights: Int32Array } | null;
  /** The source rows the vertical pass reads: [first, last). */
  first: number;
  last: number;
  rowBytes: number;
  outBytes: number;
  hBounds: number;
  hWeights: number;
  vBounds: number;
  vWeights: number;
  /** Source row `srcRow0` is at `srcAt`. */
  srcAt: number;
  srcRow0: number;
  midAt: number;
  outAt: number;
}

/**
 * Lays out a resize in the kernel's memory, grows it and writes the coefficient tables; undefined when the memory
 * cannot grow that far. `allRows` keeps room for every source row, not only those the vertical pass reads.
 */
function layOut(
  kernel: Kernel,
  width: number,
  height: number,
  channels: number,
  outWidth: number,
  outHeight: number,
  bands: number,
  allRows: boolean,
): Layout | undefined {
  const needH = outWidth !== width;
  const needV = outHeight !== height;
  const horiz = cachedCoefficients(width, outWidth);
  const vert = cachedCoefficients(height, outHeight);
  // Only the rows the vertical pass reads, as Pillow does (all of them with no vertical pass).
  const first = needV ? vert.bounds[0] : 0;
  const last = needV ? vert.bounds[outHeight * 2 - 2] + vert.bounds[outHeight * 2 - 1] : height;
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
  const srcRow0 = allRows ? 0 : first;
  const srcAt = place(((allRows ? height : last) - srcRow0) * rowBytes);
  const midAt = needH && needV ? place(outWidth * bands * (last - first)) : 0;
  const outAt = place(outBytes);

  const { memory } = kernel;
  if (memory.buffer.byteLength < top) {
    try {
      memory.grow(Math.ceil((top - memory.buffer.byteLength) / PAGE));
    } catch {
      // Past what the engine gives one module (4 GiB at most).
      return undefined;
    }
  }
  const buf = memory.buffer;
  if (h) {
    new Int32Array(buf, hBounds, horiz.bounds.length).set(horiz.bounds);
    new Int32Array(buf, hWeights, h.weights.length).set(h.weights);
  }
  if (needV) {
    new Int32Array(buf, vBounds, vert.bounds.length).set(vert.bounds);
    new Int32Array(buf, vWeights, vert.weights.length).set(vert.weights);
  }
  return { horiz, vert, h, first, last, rowBytes, outBytes, hBounds, hWeights, vBounds, vWeights, srcAt, srcRow0, midAt, outAt };
}

/** The horizontal pass over source rows [from, to), within those the vertical pass reads, into the middle rows. */
function horizontalRows(kernel: Kernel, l: Layout, channels: number, outWidth: number, bands: number, from: number, to: number): void {
  const a = Math.max(from, l.first);
  const b = Math.min(to, l.last);
  if (b <= a || !l.h) return;
  const src = l.srcAt + (a - l.srcRow0) * l.rowBytes;
  kernel.horizontal(
    src,
    l.rowBytes,
    channels,
    b - a,
    outWidth,
    l.hBounds,
    l.hWeights,
    l.h.kstride,
    bands,
    l.midAt + (a - l.first) * outWidth * bands,
  );
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
  const l = layOut(kernel, width, height, channels, outWidth, outHeight, bands, false);
  // Past what the engine gives one module: the JavaScript still can.
  if (!l) return resizeLanczos(src, outWidth, outHeight, bands);
  const heap = new Uint8Array(kernel.memory.buffer);
  heap.set(data.subarray(l.first * l.rowBytes, l.last * l.rowBytes), l.srcAt);

  if (needH && needV) horizontalRows(kernel, l, channels, outWidth, bands, l.first, l.last);
  else if (needH) kernel.horizontal(l.srcAt, l.rowBytes, channels, height, outWidth, l.hBounds, l.hWeights, l.h!.kstride, bands, l.outAt);
  if (needV) {
    const from = needH ? l.midAt : l.srcAt;
    const stride = needH ? outWidth * bands : l.rowBytes;
    kernel.vertical(from, stride, outHeight, l.vBounds, l.vWeights, l.vert.ksize, l.first, l.outAt);
  }
  if (needH || bands === channels) return heap.slice(l.outAt, l.outAt + l.outBytes);
  // Vertical pass only, fewer bands than channels.
  const out = new Uint8Array(width * outHeight * bands);
  for (let i = l.outAt, o = 0; o < out.length; i += channels) {
    for (let b = 0; b < bands; b++) out[o++] = heap[i + b];
  }
  return out;
}

/** A resize fed strip by strip; see streamingResize. */
export interface StreamingResize {
  /** Where source rows [from, from + count) go: a view on the kernel's memory, valid until `release`. */
  rows(from: number, count: number): Uint8Array;
  /** The horizontal pass over source rows [from, to), once they are all written. */
  horizontal(from: number, to: number): void;
  /** The vertical pass, once every row went through `horizontal`: the same bytes as resizeLanczosSimd. */
  finish(): Uint8Array;
  /** Gives the instance back for the next streaming resize; nothing may write to `rows` views after it. */
  release(): void;
}

/**
 * The streaming resizes' own instance of the module: resizeLanczosSimd may run on the same thread while strips are
 * still being decoded into this one's memory, and must neither overwrite those rows nor grow (and so move) that
 * memory under the decoder. One streaming resize at a time per thread.
 */
let streamKernel: Kernel | undefined;
let streaming = false;

/**
 * resizeLanczosSimd for a source whose rows arrive in order (a decoder's strips): each strip's horizontal pass can
 * run while the next strip is decoded on another thread, and the rows are decoded straight into the kernel's
 * memory. Each output row of Pillow's horizontal pass depends on its source row only, so the bytes are the same.
 * Only where both passes run on RGB pixels; undefined otherwise, while another streaming resize on this thread is
 * not released, or where the memory cannot grow. Like the other instance, its memory only grows: a thread keeps
 * about the size of the largest photo it has streamed.
 */
export function streamingResize(width: number, height: number, outWidth: number, outHeight: number): StreamingResize | undefined {
  if (!kernel || streaming || outWidth === width || outHeight === height) return undefined;
  streamKernel ??= new wasm.Instance(new wasm.Module(lanczosSimdWasm)).exports as Kernel;
  const k = streamKernel;
  const l = layOut(k, width, height, 3, outWidth, outHeight, 3, true);
  if (!l) return undefined;
  streaming = true;
  const heap = new Uint8Array(k.memory.buffer);
  let released = false;
  return {
    rows: (from, count) => heap.subarray(l.srcAt + from * l.rowBytes, l.srcAt + Math.min(from + count, height) * l.rowBytes),
    horizontal: (from, to) => horizontalRows(k, l, 3, outWidth, 3, from, to),
    finish: () => {
      k.vertical(l.midAt, outWidth * 3, outHeight, l.vBounds, l.vWeights, l.vert.ksize, l.first, l.outAt);
      return heap.slice(l.outAt, l.outAt + l.outBytes);
    },
    release: () => {
      if (!released) streaming = false;
      released = true;
    },
  };
}
