/**
 * Scores between two nose-print embeddings.
 *
 * - cosine: raw cosine of the two vectors, in [-1, 1].
 * - cosineSimilarity: the cosine mapped linearly to [0, 1], (cos + 1) / 2.
 * - euclideanDistance: distance between the L2-normalised vectors, in [0, 2];
 *   equals sqrt(2 - 2 cos).
 * - similarity: the calibrated match score in [0, 1]. With a model card it is
 *   the card's monotone piecewise-linear map of the cosine, fitted so that the
 *   decision thresholds below hold their false-accept rates; without one it is
 *   the cosine clamped to [0, 1].
 */

/** A verdict follows from the calibrated similarity only. */
export const SAME_THRESHOLD = 0.85;
export const REVIEW_THRESHOLD = 0.7;
/**
 * Registration refuses a nose as already enrolled (a 1:N decision) only from
 * this similarity, when the model card gives none: the card's
 * `calibration.duplicate_similarity` is meant to sit where one comparison's
 * impostor false-accept rate is 1e-5, far stricter than SAME's 1e-3, because
 * the chance of a false duplicate grows with the number of enrolled pets.
 */
export const DEFAULT_DUPLICATE_SIMILARITY = 0.95;

export type MatchVerdict = "SAME" | "REVIEW" | "DIFFERENT";

/** Monotone piecewise-linear map from cosine to similarity (knots ascending). */
export interface Calibration {
  cosine: number[];
  similarity: number[];
  /** Similarity from which registration refuses a duplicate nose; optional, see DEFAULT_DUPLICATE_SIMILARITY. */
  duplicateSimilarity?: number;
}

export interface Scores {
  cosine: number;
  cosineSimilarity: number;
  euclideanDistance: number;
  similarity: number;
}

export function l2normalize(v: ArrayLike<number>): Float32Array {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i] * v[i];
  const n = Math.sqrt(s);
  const out = new Float32Array(v.length);
  if (n === 0) return out;
  for (let i = 0; i < v.length; i++) out[i] = v[i] / n;
  return out;
}

export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new RangeError(`vector sizes differ: ${a.length} vs ${b.length}`);
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  if (na === 0 || nb === 0) return 0;
  return Math.max(-1, Math.min(1, dot / Math.sqrt(na * nb)));
}

/** Validates knots once so a bad card fails at start-up, not per request. */
export function checkCalibration(c: Calibration): Calibration {
  const { cosine: xs, similarity: ys } = c;
  if (!Array.isArray(xs) || !Array.isArray(ys) || xs.length < 2 || xs.length !== ys.length) {
    throw new Error("calibration needs two equally long arrays 'cosine' and 'similarity' with at least 2 knots");
  }
  for (let i = 0; i < xs.length; i++) {
    if (!Number.isFinite(xs[i]) || !Number.isFinite(ys[i])) throw new Error("calibration knots must be finite numbers");
    if (ys[i] < 0 || ys[i] > 1) throw new Error("calibration similarity knots must lie in [0, 1]");
    if (i > 0 && (xs[i] <= xs[i - 1] || ys[i] < ys[i - 1])) {
      throw new Error("calibration must be increasing in cosine and non-decreasing in similarity");
    }
  }
  const d = c.duplicateSimilarity;
  if (d !== undefined && (typeof d !== "number" || !Number.isFinite(d) || d < SAME_THRESHOLD || d > 1)) {
    throw new Error(`calibration duplicate_similarity must be a number from ${SAME_THRESHOLD} to 1`);
  }
  return c;
}

/** The similarity from which registration refuses a nose as already enrolled. */
export function duplicateThreshold(c?: Calibration): number {
  return c?.duplicateSimilarity ?? DEFAULT_DUPLICATE_SIMILARITY;
}

export function calibrate(cos: number, c?: Calibration): number {
  if (!c) return Math.max(0, Math.min(1, cos));
  const { cosine: xs, similarity: ys } = c;
  if (cos <= xs[0]) return ys[0];
  const last = xs.length - 1;
  if (cos >= xs[last]) return ys[last];
  let lo = 0;
  let hi = last;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (xs[mid] <= cos) lo = mid;
    else hi = mid;
  }
  const t = (cos - xs[lo]) / (xs[hi] - xs[lo]);
  return ys[lo] + t * (ys[hi] - ys[lo]);
}

export function scores(a: ArrayLike<number>, b: ArrayLike<number>, c?: Calibration): Scores {
  const cos = cosine(a, b);
  return {
    cosine: cos,
    cosineSimilarity: (cos + 1) / 2,
    euclideanDistance: Math.sqrt(Math.max(0, 2 - 2 * cos)),
    similarity: calibrate(cos, c),
  };
}

export function verdictOf(similarity: number): MatchVerdict {
  if (similarity >= SAME_THRESHOLD) return "SAME";
  if (similarity >= REVIEW_THRESHOLD) return "REVIEW";
  return "DIFFERENT";
}

/** Enrolment template: the L2-normalised mean of normalised embeddings. */
export function template(vectors: ArrayLike<number>[]): Float32Array {
  if (vectors.length === 0) throw new RangeError("template needs at least one vector");
  const dim = vectors[0].length;
  const sum = new Float64Array(dim);
  for (const v of vectors) {
    const n = l2normalize(v);
    for (let i = 0; i < dim; i++) sum[i] += n[i];
  }
  return l2normalize(sum);
}
