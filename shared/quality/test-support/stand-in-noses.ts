/**
 * Stand-in nose photos for testing the capture checks: synthetic square crops
 * built to match what is known, in aggregate only, of real phone photos of dog
 * noses (`real-nose-stats.json` beside this file) rather than the project's
 * renders. No real photo was used to make them.
 *
 * What the real statistics and the mean real nose say, and how it is copied:
 * - framing: the leather is a dark dome filling nearly the whole square,
 *   lit from above (brighter at the top), nostrils faint in its lower third;
 *   fur shows in the corners and sometimes along an edge;
 * - leather colour: the five colour clusters of real noses, in their shares
 *   (two near-black clusters 65%, pink 3%);
 * - texture: polygonal beads separated by darker grooves plus a 1/f
 *   background, its amplitude drawn so that the Laplacian variance at 224 px
 *   spans the real 5-95% range;
 * - size: the crop's native side is drawn from the real short-side quantiles
 *   (150-390 px), so most crops are upscaled when shown at a close-up size,
 *   softening them as real ones are;
 * - camera: sensor noise, a little optical blur, a few specular dots.
 *
 * Pure: typed arrays in and out, deterministic per seed.
 */
import { resizeLanczos } from "../../lanczos.js";
import { prng } from "../../prng.js";

export interface StandIn {
  /** Square RGB crop, `size` x `size`, interleaved. */
  data: Uint8Array;
  size: number;
  /** Which real colour cluster the leather was drawn from (0 darkest .. 4 pink). */
  colour: number;
  seed: number;
}

/** Leather colours of real noses (RGB 0..1) and their shares, darkest first. */
export const LEATHER_CLUSTERS: readonly { rgb: readonly [number, number, number]; share: number }[] = [
  { rgb: [0.105, 0.094, 0.097], share: 0.323 },
  { rgb: [0.186, 0.163, 0.164], share: 0.333 },
  { rgb: [0.287, 0.251, 0.249], share: 0.206 },
  { rgb: [0.429, 0.382, 0.366], share: 0.105 },
  { rgb: [0.689, 0.611, 0.566], share: 0.033 },
];

/** Real crop short sides, px: 5/25/50/75/95% quantiles. */
const SIDE_QUANTILES = [150, 186, 223, 275, 386];

function gauss(rnd: () => number): number {
  return Math.sqrt(-2 * Math.log(rnd() + 1e-12)) * Math.cos(2 * Math.PI * rnd());
}

/** Piecewise-linear draw from quantiles at 5/25/50/75/95%. */
function fromQuantiles(q: number[], u: number): number {
  const at = [0.05, 0.25, 0.5, 0.75, 0.95];
  const v = Math.min(0.95, Math.max(0.05, u));
  for (let i = 1; i < at.length; i++) if (v <= at[i]) return q[i - 1] + ((v - at[i - 1]) / (at[i] - at[i - 1])) * (q[i] - q[i - 1]);
  return q[q.length - 1];
}

/** Separable Gaussian blur of one float plane, edges clamped. */
export function blurPlane(v: Float32Array, w: number, h: number, sigma: number): Float32Array {
  if (sigma <= 0) return v.slice();
  const r = Math.ceil(3 * sigma);
  const k = new Float32Array(2 * r + 1);
  let s = 0;
  for (let i = -r; i <= r; i++) s += k[i + r] = Math.exp(-(i * i) / (2 * sigma * sigma));
  for (let i = 0; i < k.length; i++) k[i] /= s;
  const tmp = new Float32Array(w * h);
  const out = new Float32Array(w * h);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      let a = 0;
      for (let i = -r; i <= r; i++) a += k[i + r] * v[y * w + Math.min(w - 1, Math.max(0, x + i))];
      tmp[y * w + x] = a;
    }
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      let a = 0;
      for (let i = -r; i <= r; i++) a += k[i + r] * tmp[Math.min(h - 1, Math.max(0, y + i)) * w + x];
      out[y * w + x] = a;
    }
  return out;
}

/** Gaussian blur of an interleaved RGB image. */
export function blurRgb(data: Uint8Array, w: number, h: number, sigma: number): Uint8Array {
  const out = new Uint8Array(data.length);
  for (let c = 0; c < 3; c++) {
    const p = new Float32Array(w * h);
    for (let i = 0; i < w * h; i++) p[i] = data[i * 3 + c];
    const b = blurPlane(p, w, h, sigma);
    for (let i = 0; i < w * h; i++) out[i * 3 + c] = Math.max(0, Math.min(255, Math.round(b[i])));
  }
  return out;
}

/** 1/f-like noise: octaves of blurred white noise, unit-ish variance. */
function fractal(w: number, h: number, rnd: () => number, scales: number[], slope: number): Float32Array {
  const out = new Float32Array(w * h);
  for (const s of scales) {
    const b = s <= 3 ? blurPlane(whiteNoise(w * h, rnd), w, h, s) : smoothNoise(w, h, 2 * s, rnd);
    let sd = 0;
    for (let i = 0; i < b.length; i++) sd += b[i] * b[i];
    sd = Math.sqrt(sd / b.length) || 1;
    const amp = Math.pow(s, slope);
    for (let i = 0; i < out.length; i++) out[i] += (amp * b[i]) / sd;
  }
  let sd = 0;
  for (let i = 0; i < out.length; i++) sd += out[i] * out[i];
  sd = Math.sqrt(sd / out.length) || 1;
  for (let i = 0; i < out.length; i++) out[i] /= sd;
  return out;
}

function whiteNoise(n: number, rnd: () => number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = gauss(rnd);
  return out;
}

/** Noise of feature size ~`step` px: a random grid, smoothstep-interpolated. */
function smoothNoise(w: number, h: number, step: number, rnd: () => number): Float32Array {
  const gw = Math.ceil(w / step) + 2;
  const gh = Math.ceil(h / step) + 2;
  const grid = whiteNoise(gw * gh, rnd);
  const out = new Float32Array(w * h);
  const sm = (t: number) => t * t * (3 - 2 * t);
  for (let y = 0; y < h; y++) {
    const fy = y / step;
    const j = Math.floor(fy);
    const ty = sm(fy - j);
    for (let x = 0; x < w; x++) {
      const fx = x / step;
      const i = Math.floor(fx);
      const tx = sm(fx - i);
      const a = grid[j * gw + i] * (1 - tx) + grid[j * gw + i + 1] * tx;
      const b = grid[(j + 1) * gw + i] * (1 - tx) + grid[(j + 1) * gw + i + 1] * tx;
      out[y * w + x] = a * (1 - ty) + b * ty;
    }
  }
  return out;
}

/**
 * Bead pattern: jittered-grid cells; 0 in a bead's middle rising to 1 in the
 * groove between two beads (second-nearest minus nearest seed distance).
 */
function beads(w: number, h: number, cell: number, rnd: () => number): Float32Array {
  const gw = Math.ceil(w / cell) + 2;
  const gh = Math.ceil(h / cell) + 2;
  const sx = new Float32Array(gw * gh);
  const sy = new Float32Array(gw * gh);
  for (let j = 0; j < gh; j++)
    for (let i = 0; i < gw; i++) {
      sx[j * gw + i] = (i - 1 + 0.15 + 0.7 * rnd()) * cell;
      sy[j * gw + i] = (j - 1 + 0.15 + 0.7 * rnd()) * cell;
    }
  const out = new Float32Array(w * h);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const ci = Math.floor(x / cell) + 1;
      const cj = Math.floor(y / cell) + 1;
      let d1 = Infinity;
      let d2 = Infinity;
      for (let j = cj - 1; j <= cj + 1; j++)
        for (let i = ci - 1; i <= ci + 1; i++) {
          const d = Math.hypot(x - sx[j * gw + i], y - sy[j * gw + i]);
          if (d < d1) ((d2 = d1), (d1 = d));
          else if (d < d2) d2 = d;
        }
      // Narrow grooves: dark only within ~15% of a cell of the border.
      out[y * w + x] = Math.exp(-(((d2 - d1) / (0.18 * cell)) ** 2));
    }
  return out;
}

export interface StandInOptions {
  /** Force a leather colour cluster (0..4); otherwise drawn by the real shares. */
  colour?: number;
  /** Force the native side, px. */
  size?: number;
  /** Fur along one edge (a nose photographed a little from the side). */
  furEdge?: boolean;
}

/** One stand-in crop of a real-looking nose photo. */
export function standInNose(seed: number, opts: StandInOptions = {}): StandIn {
  const rnd = prng(seed * 7919 + 17);
  const S = Math.round(opts.size ?? fromQuantiles(SIDE_QUANTILES, rnd()));
  let colour = opts.colour ?? -1;
  if (colour < 0) {
    let u = rnd();
    colour = 0;
    while (colour < LEATHER_CLUSTERS.length - 1 && u > LEATHER_CLUSTERS[colour].share) u -= LEATHER_CLUSTERS[colour++].share;
  }
  const tone = 0.85 + 0.3 * rnd();
  const leather = LEATHER_CLUSTERS[colour].rgb.map((c) => c * tone);
  // Fur: dark, brown, tan or white coats; sometimes close to the leather's own colour.
  const coats = [
    [0.12, 0.1, 0.09],
    [0.35, 0.25, 0.18],
    [0.62, 0.5, 0.38],
    [0.85, 0.82, 0.78],
    [0.5, 0.48, 0.46],
  ];
  const coatTone = 0.85 + 0.3 * rnd();
  const coat = coats[Math.floor(rnd() * coats.length)].map((c) => c * coatTone);

  // The dome: a superellipse centred a little low, its half-axes 0.44-0.56 of the side.
  const cx = S * (0.5 + 0.04 * (rnd() - 0.5));
  const cy = S * (0.52 + 0.05 * (rnd() - 0.5));
  const ax = S * (0.46 + 0.1 * rnd());
  const ay = S * (0.42 + 0.1 * rnd());
  const pw = 2.1 + 0.8 * rnd();
  const edgeSoft = 0.02 + 0.03 * rnd();
  const furEdge = opts.furEdge ?? rnd() < 0.25;
  const furSide = Math.floor(rnd() * 4);
  const furDepth = 0.08 + 0.1 * rnd();

  // Texture, drawn at the native scale: beads of ~4-7 px at 224 px, grooves
  // darker; plus a fractal component and slow blotches.
  const cell = (S / 224) * (4 + 3 * rnd());
  const bead = beads(S, S, cell, rnd);
  const fine = fractal(S, S, rnd, [0.7, 1.4, 2.8, 5.6, 11], 0.6);
  const blotch = fractal(S, S, rnd, [S / 16, S / 8], 0);
  // Texture strength: the Laplacian variance of real crops spans two decades.
  const tex = Math.exp(Math.log(0.05) + rnd() * Math.log(0.35 / 0.05));
  const groove = 0.25 + 0.35 * rnd();

  // Nostrils: two commas in the lower third, faint (shadowed, not black holes).
  const nostrilDark = 0.35 + 0.4 * rnd();
  const nx = 0.27 + 0.06 * rnd();
  const ny = 0.66 + 0.08 * rnd();
  const nr = 0.07 + 0.04 * rnd();
  const tilt = (rnd() - 0.5) * 0.3;

  const hairs = fractal(S, S, rnd, [0.8, 1.6], 0);
  const hairAngle = rnd() * Math.PI;
  const lightTop = 0.25 + 0.35 * rnd();
  const fieldMask = new Float32Array(S * S);
  const rgb = new Float32Array(S * S * 3);
  for (let y = 0; y < S; y++)
    for (let x = 0; x < S; x++) {
      const i = y * S + x;
      const u = (x - cx) / ax;
      const v = (y - cy) / ay;
      const r = Math.pow(Math.abs(u), pw) + Math.pow(Math.abs(v), pw);
      let m = 1 / (1 + Math.exp((r - 1) / edgeSoft));
      if (furEdge) {
        const d = [x / S, y / S, 1 - x / S, 1 - y / S][furSide];
        m *= 1 / (1 + Math.exp(-(d - furDepth) / 0.015));
      }
      fieldMask[i] = m;
      // Leather: lit from above, darker towards the bottom; beads and grooves.
      const light = 1 + lightTop * (0.5 - y / S) + 0.15 * blotch[i];
      let L = light * (1 + tex * (0.9 * fine[i] - groove * 4 * (bead[i] - 0.25)));
      // Nostrils: dark commas with soft edges.
      for (const side of [-1, 1]) {
        const ox = (x / S - (0.5 + side * (0.5 - nx))) / nr;
        const oy = (y / S - ny - side * tilt * (x / S - 0.5)) / (nr * 0.7);
        const d = ox * ox + oy * oy;
        L *= 1 - nostrilDark * Math.exp(-d * d);
      }
      // Philtrum: a faint groove down the middle.
      L *= 1 - 0.12 * Math.exp(-(((x - cx) / (0.012 * S)) ** 2)) * (y > cy ? 1 : 0.3);
      // Fur: fine streaks along one direction.
      const along = Math.cos(hairAngle) * x + Math.sin(hairAngle) * y;
      const F = 1 + 0.25 * hairs[i] + 0.08 * Math.sin(along * 0.9);
      for (let c = 0; c < 3; c++) rgb[i * 3 + c] = m * leather[c] * L + (1 - m) * coat[c] * F;
    }
  // Specular dots on the upper leather: most noses have few, a quarter up to ~1%.
  const spots = rnd() < 0.5 ? 0 : Math.floor(rnd() * rnd() * 40);
  for (let k = 0; k < spots; k++) {
    const sx = cx + (rnd() - 0.5) * ax;
    const sy = cy - rnd() * ay * 0.7;
    const rr = (0.5 + rnd() * 1.5) * (S / 224);
    for (let y = Math.floor(sy - 3 * rr); y <= sy + 3 * rr; y++)
      for (let x = Math.floor(sx - 3 * rr); x <= sx + 3 * rr; x++) {
        if (x < 0 || y < 0 || x >= S || y >= S) continue;
        const a = Math.exp(-((x - sx) ** 2 + (y - sy) ** 2) / (rr * rr)) * fieldMask[y * S + x];
        for (let c = 0; c < 3; c++) rgb[(y * S + x) * 3 + c] += a * (0.95 - rgb[(y * S + x) * 3 + c]);
      }
  }
  // Camera: a little optical blur, then noise, then 8 bits.
  const optics = 0.3 + 0.7 * rnd();
  const noise = (0.8 + 2.2 * rnd()) / 255;
  const data = new Uint8Array(S * S * 3);
  for (let c = 0; c < 3; c++) {
    const p = new Float32Array(S * S);
    for (let i = 0; i < S * S; i++) p[i] = rgb[i * 3 + c];
    const b = blurPlane(p, S, S, optics);
    for (let i = 0; i < S * S; i++) data[i * 3 + c] = Math.max(0, Math.min(255, Math.round(255 * (b[i] + noise * gauss(rnd)))));
  }
  return { data, size: S, colour, seed };
}

/** The stand-in resized to `side` x `side` with Lanczos (as a phone close-up shows it). */
export function resized(n: StandIn, side: number): Uint8Array {
  return resizeLanczos({ width: n.size, height: n.size, channels: 3, data: n.data }, side, side);
}

/** The statistics `real-nose-stats.json` gives, measured the same way on one crop (resized to 224). */
export function cropStats(n: StandIn): { greyMean: number; greyStd: number; laplacianVariance: number } {
  const img = resizeLanczos({ width: n.size, height: n.size, channels: 3, data: n.data }, 224, 224);
  const g = new Float32Array(224 * 224);
  let s = 0;
  for (let i = 0; i < g.length; i++) s += g[i] = (0.299 * img[i * 3] + 0.587 * img[i * 3 + 1] + 0.114 * img[i * 3 + 2]) / 255;
  const mean = s / g.length;
  let ss = 0;
  for (const v of g) ss += (v - mean) ** 2;
  // OpenCV's Laplacian (ksize 1), reflect-101 borders, over the whole image.
  const at = (x: number, y: number) => g[(y < 0 ? -y : y > 223 ? 446 - y : y) * 224 + (x < 0 ? -x : x > 223 ? 446 - x : x)];
  let sl = 0;
  let sll = 0;
  for (let y = 0; y < 224; y++)
    for (let x = 0; x < 224; x++) {
      const l = at(x - 1, y) + at(x + 1, y) + at(x, y - 1) + at(x, y + 1) - 4 * at(x, y);
      sl += l;
      sll += l * l;
    }
  const n2 = 224 * 224;
  return { greyMean: mean, greyStd: Math.sqrt(ss / g.length), laplacianVariance: sll / n2 - (sl / n2) ** 2 };
}
