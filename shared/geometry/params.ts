/**
 * How nose-print keypoints are found and matched. The feature half of these
 * parameters decides what a stored feature file holds, so it is named by
 * `featureSetId`: files made under another id are recomputed, as embeddings
 * of another model version are.
 */
export interface GeometryParams {
  /** Short side of the grey image the keypoints are found in, px. */
  side: number;
  /** CLAHE clip limit and tile grid: local contrast so beads show on dark and on pink leather alike. */
  claheClip: number;
  claheTiles: number;
  /** AKAZE detector response threshold. */
  akazeThreshold: number;
  /**
   * Sublevels per octave of AKAZE's nonlinear scale space (OpenCV's default
   * 4). Two halve the cost of a photo but separate worse on the rendered
   * pairs: genuine inliers p50 32 instead of 39, impostors up to 40 instead
   * of 20, and 45.6% of genuine pairs passing SAME instead of 64.1%.
   */
  akazeOctaveLayers: number;
  /** The strongest keypoints kept per photo: bounds matching cost (quadratic) and file size. */
  maxKeypoints: number;
  /** Lowe's ratio test between a descriptor's two nearest neighbours. */
  ratio: number;
  /**
   * Geometric model fitted by RANSAC between the two photos' matched points.
   * (OpenCV's WebAssembly build exports no similarity-transform estimator.)
   */
  model: "homography" | "affine";
  /** RANSAC reprojection threshold, px at `side`. */
  reprojectionPx: number;
}

export const DEFAULT_GEOMETRY_PARAMS: GeometryParams = {
  side: 256,
  claheClip: 2,
  claheTiles: 8,
  akazeThreshold: 0.0005,
  akazeOctaveLayers: 4,
  maxKeypoints: 400,
  ratio: 0.8,
  model: "homography",
  reprojectionPx: 6.4,
};

/** Names everything that changes a stored feature file's contents. */
export function featureSetId(p: GeometryParams): string {
  return `akaze-s${p.side}-t${p.akazeThreshold}-l${p.akazeOctaveLayers}-k${p.maxKeypoints}-clahe${p.claheClip}x${p.claheTiles}`;
}

/** Validates card-supplied parameters once, so a bad card fails at start-up. */
export function checkGeometryParams(p: GeometryParams): GeometryParams {
  const num = (v: unknown, lo: number, hi: number) => typeof v === "number" && Number.isFinite(v) && v >= lo && v <= hi;
  if (!num(p.side, 64, 1024) || !Number.isInteger(p.side)) throw new Error("geometry.params.side must be a whole number from 64 to 1024");
  if (!num(p.claheClip, 0, 40) || !num(p.claheTiles, 1, 64) || !Number.isInteger(p.claheTiles))
    throw new Error("geometry.params.claheClip/claheTiles out of range");
  if (!num(p.akazeThreshold, 1e-6, 1)) throw new Error("geometry.params.akazeThreshold must lie in [1e-6, 1]");
  if (!num(p.akazeOctaveLayers, 1, 8) || !Number.isInteger(p.akazeOctaveLayers))
    throw new Error("geometry.params.akazeOctaveLayers must be a whole number from 1 to 8");
  if (!num(p.maxKeypoints, 16, 10_000) || !Number.isInteger(p.maxKeypoints))
    throw new Error("geometry.params.maxKeypoints must be a whole number from 16 to 10000");
  if (!num(p.ratio, 0.1, 1)) throw new Error("geometry.params.ratio must lie in [0.1, 1]");
  if (!["homography", "affine"].includes(p.model)) throw new Error("geometry.params.model must be homography or affine");
  if (!num(p.reprojectionPx, 0.1, 100)) throw new Error("geometry.params.reprojectionPx must lie in [0.1, 100]");
  return p;
}
