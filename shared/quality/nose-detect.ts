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
  /** Share of the ellipse inscribed in the bounding box that the region covers; computed for large regions only. */
  solidity: number;
}

export interface Nose {
  x: number;
  y: number;
  w: number;
  h: number;
  /** How much the nose stands out: the leather's or the nostrils' contrast with their surroundings. */
  contrast: number;
  /** What found it: the leather's outline (a dome) or the nostril pair alone. */
  cue: "dome" | "nostrils";
}

/**
 * Shares of the way from the frame's darkest level (0.5th percentile) to its
 * 90th percentile at which the frame is cut into dark (and, for light
 * noses, bright) regions. A leather lit from above is brighter at the top
 * than at the bottom, so the whole dome only separates at the cut that lies
 * between its brightest part and the surroundings; which cut that is depends
 * on the leather's colour and the fur's, hence several.
 */
const DOME_CUTS = [0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85];

/** Shares of the way from the darkest level to the median at which nostrils are cut out. */
const NOSTRIL_CUTS = [0.06, 0.12, 0.2, 0.3, 0.42];

/**
 * Finds the nose. Real close-ups show the leather as a dome that fills most
 * of the nose crop, darker than the fur and face around it on about nine noses
 * in ten (the real leather colours: two near-black clusters hold 65% of
 * noses), with nostrils that are often faint. So the leather's outline is
 * the first cue: a large, rounded region clearly darker than its
 * surroundings, at one of several cuts. Light (pink, light-brown) leather may
 * be lighter than the fur instead: a rounded bright region counts when it holds
 * a nostril pair in its lower part. Failing both, the nostrils alone place the
 * nose by anatomy: nostril centres are about 0.42 of the leather's width
 * apart, the leather is about 0.85 times as tall as it is wide, and the
 * nostrils sit at about 0.7 of its height from the top.
 */
export function detectNose(g: Grey, o: { minDomeContrast: number; minNostrilContrast: number; minDomeSide: number }): Nose | undefined {
  const { w, h, v } = g;
  const hist = new Uint32Array(256);
  for (let i = 0; i < v.length; i++) hist[Math.min(255, Math.max(0, Math.round(v[i])))]++;
  const lo = percentile(hist, v.length, 0.005);
  const mid = percentile(hist, v.length, 0.5);
  const hi = percentile(hist, v.length, 0.9);
  const top = percentile(hist, v.length, 0.995);
  if (top - lo < 8) return undefined; // flat frame: nothing to find
  const sat = integral(g);
  const labels = new Int32Array(w * h);
  const stack = new Int32Array(w * h);
  const pix = new Int32Array(w * h);
  const mask = new Uint8Array(w * h);

  const nostrils: Blob[] = [];
  let pair: { score: number; a: Blob; b: Blob } | undefined;
  for (const cut of NOSTRIL_CUTS) {
    const blobs = regions(g, threshold(g, lo + cut * (mid - lo), false, mask), sat, labels, stack, pix).filter(
      (b) => b.contrast >= o.minNostrilContrast && isNostril(b, w, h),
    );
    nostrils.push(...blobs);
    for (let i = 0; i < blobs.length; i++)
      for (let j = i + 1; j < blobs.length; j++) {
        const s = pairScore(blobs[i], blobs[j], g);
        if (s > 0 && (!pair || s > pair.score)) pair = { score: s, a: blobs[i], b: blobs[j] };
      }
  }

  let dome: { score: number; b: Blob } | undefined;
  const minSide = o.minDomeSide * Math.min(w, h);
  const g2 = half(g);
  const sat2 = integral(g2);
  const mask2 = new Uint8Array(g2.w * g2.h);
  // A light leather needs two nostrils to count; without them, no bright cut.
  const polarities = nostrils.length >= 2 ? [false, true] : [false];
  for (const cut of DOME_CUTS) {
    for (const bright of polarities) {
      const t = bright ? hi - cut * (hi - lo) : lo + cut * (hi - lo);
      // A 3x3 opening first (6x6 working px): hairs and their shadows no
      // longer bridge the leather to the fur around it.
      const opened = morph3(morph3(threshold(g2, t, bright, mask2), g2.w, g2.h, true), g2.w, g2.h, false);
      for (const half of regions(g2, opened, sat2, labels, stack, pix, minSide / 2)) {
        const b = doubled(half);
        const bw = b.x1 - b.x0 + 1;
        const bh = b.y1 - b.y0 + 1;
        const fill = b.area / (bw * bh);
        // A dome: rounded, so it covers nearly all of the ellipse inscribed
        // in its box (fur and shadows merged into it leave gaps); neither a
        // streak nor a region spanning the frame from edge to edge.
        if (bw < minSide || bh < minSide || fill < 0.55 || b.solidity < 0.8 || bw > 2 * bh || bh > 1.6 * bw) continue;
        if (bw >= w - 1 || bh >= h - 1) continue;
        const contrast = bright ? -b.contrast : b.contrast;
        if (contrast < o.minDomeContrast) continue;
        // A bright region is a nose only with a nostril pair in its lower part.
        if (bright && !holdsNostrils(b, nostrils)) continue;
        // A dark region holding one nostril of the best pair but not the
        // other is that nostril (black nostrils of a pink nose are domes too).
        if (!bright && pair && contains(b, pair.a) !== contains(b, pair.b)) continue;
        // Larger and more contrasted wins, but above all the cleaner outline:
        // the cut that takes in the whole leather and no fur is the one
        // whose region is most nearly an ellipse.
        const score = contrast * Math.sqrt(b.area) * b.solidity ** 4;
        if (!dome || score > dome.score) dome = { score, b };
      }
    }
  }
  if (dome) {
    const b = dome.b;
    return { x: b.x0, y: b.y0, w: b.x1 - b.x0 + 1, h: b.y1 - b.y0 + 1, contrast: Math.abs(b.contrast), cue: "dome" };
  }
  if (!pair) return undefined;
  const { a, b } = pair;
  const d = Math.hypot(b.cx - a.cx, b.cy - a.cy);
  const mx = (a.cx + b.cx) / 2;
  const my = (a.cy + b.cy) / 2;
  const nw = d / 0.42;
  const nh = 0.85 * nw;
  // Nostrils that would make a nose a quarter larger than the frame are not
  // a nose's (a tight crop of a nose, a photo picked from files, may be
  // slightly smaller than its leather).
  if (nw > 1.25 * w || nh > 1.25 * h) return undefined;
  return { x: mx - nw / 2, y: my - 0.7 * nh, w: nw, h: nh, contrast: (a.contrast + b.contrast) / 2, cue: "nostrils" };
}

/** Nostrils are rounded openings, with a tail: a box at least a third filled, not a thin streak (fur, hair shadows). */
function isNostril(b: Blob, w: number, h: number): boolean {
  const bw = b.x1 - b.x0 + 1;
  const bh = b.y1 - b.y0 + 1;
  // A nostril of a nose filling the whole frame is ~20% x 15% of it; below 4 px it is noise.
  return b.area >= 4 && b.area <= 0.06 * w * h && b.area / (bw * bh) >= 0.3 && bw <= 4 * bh && bh <= 3 * bw;
}

function contains(l: Blob, n: Blob): boolean {
  return n.cx >= l.x0 && n.cx <= l.x1 && n.cy >= l.y0 && n.cy <= l.y1;
}

/** Whether two nostrils sit in the lower part of `l`, as far apart as a nose of its width has them (0.25-0.6 of it). */
function holdsNostrils(l: Blob, nostrils: Blob[]): boolean {
  const bw = l.x1 - l.x0 + 1;
  const bh = l.y1 - l.y0 + 1;
  const inside = nostrils.filter(
    (n) => n.area < 0.1 * l.area && n.cx > l.x0 && n.cx < l.x1 && n.cy > l.y0 + 0.45 * bh && n.cy < l.y1 - 0.05 * bh,
  );
  for (let i = 0; i < inside.length; i++)
    for (let j = i + 1; j < inside.length; j++) {
      const dx = Math.abs(inside[i].cx - inside[j].cx);
      const dy = Math.abs(inside[i].cy - inside[j].cy);
      if (dx > 0.25 * bw && dx < 0.6 * bw && dy < 0.15 * bh && Math.abs((inside[i].cx + inside[j].cx) / 2 - (l.x0 + l.x1) / 2) < 0.15 * bw)
        return true;
    }
  return false;
}

/** Pixels at or below `t` (at or above it when `bright`). */
function threshold(g: Grey, t: number, bright: boolean, out: Uint8Array): Uint8Array {
  const v = g.v;
  if (bright) for (let i = 0; i < v.length; i++) out[i] = v[i] >= t ? 1 : 0;
  else for (let i = 0; i < v.length; i++) out[i] = v[i] <= t ? 1 : 0;
  return out;
}

/** 2x2 box average; domes are large, so they are looked for at half the working resolution. */
function half(g: Grey): Grey {
  const w = Math.max(1, g.w >> 1);
  const h = Math.max(1, g.h >> 1);
  const v = new Float32Array(w * h);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const i = 2 * y * g.w + 2 * x;
      v[y * w + x] = (g.v[i] + g.v[i + 1] + g.v[i + g.w] + g.v[i + g.w + 1]) / 4;
    }
  return { w, h, v };
}

/**
 * Connected regions (4-neighbour) of a 0/1 mask, of 4 px or more, each with its contrast against its
 * surroundings (the bounding box grown by half its size each way, clipped to
 * the frame): 1 - mean / surroundings' mean, negative for bright regions.
 */
function regions(
  g: Grey,
  mask: Uint8Array,
  sat: Float64Array,
  labels: Int32Array,
  stack: Int32Array,
  pix: Int32Array,
  solidFrom = Infinity,
): Blob[] {
  const { w, h, v } = g;
  labels.fill(0);
  const out: Blob[] = [];
  let next = 0;
  for (let start = 0; start < w * h; start++) {
    if (labels[start] !== 0 || mask[start] === 0) continue;
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
      pix[area] = p;
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
      if (x > 0 && labels[p - 1] === 0 && mask[p - 1] === 1) ((labels[p - 1] = next), (stack[top++] = p - 1));
      if (x < w - 1 && labels[p + 1] === 0 && mask[p + 1] === 1) ((labels[p + 1] = next), (stack[top++] = p + 1));
      if (y > 0 && labels[p - w] === 0 && mask[p - w] === 1) ((labels[p - w] = next), (stack[top++] = p - w));
      if (y < h - 1 && labels[p + w] === 0 && mask[p + w] === 1) ((labels[p + w] = next), (stack[top++] = p + w));
    }
    if (area < 4) continue;
    const bw = x1 - x0 + 1;
    const bh = y1 - y0 + 1;
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
    let solidity = 0;
    if (bw >= solidFrom && bh >= solidFrom) {
      const ex = (x0 + x1) / 2;
      const ey = (y0 + y1) / 2;
      const rx = bw / 2;
      const ry = bh / 2;
      let inEllipse = 0;
      for (let k = 0; k < area; k++) {
        const q = pix[k];
        if (((q % w) - ex) ** 2 / (rx * rx) + (((q / w) | 0) - ey) ** 2 / (ry * ry) <= 1) inEllipse++;
      }
      solidity = inEllipse / ((Math.PI * bw * bh) / 4);
    }
    out.push({ area, cx: sx / area, cy: sy / area, mean, contrast, x0, y0, x1, y1, solidity });
  }
  return out;
}

/** A region found at half resolution, in working-image coordinates. */
function doubled(b: Blob): Blob {
  return { ...b, area: 4 * b.area, cx: 2 * b.cx + 0.5, cy: 2 * b.cy + 0.5, x0: 2 * b.x0, y0: 2 * b.y0, x1: 2 * b.x1 + 1, y1: 2 * b.y1 + 1 };
}

/**
 * 3x3 erosion (`and`) or dilation (`or`) of a 0/1 mask, as a row pass then a
 * column pass. Outside the frame counts as set for erosion, so regions
 * running off the edge keep their edge, and as clear for dilation.
 */
function morph3(m: Uint8Array, w: number, h: number, erode: boolean): Uint8Array {
  const tmp = new Uint8Array(w * h);
  const out = new Uint8Array(w * h);
  const edge = erode ? 1 : 0;
  for (let y = 0; y < h; y++) {
    const r = y * w;
    for (let x = 0; x < w; x++) {
      const l = x > 0 ? m[r + x - 1] : edge;
      const c = m[r + x];
      const rt = x < w - 1 ? m[r + x + 1] : edge;
      tmp[r + x] = erode ? l & c & rt : l | c | rt;
    }
  }
  for (let y = 0; y < h; y++) {
    const r = y * w;
    for (let x = 0; x < w; x++) {
      const u = y > 0 ? tmp[r - w + x] : edge;
      const c = tmp[r + x];
      const d = y < h - 1 ? tmp[r + w + x] : edge;
      out[r + x] = erode ? u & c & d : u | c | d;
    }
  }
  return out;
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
    for (let x = Math.max(0, mx - r); x <= Math.min(g.w - 1, mx + r); x++) ((sum += g.v[y * g.w + x]), n++);
  const between = sum / n;
  const dark = Math.max(a.mean, b.mean);
  if (between < dark / (1 - (a.contrast + b.contrast) / 4)) return 0;
  // Larger, more contrasted, more alike and more level pairs win.
  return s * (a.contrast + b.contrast) * Math.sqrt(ratio) * (1 - dy / (1.6 * s));
}
