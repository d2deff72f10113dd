/**
 * The thresholds of the capture-quality checks, each with why it sits where
 * it does, and their instructions. They were set against two things (see
 * docs/capture/checks.md): the aggregate statistics of 4,000 real nose photos
 * (a check should turn away only what the embedding cannot use, not a share
 * of real noses), and how the shipped embedding's agreement between two
 * captures of one rendered nose falls as one of them is blurred or darkened.
 */
import type { CheckName } from "./types.js";

export interface QualityOptions {
  /**
   * Long side of the grey working image, px. 256: a nose at the smallest size
   * worth detecting (15% of a 720p frame's width) still has nostrils about
   * 8 px across, and box-averaging 1280x720 by 5 costs one read of the frame.
   */
  workingSize: number;
  /**
   * presence, when only the nostrils place the nose: the nostril pair's
   * contrast, 1 - (nostril mean / surrounding mean). 0.35: a nostril is a cavity lit only by light bouncing inside it;
   * on pink and black leather alike it is several times darker than the
   * leather around it (contrast 0.6-0.9), while dark specks in fur, shadows of
   * hair and JPEG blocks reach a third of that at most.
   */
  minNostrilContrast: number;
  /**
   * size: the nose's larger side / the frame's short side (so portrait and
   * landscape frames are judged alike). 0.25: 180 px of a 720p frame, and
   * real nose crops that made a public data set are 150-390 px on their short
   * side (5-95%, median 223), i.e. the model's 224 px input is routinely
   * filled from fewer pixels than that. A close-up whose nose photo spans
   * 300-432 px of a 720p frame (nose box 0.4-0.6) passes with room to spare.
   */
  minNoseSize: number;
  /**
   * presence: least contrast, 1 - (dome mean / surroundings' mean), of the
   * leather's dome (see `detectNose`); for a light leather lighter than the
   * fur, the same the other way round. 0.15: the mean real nose is a dome of
   * about 0.2 against corners of about 0.45 (contrast ~0.5); a black nose on
   * dark fur keeps a third of that, while the slow shading of a coat stays
   * under it.
   */
  minDomeContrast: number;
  /**
   * presence: least side of a dome, as a share of the frame's short side.
   * 0.2: above a nostril of a nose filling the frame's height (~0.14 of it,
   * more with its shadow), whose dark opening is as rounded as a dome. Under
   * the size check, so a nose told to move closer can still be found by its
   * dome; smaller ones are found by their nostril pair, or not at all.
   */
  minDomeSide: number;
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
   * `sharpness`), on the middle of the nose region at `sharpnessWidth`. A
   * ratio, so blind to exposure and contrast, which scale both alike. For a
   * pattern of spatial frequency f (cycles/px) it grows as (2 pi f)^2, and a
   * Gaussian blur of sigma px removes the share exp(-(2 pi f sigma)^2) of the
   * finest detail first. 0.25: on renders shown as 640 px close-ups, the
   * embedding's agreement between two captures of one nose is 0.999 as
   * rendered (median sharpness 0.58), 0.998 under a blur of 1 px at the
   * model's 224 px scale (0.27), and falls from there: 0.996 at 1.5 px
   * (0.20), 0.992 at 2 px (0.155), 0.978 at 3 px (0.12), 0.951 at 4 px
   * (0.105), 0.888 at 6 px (0.09, worst pair 0.77, under the 0.85 match
   * threshold). Stand-ins
   * matched to real photos measure 0.76-3.9 (5-95%), most of them upscaled
   * from a 150-390 px crop as real close-ups are; the same blurred by 6 px
   * at 640 px (2.1 px at the model's scale) 0.045-0.18. The old 1.0, fitted
   * to renders, turned away 39% of real close-ups.
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
   * exposure: largest share of crushed pixels on the nose region. 0.75:
   * a third of real noses are near-black leather (mean 0.105 of the range),
   * so half of such a nose may sit under the crushed level and still carry
   * its beads; renders darkened until agreement falls (gain 0.12-0.18)
   * crush 50-100%.
   */
  maxCrushed: number;
  /**
   * exposure: largest share of clipped pixels on the nose region. 0.1: a
   * wet nose has specular spots (real noses: under 3.7% of the centre in 95
   * of 100, see glare); past a tenth the leather itself is blowing out.
   */
  maxClipped: number;
  /**
   * exposure: largest share of the whole frame (working image) that is
   * clipped. 0.4: a close-up frame is mostly nose and fur; when far more of
   * it is white than the speculars explain, the exposure was set for
   * something darker than the scene, and a dark nose shown light by it
   * (three times over-exposed, say) is indistinguishable on its own from a
   * light-brown one.
   */
  maxFrameClipped: number;
  /**
   * exposure: the 95th percentile of the nose region's grey levels must reach
   * this. 24: on renders darkened by a gain, agreement is 0.987 at gain 0.25
   * (95th percentile 26-62), 0.975 at 0.18 (19-43) and 0.95 at 0.12 (12-29,
   * the worst pair at 0.85, the match threshold); the darkest stand-ins for
   * real black noses measure 31-32. The old 64 turned away one black nose
   * in ten.
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
   * glare: largest share of glare pixels on the nose region. 0.06: the
   * specular share of real noses' centres is under 0.5% for three in four
   * and under 3.7% for 95 in 100, pinpoints that hide a handful of beads; a
   * patch of 6% (a 25% wide disc) hides a region larger than a nostril.
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
  minNoseSize: 0.25,
  minDomeContrast: 0.15,
  minDomeSide: 0.2,
  maxCentreOffset: 0.15,
  sharpnessWidth: 192,
  minSharpness: 0.25,
  crushedLevel: 20,
  clippedLevel: 250,
  maxCrushed: 0.75,
  maxClipped: 0.1,
  maxFrameClipped: 0.4,
  minHighlight: 24,
  maxShadow: 200,
  glareLevel: 230,
  glareMaxSaturation: 0.2,
  maxGlare: 0.06,
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
