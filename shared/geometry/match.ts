import type { CvMat, OpenCv } from "./opencv.js";
import type { NoseFeatures } from "./features.js";
import type { GeometryParams } from "./params.js";

/** What one geometric comparison found. */
export interface GeometricMatch {
  /** Descriptor matches that passed the ratio test. */
  candidates: number;
  /** Of those, the ones consistent with one geometric transform (RANSAC). */
  inliers: number;
  /** inliers / candidates; 0 when there were none. */
  inlierRatio: number;
}

/** RANSAC needs four point pairs for a homography (three for an affine map); fewer support nothing. */
const MIN_CANDIDATES = 4;

const NONE: GeometricMatch = { candidates: 0, inliers: 0, inlierRatio: 0 };

function descriptorMat(cv: OpenCv, f: NoseFeatures): CvMat {
  return cv.matFromArray(f.count, f.descriptorBytes, cv.CV_8UC1, f.descriptors);
}

/**
 * Matches `a`'s descriptors to `b`'s (Hamming, two nearest neighbours,
 * ratio test) and counts the matches one transform of `params.model`
 * explains within `params.reprojectionPx`.
 */
export function matchFeatures(cv: OpenCv, a: NoseFeatures, b: NoseFeatures, params: GeometryParams): GeometricMatch {
  if (a.count < 2 || b.count < 2) return NONE;
  if (a.descriptorBytes !== b.descriptorBytes)
    throw new RangeError(`descriptor sizes differ: ${a.descriptorBytes} vs ${b.descriptorBytes}`);
  const da = descriptorMat(cv, a);
  const db = descriptorMat(cv, b);
  const matcher = new cv.BFMatcher(cv.NORM_HAMMING, false);
  const knn = new cv.DMatchVectorVector();
  const src: number[] = [];
  const dst: number[] = [];
  try {
    matcher.knnMatch(da, db, knn, 2);
    for (let i = 0; i < knn.size(); i++) {
      const pair = knn.get(i);
      if (pair.size() < 2) continue;
      const best = pair.get(0);
      if (best.distance < params.ratio * pair.get(1).distance) {
        src.push(a.points[2 * best.queryIdx], a.points[2 * best.queryIdx + 1]);
        dst.push(b.points[2 * best.trainIdx], b.points[2 * best.trainIdx + 1]);
      }
    }
  } finally {
    for (const m of [da, db, matcher, knn]) m.delete();
  }
  const candidates = src.length / 2;
  if (candidates < MIN_CANDIDATES) return { candidates, inliers: 0, inlierRatio: 0 };
  const inliers = countInliers(cv, src, dst, params);
  return { candidates, inliers, inlierRatio: inliers / candidates };
}

function countInliers(cv: OpenCv, src: number[], dst: number[], params: GeometryParams): number {
  const n = src.length / 2;
  const s = cv.matFromArray(n, 1, cv.CV_32FC2, src);
  const d = cv.matFromArray(n, 1, cv.CV_32FC2, dst);
  const mask = new cv.Mat();
  let model: CvMat | undefined;
  try {
    if (params.model === "homography") model = cv.findHomography(s, d, cv.RANSAC, params.reprojectionPx, mask);
    else model = cv.estimateAffine2D(s, d, mask, cv.RANSAC, params.reprojectionPx);
    // No model found: OpenCV returns an empty matrix and leaves the mask empty.
    if (!model || model.rows === 0 || mask.rows !== n) return 0;
    let count = 0;
    for (let i = 0; i < n; i++) count += mask.data[i] ? 1 : 0;
    return count;
  } finally {
    s.delete();
    d.delete();
    mask.delete();
    model?.delete();
  }
}
