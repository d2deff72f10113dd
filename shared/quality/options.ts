/** The thresholds of the capture-quality checks, each with why it sits where it does, and their instructions. */
import type { CheckName } from "./types.js";


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
export const WEIGHTS: Record<CheckName, number> = {
  presence: 1,
  size: 1,
  centring: 0.5,
  sharpness: 3,
  exposure: 1,
  glare: 1,
  motion: 1,
};
