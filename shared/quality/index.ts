/**
 * Capture quality of camera frames of a dog's nose: `assessFrame` judges one
 * frame live (is there a nose, big and central enough, sharp, well exposed,
 * free of glare, the camera still) and `selectBest` keeps the best frames of a
 * burst. Pure and isomorphic: no Node or DOM imports. This file is the public
 * surface; the other files of the folder are internals.
 */
export { assessFrame } from "./assess-frame.js";
export { selectBest, type Candidate } from "./frame-select.js";
export { DEFAULT_QUALITY, INSTRUCTIONS, type QualityOptions } from "./options.js";
export type { CheckName, CheckResult, Frame, FrameAssessment, FrameStats, NoseBox } from "./types.js";
