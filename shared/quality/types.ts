/** The data types of the capture-quality checks. */

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
