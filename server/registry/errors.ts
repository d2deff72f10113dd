import { MLErrorCode } from "../../gen/nose_embedder_pb.js";
import { MLError, serviceUnavailable } from "../errors.js";

// The registry's own failures. Each supplies the extra response fields it
// reports (`responseFields`), named as in the RPC responses.

/**
 * The nose is already registered: INVALID_REQUEST (the caller must not retry)
 * carrying the existing pet's DID for the response's duplicate fields.
 */
export class DuplicatePetError extends MLError {
  constructor(
    readonly existingPetDid: string,
    /** The lowest of the new photos' scores against that pet (1 for an identical template). */
    readonly similarity: number,
    /** The duplicate similarity that was met; undefined when the template itself is already enrolled. */
    threshold?: number,
  ) {
    super(
      MLErrorCode.INVALID_REQUEST,
      threshold === undefined
        ? `this nose is already registered as ${existingPetDid} (the same enrolment template)`
        : `this nose is already registered as ${existingPetDid} (every photo matches it, lowest similarity ${similarity.toFixed(3)} >= ${threshold})`,
    );
    this.name = "DuplicatePetError";
  }

  /** The response's duplicate fields: the enrolled pet and the score that refused the registration. */
  responseFields() {
    return { duplicatePetDid: this.existingPetDid, duplicateSimilarity: this.similarity };
  }
}

/** Two of the registration photos do not show one nose: INVALID_REQUEST with the pair's score. */
export class InconsistentPhotosError extends MLError {
  constructor(
    /** 1-based photo numbers. */
    readonly pair: [number, number],
    readonly similarity: number,
    /** The similarity the pair had to reach: the running model card's `registration.pair_threshold`, else 0.70. */
    readonly threshold: number,
    /** The pair's keypoint inliers and the count that would have accepted it, when geometry was checked. */
    readonly geometry?: { inliers: number; required: number },
  ) {
    super(
      MLErrorCode.INVALID_REQUEST,
      `photos ${pair[0]} and ${pair[1]} do not show the same nose ` +
        `(similarity ${similarity.toFixed(3)} < ${threshold}` +
        (geometry ? `, ${geometry.inliers} keypoint inliers < ${geometry.required}` : "") +
        `); retake them`,
    );
    this.name = "InconsistentPhotosError";
  }

  /** The response's pair fields: the refused pair's score, and its inliers when geometry was checked. */
  responseFields() {
    return { minPairSimilarity: this.similarity, ...(this.geometry ? { minPairInliers: this.geometry.inliers } : {}) };
  }
}

/**
 * A server whose model version the registry has moved on from: its 1:N
 * answers would miss every pet already re-embedded. Retryable, so the caller
 * goes to an upgraded replica.
 */
export function supersededError(current: string, running: string) {
  return serviceUnavailable(`the registry has moved to model version ${current}; this server runs ${running} (a rollout is in progress)`);
}
