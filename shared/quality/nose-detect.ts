/** Finding the nose in a grey working image. */
import { boxSum, integral, percentile, type Grey } from "./sampling.js";

// ---------------------------------------------------------------- nose detector

interface Blob {
  area: number;
  cx: number;
  cy: number;
  mean: number;
  contrast: number;
  x0: number;
  y0: number;
  x1: number;
  y1: number;
}

export interface Nose {
  x: number;
  y: number;
  w: number;
  h: number;
  contrast: number;
}

/**
 * Shares of the way from the frame's darkest level to its median at which
 * dark regions are cut out. Several, because nostrils in black leather only
 * separate from it near the darkest level, while on pink leather they are
 * cleanly cut out anywhere up to half way.
 */
const CUTS = [0.06, 0.12, 0.2, 0.3, 0.42];

/**
 * Finds the nostrils, the most reliable landmark of a nose: two compact,
 * similar, side-by-side regions much darker than the leather around them.
 * The nose box follows from their spacing by the anatomy of the planum:
 * nostril centres are about half the leather's width apart, the leather is
 * about 0.8 times as tall as it is wide, and the nostrils sit at about 0.68 of
 * its height from the top.
 */
export function detectNose(g: Grey, minContrast: number): Nose | undefined {
  const { w, h, v } = g;
  const hist = new Uint32Array(256);
  for (let i = 0; i < v.length; i++) hist[Math.min(255, Math.max(0, Math.round(v[i])))]++;
  const lo = percentile(hist, v.length, 0.002);
  const mid = percentile(hist, v.length, 0.5);
  if (mid - lo < 4) return undefined; // flat frame: nothing to find
  const sat = integral(g);
  const labels = new Int32Array(w * h);
  const stack = new Int32Array(w * h);
  let best: { score: number; a: Blob; b: Blob } | undefined;
  const nostrils: Blob[] = [];
  const leathers: Blob[] = [];
  for (const cut of CUTS) {
    const t = lo + cut * (mid - lo);
    const found = darkBlobs(g, t, sat, labels, stack, minContrast);
    leathers.push(...found.leathers);
    const blobs = found.nostrils;
    nostrils.push(...blobs);
    for (let i = 0; i < blobs.length; i++) {
      for (let j = i + 1; j < blobs.length; j++) {
        const s = pairScore(blobs[i], blobs[j], g);
        if (s > 0 && (!best || s > best.score)) best = { score: s, a: blobs[i], b: blobs[j] };
      }
    }
  }
  // A dark leather, when there is one, outlines the nose better than the
  // anatomy of the nostrils does; it must hold a nostril in its lower part.
  let leather: Blob | undefined;
  for (const l of leathers) {
    const bh = l.y1 - l.y0 + 1;
    const holds = nostrils.some(
      (n) => n.area < 0.2 * l.area && n.mean < l.mean && n.cx > l.x0 && n.cx < l.x1 && n.cy > l.y0 + 0.4 * bh && n.cy < l.y1,
    );
    if (holds && (!leather || l.contrast * Math.sqrt(l.area) > leather.contrast * Math.sqrt(leather.area)))
      leather = l;
  }
  if (leather && (!best || overlaps(leather, best.a) || overlaps(leather, best.b)))
    return {
      x: leather.x0,
      y: leather.y0,
      w: leather.x1 - leather.x0 + 1,
      h: leather.y1 - leather.y0 + 1,
      contrast: leather.contrast,
    };
  if (!best) return undefined;
  const { a, b } = best;
  const d = Math.hypot(b.cx - a.cx, b.cy - a.cy);
  const mx = (a.cx + b.cx) / 2;
  const my = (a.cy + b.cy) / 2;
  const nw = 2 * d;
  const nh = 0.8 * nw;
  return { x: mx - nw / 2, y: my - 0.68 * nh, w: nw, h: nh, contrast: (a.contrast + b.contrast) / 2 };
}

function overlaps(l: Blob, n: Blob): boolean {
  return n.cx >= l.x0 && n.cx <= l.x1 && n.cy >= l.y0 && n.cy <= l.y1;
}

/** Connected regions (4-neighbour) at or below `t` that could be nostrils. */
function darkBlobs(
  g: Grey,
  t: number,
  sat: Float64Array,
  labels: Int32Array,
  stack: Int32Array,
  minContrast: number,
): { nostrils: Blob[]; leathers: Blob[] } {
  const { w, h, v } = g;
  labels.fill(0);
  const nostrils: Blob[] = [];
  const leathers: Blob[] = [];
  // A nostril of a nose filling the whole width is ~20% x 15% of it: ~6% of a
  // 16:9 working image at most. Below 4 px it is too small to tell from noise.
  const maxArea = 0.06 * w * h;
  let next = 0;
  for (let start = 0; start < w * h; start++) {
    if (labels[start] !== 0 || v[start] > t) continue;
    next++;
    let top = 0;
    stack[top++] = start;
    labels[start] = next;
    let area = 0;
    let sx = 0;
    let sy = 0;
    let sv = 0;
    let x0 = w;
    let y0 = h;
    let x1 = 0;
    let y1 = 0;
    while (top > 0) {
      const p = stack[--top];
      const x = p % w;
      const y = (p / w) | 0;
      area++;
      sx += x;
      sy += y;
      sv += v[p];
      if (x < x0) x0 = x;
      if (x > x1) x1 = x;
      if (y < y0) y0 = y;
      if (y > y1) y1 = y;
      if (x > 0 && labels[p - 1] === 0 && v[p - 1] <= t) (labels[p - 1] = next), (stack[top++] = p - 1);
      if (x < w - 1 && labels[p + 1] === 0 && v[p + 1] <= t) (labels[p + 1] = next), (stack[top++] = p + 1);
      if (y > 0 && labels[p - w] === 0 && v[p - w] <= t) (labels[p - w] = next), (stack[top++] = p - w);
      if (y < h - 1 && labels[p + w] === 0 && v[p + w] <= t) (labels[p + w] = next), (stack[top++] = p + w);
    }
    if (area < 4) continue;
    const bw = x1 - x0 + 1;
    const bh = y1 - y0 + 1;
    const fill = area / (bw * bh);
    // Nostrils are rounded openings, with a tail: their bounding box is at
    // least a third filled and not a thin streak (fur, hair shadows).
    const nostril = area <= maxArea && fill >= 0.3 && bw <= 4 * bh && bh <= 3 * bw;
    // A dark leather: a rounded blob (a superellipse fills 80-90% of its box;
    // fur and shadows merged into it much less), wider than tall, between a
    // nose at ~12% of the width and one overflowing the frame.
    const leather =
      area >= 0.01 * w * h && area <= 0.5 * w * h && fill >= 0.55 && bw >= 0.9 * bh && bw <= 2.5 * bh && bw < w && bh < h;
    if (!nostril && !leather) continue;
    // The surroundings: the bounding box grown by half its size each way.
    const m = Math.max(2, Math.round(Math.max(bw, bh) / 2));
    const ex0 = Math.max(0, x0 - m);
    const ey0 = Math.max(0, y0 - m);
    const ex1 = Math.min(w, x1 + 1 + m);
    const ey1 = Math.min(h, y1 + 1 + m);
    const ringArea = (ex1 - ex0) * (ey1 - ey0) - area;
    if (ringArea <= 0) continue;
    const ring = (boxSum(sat, w, ex0, ey0, ex1, ey1) - sv) / ringArea;
    const mean = sv / area;
    const contrast = ring > 0 ? 1 - mean / ring : 0;
    if (contrast < minContrast) continue;
    const blob = { area, cx: sx / area, cy: sy / area, mean, contrast, x0, y0, x1, y1 };
    if (nostril) nostrils.push(blob);
    if (leather) leathers.push(blob);
  }
  return { nostrils, leathers };
}

/** How much two dark blobs look like a pair of nostrils; 0 if not at all. */
function pairScore(a: Blob, b: Blob, g: Grey): number {
  const ratio = Math.min(a.area, b.area) / Math.max(a.area, b.area);
  if (ratio < 0.3) return 0;
  const s = Math.sqrt((a.area + b.area) / 2);
  const dx = Math.abs(b.cx - a.cx);
  const dy = Math.abs(b.cy - a.cy);
  // Side by side (roll up to ~30 degrees), one to six nostril sizes apart.
  if (dy > 0.8 * s || dx < 1.2 * s || dx > 6 * s) return 0;
  // Between them lies leather, clearly lighter than the nostrils.
  const mx = Math.round((a.cx + b.cx) / 2);
  const my = Math.round((a.cy + b.cy) / 2);
  const r = Math.max(1, Math.round(s / 4));
  let sum = 0;
  let n = 0;
  for (let y = Math.max(0, my - r); y <= Math.min(g.h - 1, my + r); y++)
    for (let x = Math.max(0, mx - r); x <= Math.min(g.w - 1, mx + r); x++) (sum += g.v[y * g.w + x]), n++;
  const between = sum / n;
  const dark = Math.max(a.mean, b.mean);
  if (between < dark / (1 - (a.contrast + b.contrast) / 4)) return 0;
  // Larger, more contrasted, more alike and more level pairs win.
  return s * (a.contrast + b.contrast) * Math.sqrt(ratio) * (1 - dy / (1.6 * s));
}
