import type { MatchVerdict, Scores } from "../../shared/similarity.js";
import type { GeometryEvidence } from "../../shared/geometry/index.js";
import type { ClientVector } from "./client-parity.js";

// The values the use cases take and return, independent of the RPC layer.

export type PhotoInput = { bytes: Uint8Array } | { key: string };

export interface MatchScores extends Scores {
  verdict: MatchVerdict;
  /** What keypoint geometry found, when the flows have it. */
  geometry?: GeometryEvidence;
}

export interface CompareResult extends MatchScores {
  vectorSize: number;
}

export interface RegisterRequest {
  photos: PhotoInput[];
  requestId?: string;
  requestedBy?: string;
  /** The guardian agrees to the photos' use for training. Default false. */
  trainingConsent?: boolean;
  /** The caller's own embedding of each photo, same order; empty or absent: none. */
  clientEmbeddings?: ClientVector[];
}

export interface RegisterResult {
  petDid: string;
  /** Enrolment template, L2-normalised. */
  vector: Float32Array;
  vectorSize: number;
  imageKeys: string[];
  vectorKey: string;
  minPairSimilarity: number;
  modelVersion: string;
  /** False when a retry found the registration already done. */
  created: boolean;
  /**
   * An enrolled pet that some new photo matched at >= SAME_THRESHOLD without
   * meeting the duplicate rule: registered, flagged for an operator's review.
   * Only on the call that created the pet.
   */
  review?: DuplicateReview;
  /** Lowest cosine of the client embeddings against the server's, when given. */
  clientAgreement?: number;
  /** Inliers of the least similar pair of photos, when geometry is checked. */
  minPairInliers?: number;
}

/** One new photo's best match among the enrolled pets. */
export interface PhotoMatch {
  /** 1-based, as in error messages. */
  photo: number;
  petDid: string;
  similarity: number;
}

export interface DuplicateReview {
  /** The enrolled pet with the highest-scoring photo match. */
  petDid: string;
  /** That match's similarity. */
  similarity: number;
  /** Every new photo's best match. */
  matches: PhotoMatch[];
}

export interface VerifyRequest {
  petDid: string;
  photo: PhotoInput;
  requestedBy?: string;
  clientEmbedding?: ClientVector;
}

export interface VerifyResult extends MatchScores {
  /** Where the photo was stored when it came as bytes, else "". */
  storedImageKey: string;
  verificationId: string;
  modelVersion: string;
  vectorSize: number;
  clientAgreement?: number;
}

export interface IdentifyRequest {
  photo: PhotoInput;
  /** Default 5, at most 50. */
  topK?: number;
  /** Default 0. */
  minSimilarity?: number;
  clientEmbedding?: ClientVector;
}

export interface PetMatch extends MatchScores {
  petDid: string;
}

export interface IdentifyResult {
  /** Best first. */
  matches: PetMatch[];
  modelVersion: string;
  clientAgreement?: number;
}

export interface TransferRequest {
  petDid: string;
  photo: PhotoInput;
  fromGuardian: string;
  toGuardian: string;
  requestId?: string;
}

export interface TransferResult extends MatchScores {
  approved: boolean;
  /** "" when not approved. */
  approvalId: string;
  /** ISO 8601, "" when not approved. */
  approvedAt: string;
  storedImageKey: string;
  modelVersion: string;
}

export interface ConsentRequest {
  petDid: string;
  trainingConsent: boolean;
  requestedBy?: string;
  requestId?: string;
}

/** What one re-embedding sweep did. */
export interface ReembedReport {
  /** Embeddings moved to the running model version. */
  embeddings: number;
  /** Pets whose embeddings moved. */
  pets: number;
  /** The versions they came from, with how many embeddings each. */
  from: Record<string, number>;
  /** Enrolled images that are missing or cannot be embedded: their rows stay on the earlier version. */
  missing: Array<{ petDid: string; imageKey: string }>;
  /** Embeddings not written because the registry moved to a later version meanwhile. */
  superseded: number;
}

export interface Flows {
  /** Re-embeds enrolled images left by an earlier model version; returns how many. */
  reembedStale(batch?: number): Promise<number>;
  /** The same sweep, with a report; `keepGoing` is asked before each batch (a model reload stops it). */
  migrateStale(opts?: { batch?: number; keepGoing?: () => boolean }): Promise<ReembedReport>;
  compareWithStoredImage(req: { imageKey: string; petDid: string }): Promise<CompareResult>;
  registerPet(req: RegisterRequest): Promise<RegisterResult>;
  verifyPet(req: VerifyRequest): Promise<VerifyResult>;
  identifyPet(req: IdentifyRequest): Promise<IdentifyResult>;
  approveTransfer(req: TransferRequest): Promise<TransferResult>;
}
