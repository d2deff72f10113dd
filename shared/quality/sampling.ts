/** Small images the checks work on: grey working images, summed-area tables, the resampled nose region. */
import type { Frame, NoseBox } from "./types.js";

export interface Grey {
  w: number;
  h: number;
  v: Float32Array;
}

/** Luma (BT.601) box-averaged over factor x factor blocks; the ragged edge is dropped. */
export function boxGrey(f: Frame, factor: number): Grey {
  const w = Math.max(1, Math.floor(f.width / factor));
  const h = Math.max(1, Math.floor(f.height / factor));
  const fx = Math.min(factor, f.width);
  const fy = Math.min(factor, f.height);
  const v = new Float32Array(w * h);
  const d = f.data;
  const ch = f.channels;
  for (let y = 0; y < h * fy; y++) {
    const row = ((y / fy) | 0) * w;
    let p = y * f.width * ch;
    for (let ox = 0; ox < w; ox++) {
      let s = 0;
      for (let k = 0; k < fx; k++, p += ch) s += 77 * d[p] + 150 * d[p + 1] + 29 * d[p + 2];
      v[row + ox] += s;
    }
  }
  const scale = 1 / (256 * fx * fy);
  for (let i = 0; i < v.length; i++) v[i] *= scale;
  return { w, h, v };
}

/** 3x3 box blur, edges clamped. */
export function blur3(g: Grey): Grey {
  const { w, h } = g;
  const tmp = new Float32Array(w * h);
  const out = new Float32Array(w * h);
  for (let y = 0; y < h; y++) {
    const r = y * w;
    for (let x = 0; x < w; x++) {
      tmp[r + x] = g.v[r + Math.max(0, x - 1)] + g.v[r + x] + g.v[r + Math.min(w - 1, x + 1)];
    }
  }
  for (let y = 0; y < h; y++) {
    const a = Math.max(0, y - 1) * w;
    const b = y * w;
    const c = Math.min(h - 1, y + 1) * w;
    for (let x = 0; x < w; x++) out[b + x] = (tmp[a + x] + tmp[b + x] + tmp[c + x]) / 9;
  }
  return { w, h, v: out };
}

export function percentile(hist: Uint32Array, n: number, q: number): number {
  const target = q * n;
  let acc = 0;
  for (let i = 0; i < hist.length; i++) {
    acc += hist[i];
    if (acc > target) return i;
  }
  return hist.length - 1;
}

/** Summed-area table, (w + 1) x (h + 1). */
export function integral(g: Grey): Float64Array {
  const W = g.w + 1;
  const s = new Float64Array(W * (g.h + 1));
  for (let y = 0; y < g.h; y++) {
    let row = 0;
    for (let x = 0; x < g.w; x++) {
      row += g.v[y * g.w + x];
      s[(y + 1) * W + x + 1] = s[y * W + x + 1] + row;
    }
  }
  return s;
}

export function boxSum(s: Float64Array, w: number, x0: number, y0: number, x1: number, y1: number): number {
  const W = w + 1;
  return s[y1 * W + x1] - s[y0 * W + x1] - s[y1 * W + x0] + s[y0 * W + x0];
}

// ---------------------------------------------------------------- nose region measures

/** The nose region resampled by box-averaging to about `width` px wide. */
export interface Region {
  w: number;
  h: number;
  grey: Float32Array;
  /** (max - min) / max of the averaged RGB. */
  saturation: Float32Array;
  /** The largest of the averaged R, G, B. */
  peak: Float32Array;
}

export function clipBox(b: NoseBox, width: number, height: number): NoseBox {
  const x0 = Math.max(0, Math.min(width - 1, Math.round(b.x)));
  const y0 = Math.max(0, Math.min(height - 1, Math.round(b.y)));
  const x1 = Math.max(x0 + 1, Math.min(width, Math.round(b.x + b.w)));
  const y1 = Math.max(y0 + 1, Math.min(height, Math.round(b.y + b.h)));
  return { x: x0, y: y0, w: x1 - x0, h: y1 - y0 };
}

export function sampleRegion(f: Frame, box: NoseBox, width: number): Region {
  const k = Math.max(1, Math.round(box.w / width));
  const w = Math.max(1, Math.floor(box.w / k));
  const h = Math.max(1, Math.floor(box.h / k));
  const r = new Float32Array(w * h);
  const gr = new Float32Array(w * h);
  const bl = new Float32Array(w * h);
  const d = f.data;
  const ch = f.channels;
  for (let y = 0; y < h * k; y++) {
    const row = ((y / k) | 0) * w;
    let p = ((box.y + y) * f.width + box.x) * ch;
    for (let ox = 0; ox < w; ox++) {
      let sr = 0;
      let sg = 0;
      let sb = 0;
      for (let j = 0; j < k; j++, p += ch) {
        sr += d[p];
        sg += d[p + 1];
        sb += d[p + 2];
      }
      r[row + ox] += sr;
      gr[row + ox] += sg;
      bl[row + ox] += sb;
    }
  }
  const grey = new Float32Array(w * h);
  const saturation = new Float32Array(w * h);
  const peak = new Float32Array(w * h);
  const n = k * k;
  for (let i = 0; i < w * h; i++) {
    const R = r[i] / n;
    const G = gr[i] / n;
    const B = bl[i] / n;
    grey[i] = 0.299 * R + 0.587 * G + 0.114 * B;
    const max = Math.max(R, G, B);
    saturation[i] = max > 0 ? (max - Math.min(R, G, B)) / max : 0;
    peak[i] = max;
  }
  return { w, h, grey, saturation, peak };
}
