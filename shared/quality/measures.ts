/** Measures of the nose region (exposure, glare, sharpness) and of motion between frames. */
import type { Frame, FrameStats } from "./types.js";
import type { QualityOptions } from "./options.js";
import { blur3, boxSum, integral, percentile, type Grey, type Region } from "./sampling.js";

// ---------------------------------------------------------------- motion

/** Thumbnail width in px. 64: one thumbnail px is 1/64 of the width, fine enough to see a 1% shift. */
const THUMB = 64;

export function thumbnail(work: Grey, frame: Frame): FrameStats {
  const factor = Math.max(1, Math.floor(Math.max(work.w, work.h) / THUMB));
  const w = Math.max(1, Math.floor(work.w / factor));
  const h = Math.max(1, Math.floor(work.h / factor));
  const v = new Float32Array(w * h);
  for (let y = 0; y < h * factor; y++) {
    const row = ((y / factor) | 0) * w;
    for (let x = 0; x < w * factor; x++) v[row + ((x / factor) | 0)] += work.v[y * work.w + x];
  }
  for (let i = 0; i < v.length; i++) v[i] /= factor * factor;
  // The small blur keeps the difference proportional to the shift for shifts
  // up to about a thumbnail px, and averages away sensor noise.
  const b = blur3({ w, h, v });
  return { width: w, height: h, frameWidth: frame.width, frameHeight: frame.height, thumb: b.v };
}

/** Estimated shift between two thumbnails as a fraction of the width; 0 if they are not comparable. */
export function motionBetween(a: FrameStats, b: FrameStats): number {
  if (a.width !== b.width || a.height !== b.height || a.frameWidth !== b.frameWidth || a.frameHeight !== b.frameHeight) return 0;
  const { width: w, height: h } = b;
  if (w < 3 || h < 3 || a.thumb.length !== w * h) return 0;
  let ma = 0;
  let mb = 0;
  for (let i = 0; i < w * h; i++) {
    ma += a.thumb[i];
    mb += b.thumb[i];
  }
  // Remove a global brightness change (auto-exposure), which is not motion.
  const shift = (mb - ma) / (w * h);
  let diff = 0;
  let grad = 0;
  let n = 0;
  for (let y = 1; y < h - 1; y++) {
    for (let x = 1; x < w - 1; x++) {
      const i = y * w + x;
      diff += Math.abs(b.thumb[i] - a.thumb[i] - shift);
      const gxa = (a.thumb[i + 1] - a.thumb[i - 1]) / 2;
      const gya = (a.thumb[i + w] - a.thumb[i - w]) / 2;
      const gxb = (b.thumb[i + 1] - b.thumb[i - 1]) / 2;
      const gyb = (b.thumb[i + w] - b.thumb[i - w]) / 2;
      grad += (Math.hypot(gxa, gya) + Math.hypot(gxb, gyb)) / 2;
      n++;
    }
  }
  // |dI| ~ |grad I . d|; averaged over directions |cos| is 2/pi, hence the
  // pi/2. The half grey level per pixel keeps flat frames (no gradient) from
  // turning noise into motion.
  const px = ((diff / (grad + 0.5 * n)) * Math.PI) / 2;
  return px / w;
}

export function exposure(r: Region, o: QualityOptions) {
  const hist = new Uint32Array(256);
  let crushed = 0;
  let clipped = 0;
  let sum = 0;
  for (let i = 0; i < r.grey.length; i++) {
    const v = r.grey[i];
    hist[Math.min(255, Math.max(0, Math.round(v)))]++;
    if (v <= o.crushedLevel) crushed++;
    // Clipped in any channel: a pink leather blows out in red first.
    if (r.peak[i] >= o.clippedLevel) clipped++;
    sum += v;
  }
  const n = r.grey.length;
  return {
    crushed: crushed / n,
    clipped: clipped / n,
    mean: sum / n,
    p10: percentile(hist, n, 0.1),
    p95: percentile(hist, n, 0.95),
  };
}

export function glareShare(r: Region, o: QualityOptions): number {
  let n = 0;
  for (let i = 0; i < r.grey.length; i++) if (r.grey[i] >= o.glareLevel && r.saturation[i] <= o.glareMaxSaturation) n++;
  return n / r.grey.length;
}

/**
 * Variance of the 4-neighbour Laplacian over the local contrast energy, the
 * mean squared difference between each pixel and the mean of the 9x9 block
 * around it. Local, not global, contrast: the grey-level variance of the
 * region is dominated by how much of it is dark (nostrils, black patches on
 * pink leather), which says nothing about focus; the 9 px block spans two or
 * three beads, so the denominator is the bead pattern's own contrast and the
 * ratio is the share of it at the finest scale.
 */
/**
 * Share of the nose box left out on each side when measuring sharpness:
 * the box's edges hold the leather's outline and the fur or background
 * beyond it, sharp or soft whatever the focus on the beads.
 */
const INNER_MARGIN = 0.2;
/**
 * Contrast energy (grey levels squared) added to the denominator. 4: the
 * 8-bit rounding and sensor noise left in a smooth, blurred region (about
 * a level) would otherwise divide by almost nothing and read as detail.
 */
const CONTRAST_FLOOR = 4;

export function sharpness(r: Region): number {
  const { w, h, grey: g } = r;
  const R = 4;
  if (w <= 2 * R + 2 || h <= 2 * R + 2) return 0;
  const sat = integral({ w, h, v: g });
  const area = (2 * R + 1) ** 2;
  let sl = 0;
  let sll = 0;
  let sdd = 0;
  let n = 0;
  const mx = Math.max(R, Math.floor(INNER_MARGIN * w));
  const my = Math.max(R, Math.floor(INNER_MARGIN * h));
  for (let y = my; y < h - my; y++) {
    for (let x = mx; x < w - mx; x++) {
      const i = y * w + x;
      const l = g[i - 1] + g[i + 1] + g[i - w] + g[i + w] - 4 * g[i];
      const d = g[i] - boxSum(sat, w, x - R, y - R, x + R + 1, y + R + 1) / area;
      sl += l;
      sll += l * l;
      sdd += d * d;
      n++;
    }
  }
  const varL = sll / n - (sl / n) ** 2;
  return varL / (sdd / n + CONTRAST_FLOOR);
}
