import { REVIEW_THRESHOLD, verdictOf, type MatchVerdict } from "../similarity.js";

/**
 * When keypoint geometry must back a decision, from the model card's
 * `geometry.policy`. The inlier thresholds are fitted where synthetic
 * impostor pairs (look-alike families included) pass at a per-pair rate of
 * at most 1e-4. Chance inliers come from the detector, the matcher and the
 * geometric model rather than from how the photos were made, which is why
 * these thresholds carry from renders to photos where a cosine threshold
 * does not.
 */
export interface GeometryPolicy {
  /** SAME needs a similarity of at least this... */
  sameSimilarity: number;
  /** ...and at least this many RANSAC inliers against one enrolled photo. */
  sameInliers: number;
  /** Registration refuses a nose as another pet's only with this many inliers against that pet too. */
  duplicateInliers: number;
  /** Two registration photos whose similarity falls short are still one nose from this many inliers. */
  consistencyInliers: number;
  /** An enrolled photo with fewer keypoints cannot back a decision; a pet without one is decided by similarity alone. */
  minKeypoints: number;
}

/**
 * The policy for models whose card has no `geometry` block (any user model
 * with the input/output contract): the bundled card's fitted values, which
 * depend on the detector and matcher rather than on the embedding.
 */
export const DEFAULT_GEOMETRY_POLICY: GeometryPolicy = {
  sameSimilarity: 0.7,
  sameInliers: 25,
  duplicateInliers: 35,
  consistencyInliers: 25,
  minKeypoints: 50,
};

/** What the geometric check found for one decision, or why it could not run. */
export type GeometryEvidence =
  | {
      checked: true;
      /** Best over the enrolled photos. */
      inliers: number;
      inlierRatio: number;
      candidates: number;
      probeKeypoints: number;
      /** The inliers this decision required. */
      required: number;
      supported: boolean;
    }
  | { checked: false; reason: string };

export function checkGeometryPolicy(p: GeometryPolicy): GeometryPolicy {
  const whole = (v: unknown) => typeof v === "number" && Number.isInteger(v) && v >= 4 && v <= 10_000;
  for (const k of ["sameInliers", "duplicateInliers", "consistencyInliers"] as const) {
    if (!whole(p[k])) throw new Error(`geometry.policy.${k} must be a whole number from 4 to 10000`);
  }
  if (typeof p.minKeypoints !== "number" || !Number.isInteger(p.minKeypoints) || p.minKeypoints < 0) {
    throw new Error("geometry.policy.minKeypoints must be a whole number >= 0");
  }
  if (typeof p.sameSimilarity !== "number" || !(p.sameSimilarity >= REVIEW_THRESHOLD && p.sameSimilarity <= 1)) {
    throw new Error(`geometry.policy.sameSimilarity must lie in [${REVIEW_THRESHOLD}, 1]`);
  }
  return p;
}

/**
 * The verdict of a 1:1 comparison. With geometry checked, SAME needs both
 * the similarity and the inliers; strong geometry alone lifts a low
 * similarity to REVIEW, never to SAME. Without it (a pet whose enrolled
 * photos cannot be read for keypoints), the similarity decides alone, as
 * before geometry existed.
 */
export function decideVerdict(similarity: number, geometry: GeometryEvidence | undefined, policy: GeometryPolicy): MatchVerdict {
  if (!geometry?.checked) return verdictOf(similarity);
  if (geometry.supported && similarity >= policy.sameSimilarity) return "SAME";
  if (similarity >= REVIEW_THRESHOLD || geometry.supported) return "REVIEW";
  return "DIFFERENT";
}
