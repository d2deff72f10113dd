/**
 * Capture quality of one camera frame of a dog's nose, cheap enough to run on
 * every frame of a live preview: is there a nose, is it big and central enough,
 * sharp, well exposed, free of glare, and is the camera still. Each failing
 * check carries the one short instruction that fixes it.
 *
 * Everything runs on small images: the frame is box-averaged to a grey working
 * image of about `workingSize` pixels on its long side (the detector, the
 * motion thumbnail), and the nose region alone is sampled again from the full
 * frame at about the resolution the embedding model sees it (sharpness,
 * exposure, glare). Pure and isomorphic: no Node or DOM imports.
 */
export { selectBest, type Candidate } from "./frame-select.js";

/** Interleaved 8-bit RGB or RGBA pixels, row-major. Alpha is ignored. */
export interface Frame {
  data: Uint8ClampedArray | Uint8Array;
  width: number;
  height: number;
  channels: 3 | 4;
}

export type CheckName = "presence" | "size" | "centring" | "sharpness" | "exposure" | "glare" | "motion";

export interface CheckResult {
  name: CheckName;
  /** The measurement; its unit is documented per check on QualityOptions. */
  value: number;
  pass: boolean;
  /** Present only when the check fails and the user can fix it. */
  instruction?: string;
}

/** What motion needs of the previous frame: a small blurred grey thumbnail. */
export interface FrameStats {
  width: number;
  height: number;
  /** The frame's size, so that thumbnails of different streams are not compared. */
  frameWidth: number;
  frameHeight: number;
  thumb: Float32Array;
}

export interface NoseBox {
  x: number;
  y: number;
  w: number;
  h: number;
}

export interface FrameAssessment {
  /** 0..1; a passing frame scores 0.5 or more, a failing one less. */
  score: number;
  pass: boolean;
  /** Every check, in the order their instructions take precedence. */
  checks: CheckResult[];
  /** The instruction of the first failing check. */
  instruction?: string;
  /** Pass as `previous` with the next frame. */
  stats: FrameStats;
  /** The nose in frame pixels, when one was found. */
  noseBox?: NoseBox;
}

export interface QualityOptions {
  /**
   * Long side of the grey working image, px. 256: a nose at the smallest size
   * worth detecting (15% of a 720p frame's width) still has nostrils about
   * 8 px across, and box-averaging 1280x720 by 5 costs one read of the frame.
   */
  workingSize: number;
  /**
   * presence: the nostril pair's contrast, 1 - (nostril mean / surrounding
   * mean). 0.35: a nostril is a cavity lit only by light bouncing inside it;
   * on pink and black leather alike it is several times darker than the
   * leather around it (contrast 0.6-0.9), while dark specks in fur, shadows of
   * hair and JPEG blocks reach a third of that at most.
   */
  minNostrilContrast: number;
  /**
   * size: nose width / frame width. 0.35: below it the leather spans fewer
   * than ~450 px of a 720p frame's 1280, and the bead pattern (beads are
   * 1.5-3% of the leather width) falls to 7-13 px per bead before any blur,
   * too little margin for the model's 224 px input after cropping.
   */
  minNoseWidth: number;
  /**
   * centring: largest offset of the nose centre from the frame centre, as a
   * fraction of the frame's width (horizontally) or height (vertically).
   * 0.15: beyond it the far edge of a nose of the minimum size is within a
   * few percent of the frame's edge, where lenses are softest and the crop
   * loses leather as soon as the hand drifts.
   */
  maxCentreOffset: number;
  /**
   * Width in px at which the nose region is resampled for sharpness, glare
   * and exposure. 192: the leather fills ~85% of the model's 224 px input, so
   * this is the detail the model actually gets; finer detail is irrelevant
   * to it and would make the measure depend on the camera's resolution.
   */
  sharpnessWidth: number;
  /**
   * sharpness: variance of the Laplacian / local contrast energy (see
   * `sharpness`), on the nose region at `sharpnessWidth`. A ratio, so blind to
   * exposure and contrast, which scale both alike. For a pattern of spatial
   * frequency f (cycles/px) it grows as (2 pi f)^2, and a Gaussian blur of
   * sigma px removes the share exp(-(2 pi f sigma)^2) of the finest detail
   * first. Calibrated on the project's renderer: its crisp captures measure
   * ~2, the same under a ~1.3 px blur at this scale 0.4-0.9; soft renders
   * (optics blur, defocus) 0.35-0.65. 1.0 sits where the beads of 3-6 px
   * start to merge.
   */
  minSharpness: number;
  /**
   * exposure: grey level at or below which a pixel counts as crushed. 20:
   * below ~8% of the range, read noise and JPEG quantisation are as large as
   * the bead's shading (a few levels), so texture there is lost.
   */
  crushedLevel: number;
  /** exposure: level at or above which a pixel counts as clipped, in any channel. 250: the top of the tone curve. */
  clippedLevel: number;
  /**
   * exposure: largest share of crushed pixels on the nose region. 0.45:
   * nostrils and their shadows cover 15-25% of the nose box and are
   * legitimately black; over ~half means the leather itself is crushed.
   */
  maxCrushed: number;
  /**
   * exposure: largest share of clipped pixels on the nose region. 0.3: a
   * wet nose has specular spots (a few %, see glare) and light fur round the
   * leather may clip; past a third the leather itself is blown out.
   */
  maxClipped: number;
  /**
   * exposure: the 95th percentile of the nose region's grey levels must reach
   * this. 64: a quarter of the range, two stops under a normally exposed
   * highlight; below it the whole region lives in the bottom 6 bits, where the
   * bead shading is mostly noise, even on pink leather that crushes nothing.
   */
  minHighlight: number;
  /**
   * exposure: the 10th percentile must stay under this. 200: even with the
   * nostrils included, a region whose darkest tenth is near white has lost
   * the leather's shading to over-exposure, even on a black nose that clips
   * nothing.
   */
  maxShadow: number;
  /**
   * glare: grey level from which a pixel can be specular glare. 230: speculars
   * of a wet nose saturate the sensor; diffuse leather under a normal exposure
   * stays below ~90% of the range.
   */
  glareLevel: number;
  /**
   * glare: largest (max - min) / max of RGB for a glare pixel. 0.2: a
   * specular reflection has the colour of the light (grey-white), while pink
   * leather that is merely bright keeps 25% or more saturation.
   */
  glareMaxSaturation: number;
  /**
   * glare: largest share of glare pixels on the nose region. 0.04: the
   * pinpoint speculars of a wet nose cover 1-2% and hide a handful of beads;
   * a patch of 4% (a 20% wide disc) hides a region the size of a nostril.
   */
  maxGlare: number;
  /**
   * motion: estimated displacement since the previous frame, as a fraction
   * of the frame width: mean absolute difference of the blurred thumbnails
   * (brightness change removed) divided by their mean gradient magnitude,
   * which for small motions is the shift in thumbnail px. 0.01: with an
   * exposure of about half the frame interval, 1% of the width between frames
   * smears a nose of the minimum size by ~1.5% of its width, about one
   * bead at the model's input: the beads the model matches on blur away.
   */
  maxMotion: number;
}

export const DEFAULT_QUALITY: QualityOptions = Object.freeze({
  workingSize: 256,
  minNostrilContrast: 0.35,
  minNoseWidth: 0.35,
  maxCentreOffset: 0.15,
  sharpnessWidth: 192,
  minSharpness: 1.0,
  crushedLevel: 20,
  clippedLevel: 250,
  maxCrushed: 0.45,
  maxClipped: 0.3,
  minHighlight: 64,
  maxShadow: 200,
  glareLevel: 230,
  glareMaxSaturation: 0.2,
  maxGlare: 0.04,
  maxMotion: 0.01,
});

export const INSTRUCTIONS: Readonly<Record<string, string>> = Object.freeze({
  presence: "no nose in view",
  size: "move closer",
  centring: "centre the nose",
  sharpness: "hold steady, focusing",
  dark: "too dark",
  bright: "too bright",
  glare: "too much glare",
  motion: "hold still",
});

/**
 * Weights of the checks in the score (a weighted geometric mean of per-check
 * qualities). Sharpness counts most: among frames that pass, it is what
 * separates a good embedding from a mediocre one.
 */
const WEIGHTS: Record<CheckName, number> = {
  presence: 1,
  size: 1,
  centring: 0.5,
  sharpness: 3,
  exposure: 1,
  glare: 1,
  motion: 1,
};

/** Assesses one frame; pass the previous frame's `stats` to check motion. */
export function assessFrame(frame: Frame, previous?: FrameStats, options?: Partial<QualityOptions>): FrameAssessment {
  checkFrame(frame);
  const o: QualityOptions = { ...DEFAULT_QUALITY, ...options };
  const factor = Math.max(1, Math.ceil(Math.max(frame.width, frame.height) / o.workingSize));
  const work = boxGrey(frame, factor);
  const stats = thumbnail(work, frame);
  const checks: { result: CheckResult; quality: number }[] = [];
  const add = (name: CheckName, value: number, pass: boolean, quality: number, instruction: string) =>
    checks.push({ result: pass ? { name, value, pass } : { name, value, pass, instruction }, quality });

  const nose = detectNose(blur3(work), o.minNostrilContrast);
  let noseBox: NoseBox | undefined;
  let region: Region;
  if (nose) {
    const box = clipBox(
      { x: nose.x * factor, y: nose.y * factor, w: nose.w * factor, h: nose.h * factor },
      frame.width,
      frame.height,
    );
    noseBox = box;
    region = sampleRegion(frame, box, o.sharpnessWidth);
  } else {
    region = sampleRegion(frame, { x: 0, y: 0, w: frame.width, h: frame.height }, o.sharpnessWidth);
  }

  // Exposure first: a badly exposed frame makes every other measure unreliable.
  const ex = exposure(region, o);
  const dark = ex.crushed > o.maxCrushed || ex.p95 < o.minHighlight;
  const bright = ex.clipped > o.maxClipped || ex.p10 > o.maxShadow;
  const exQuality = Math.min(
    lowerBetter(ex.crushed, o.maxCrushed),
    lowerBetter(ex.clipped, o.maxClipped),
    higherBetter(ex.p95, o.minHighlight),
    lowerBetter(ex.p10, o.maxShadow),
  );
  add("exposure", ex.mean / 255, !dark && !bright, exQuality, dark ? INSTRUCTIONS.dark : INSTRUCTIONS.bright);

  const contrast = nose ? nose.contrast : 0;
  add("presence", contrast, nose !== undefined, higherBetter(contrast, o.minNostrilContrast), INSTRUCTIONS.presence);

  const size = noseBox ? (nose!.w * factor) / frame.width : 0;
  add("size", size, size >= o.minNoseWidth, higherBetter(size, o.minNoseWidth), INSTRUCTIONS.size);

  let offset = 1;
  if (nose) {
    const cx = (nose.x + nose.w / 2) * factor;
    const cy = (nose.y + nose.h / 2) * factor;
    offset = Math.max(Math.abs(cx - frame.width / 2) / frame.width, Math.abs(cy - frame.height / 2) / frame.height);
  }
  add("centring", offset, offset <= o.maxCentreOffset, lowerBetter(offset, o.maxCentreOffset), INSTRUCTIONS.centring);

  const motion = previous ? motionBetween(previous, stats) : 0;
  add("motion", motion, motion <= o.maxMotion, lowerBetter(motion, o.maxMotion), INSTRUCTIONS.motion);

  const glare = nose ? glareShare(region, o) : 0;
  add("glare", glare, glare <= o.maxGlare, lowerBetter(glare, o.maxGlare), INSTRUCTIONS.glare);

  const sharp = nose ? sharpness(region) : 0;
  add("sharpness", sharp, sharp >= o.minSharpness, higherBetter(sharp, o.minSharpness), INSTRUCTIONS.sharpness);

  const pass = checks.every((c) => c.result.pass);
  let logSum = 0;
  let weightSum = 0;
  for (const c of checks) {
    const w = WEIGHTS[c.result.name];
    logSum += w * Math.log(Math.max(c.quality, 1e-6));
    weightSum += w;
  }
  const mean = Math.exp(logSum / weightSum);
  const score = pass ? mean : Math.min(mean, 0.499);
  const failing = checks.find((c) => !c.result.pass);
  const out: FrameAssessment = { score, pass, checks: checks.map((c) => c.result), stats };
  if (failing) out.instruction = failing.result.instruction;
  if (noseBox) out.noseBox = noseBox;
  return out;
}

/** 0.5 at the threshold, towards 1 above it, towards 0 below. */
function higherBetter(v: number, threshold: number): number {
  return v <= 0 ? 0 : v / (v + threshold);
}

/** 1 at zero, 0.5 at the threshold, towards 0 above it. */
function lowerBetter(v: number, threshold: number): number {
  return threshold / (Math.max(0, v) + threshold);
}

function checkFrame(f: Frame): void {
  if (!(Number.isInteger(f.width) && Number.isInteger(f.height) && f.width > 0 && f.height > 0))
    throw new RangeError(`bad frame size ${f.width}x${f.height}`);
  if (f.channels !== 3 && f.channels !== 4) throw new RangeError(`bad channel count ${f.channels}`);
  if (f.data.length < f.width * f.height * f.channels)
    throw new RangeError(`frame data has ${f.data.length} bytes, ${f.width}x${f.height}x${f.channels} needs more`);
}

// ---------------------------------------------------------------- grey images

interface Grey {
  w: number;
  h: number;
  v: Float32Array;
}

/** Luma (BT.601) box-averaged over factor x factor blocks; the ragged edge is dropped. */
function boxGrey(f: Frame, factor: number): Grey {
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
function blur3(g: Grey): Grey {
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

// ---------------------------------------------------------------- motion

/** Thumbnail width in px. 64: one thumbnail px is 1/64 of the width, fine enough to see a 1% shift. */
const THUMB = 64;

function thumbnail(work: Grey, frame: Frame): FrameStats {
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
function motionBetween(a: FrameStats, b: FrameStats): number {
  if (a.width !== b.width || a.height !== b.height || a.frameWidth !== b.frameWidth || a.frameHeight !== b.frameHeight)
    return 0;
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

interface Nose {
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
function detectNose(g: Grey, minContrast: number): Nose | undefined {
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

function percentile(hist: Uint32Array, n: number, q: number): number {
  const target = q * n;
  let acc = 0;
  for (let i = 0; i < hist.length; i++) {
    acc += hist[i];
    if (acc > target) return i;
  }
  return hist.length - 1;
}

/** Summed-area table, (w + 1) x (h + 1). */
function integral(g: Grey): Float64Array {
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

function boxSum(s: Float64Array, w: number, x0: number, y0: number, x1: number, y1: number): number {
  const W = w + 1;
  return s[y1 * W + x1] - s[y0 * W + x1] - s[y1 * W + x0] + s[y0 * W + x0];
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

// ---------------------------------------------------------------- nose region measures

/** The nose region resampled by box-averaging to about `width` px wide. */
interface Region {
  w: number;
  h: number;
  grey: Float32Array;
  /** (max - min) / max of the averaged RGB. */
  saturation: Float32Array;
  /** The largest of the averaged R, G, B. */
  peak: Float32Array;
}

function clipBox(b: NoseBox, width: number, height: number): NoseBox {
  const x0 = Math.max(0, Math.min(width - 1, Math.round(b.x)));
  const y0 = Math.max(0, Math.min(height - 1, Math.round(b.y)));
  const x1 = Math.max(x0 + 1, Math.min(width, Math.round(b.x + b.w)));
  const y1 = Math.max(y0 + 1, Math.min(height, Math.round(b.y + b.h)));
  return { x: x0, y: y0, w: x1 - x0, h: y1 - y0 };
}

function sampleRegion(f: Frame, box: NoseBox, width: number): Region {
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

function exposure(r: Region, o: QualityOptions) {
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

function glareShare(r: Region, o: QualityOptions): number {
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
function sharpness(r: Region): number {
  const { w, h, grey: g } = r;
  const R = 4;
  if (w <= 2 * R + 2 || h <= 2 * R + 2) return 0;
  const sat = integral({ w, h, v: g });
  const area = (2 * R + 1) ** 2;
  let sl = 0;
  let sll = 0;
  let sdd = 0;
  let n = 0;
  for (let y = R; y < h - R; y++) {
    for (let x = R; x < w - R; x++) {
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
  // A grey level of contrast keeps a flat region from dividing noise by ~0.
  return varL / (sdd / n + 1);
}
