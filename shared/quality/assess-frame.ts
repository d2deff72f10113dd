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
import { DEFAULT_QUALITY, INSTRUCTIONS, WEIGHTS, type QualityOptions } from "./options.js";
import type { CheckName, CheckResult, Frame, FrameAssessment, FrameStats, NoseBox } from "./types.js";
import { blur3, boxGrey, clipBox, sampleRegion, type Grey, type Region } from "./sampling.js";
import { detectNose } from "./nose-detect.js";
import { exposure, glareShare, motionBetween, sharpness, thumbnail } from "./measures.js";

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

  const nose = detectNose(blur3(work), o);
  let noseBox: NoseBox | undefined;
  let region: Region;
  if (nose) {
    const box = clipBox({ x: nose.x * factor, y: nose.y * factor, w: nose.w * factor, h: nose.h * factor }, frame.width, frame.height);
    noseBox = box;
    region = sampleRegion(frame, box, o.sharpnessWidth);
  } else {
    region = sampleRegion(frame, { x: 0, y: 0, w: frame.width, h: frame.height }, o.sharpnessWidth);
  }

  // Exposure first: a badly exposed frame makes every other measure unreliable.
  const ex = exposure(region, o);
  const frameClipped = clippedShare(work, o.clippedLevel);
  const dark = ex.crushed > o.maxCrushed || ex.p95 < o.minHighlight;
  // Clipped pixels that are glare (white, compact speculars) are the glare
  // check's business: a wet nose under a lamp is told "too much glare", not
  // "too bright".
  const glare = nose ? glareShare(region, o) : 0;
  const bright = ex.clipped - glare > o.maxClipped || ex.p10 > o.maxShadow || frameClipped > o.maxFrameClipped;
  const exQuality = Math.min(
    lowerBetter(ex.crushed, o.maxCrushed),
    lowerBetter(Math.max(0, ex.clipped - glare), o.maxClipped),
    higherBetter(ex.p95, o.minHighlight),
    lowerBetter(ex.p10, o.maxShadow),
    lowerBetter(frameClipped, o.maxFrameClipped),
  );
  add("exposure", ex.mean / 255, !dark && !bright, exQuality, dark ? INSTRUCTIONS.dark : INSTRUCTIONS.bright);

  const contrast = nose ? nose.contrast : 0;
  add("presence", contrast, nose !== undefined, higherBetter(contrast, o.minDomeContrast), INSTRUCTIONS.presence);

  // The nose's larger side: a dome cut by the fur on one side or a nose seen a
  // little from below is still as big as its larger side says.
  const size = noseBox ? (Math.max(nose!.w, nose!.h) * factor) / Math.min(frame.width, frame.height) : 0;
  add("size", size, size >= o.minNoseSize, higherBetter(size, o.minNoseSize), INSTRUCTIONS.size);

  let offset = 1;
  if (nose) {
    const cx = (nose.x + nose.w / 2) * factor;
    const cy = (nose.y + nose.h / 2) * factor;
    offset = Math.max(Math.abs(cx - frame.width / 2) / frame.width, Math.abs(cy - frame.height / 2) / frame.height);
  }
  add("centring", offset, offset <= o.maxCentreOffset, lowerBetter(offset, o.maxCentreOffset), INSTRUCTIONS.centring);

  const motion = previous ? motionBetween(previous, stats) : 0;
  add("motion", motion, motion <= o.maxMotion, lowerBetter(motion, o.maxMotion), INSTRUCTIONS.motion);

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

/** Share of the working image's pixels at or above `level`. */
function clippedShare(g: Grey, level: number): number {
  let n = 0;
  for (let i = 0; i < g.v.length; i++) if (g.v[i] >= level) n++;
  return n / g.v.length;
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
