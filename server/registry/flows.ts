import { randomUUID } from "node:crypto";
import { MLErrorCode } from "../../gen/nose_embedder_pb.js";
import { throwIfCancelled } from "../observe/request-context.js";
import { isValidPetDid, petDidFromVector } from "../../shared/did.js";
import { NpyError, readNpy, writeNpy } from "../../shared/npy.js";
import { duplicateThreshold, REVIEW_THRESHOLD, SAME_THRESHOLD, scores, template, verdictOf } from "../../shared/similarity.js";
import type { Calibration, MatchVerdict, Scores } from "../../shared/similarity.js";
import { EMBEDDING_DIM } from "../db/migrations.js";
import {
  MLError,
  inferenceError,
  internalError,
  invalidRequest,
  isRetryable,
  serviceUnavailable,
  vectorDimensionMismatch,
  vectorNotFound,
} from "../errors.js";
import { imageKey, validateImageKey, validateUploadedPhotoKey, vectorKey, verifyImageKey } from "../storage/keys.js";
import { readLegacyVector } from "../storage/legacy-vector.js";
import type { ObjectStore } from "../storage/object-store.js";
import type { AuditEntry, ConsentChange, EmbeddingRecord, PetRecord, Registry, RegistryReader } from "./registry.js";
import { readHeader, sniffFormat } from "../image/decode.js";
import { checkClientVectors, clientAgreement, DEFAULT_CLIENT_PARITY_MIN_COSINE, type ClientAgreement, type ClientVector } from "./client-parity.js";
import { decideVerdict, type GeometryEvidence, type NoseFeatures } from "../../shared/geometry/index.js";
import type { EnrolledKeypoints, GeometricCheck } from "./geometric-check.js";

/**
 * The nose-print use cases, independent of the RPC layer: plain values in,
 * plain values out, failures thrown as MLError.
 *
 * Registration write order (why a failure anywhere leaves no half pet):
 *   1. photos are embedded and checked; nothing is written before all pass;
 *   2. objects: image_1.jpg .. image_N.jpg, then vector.npy;
 *   3. the database rows (pet, embeddings, audit) in one transaction, last.
 * A pet exists only once step 3 commits: every lookup goes through the
 * registry first. If an object write fails, the objects this attempt already
 * wrote are deleted (best effort) and the error is returned, retryable. If
 * the database step fails, the objects are left in place, because the commit
 * may have happened with only its acknowledgement lost; a retry rewrites the
 * same keys with the same bytes (the DID is a hash of the template, so the
 * keys do not change) and then either inserts the rows or finds them.
 *
 * Idempotency: with a request id, a repeat of a registration that already
 * committed returns the stored result without re-embedding (the id is the
 * caller's promise that it is the same request). Without one, registering the
 * same nose again is refused as a duplicate that names the existing DID.
 *
 * Registration rules (see README, "Registration rules"):
 *   - consistency: every pair of the new photos must reach REVIEW_THRESHOLD
 *     (0.70); the lowest pair score is returned and audited;
 *   - duplicate: refused only when every new photo's best match among the
 *     enrolled pets is the same pet, each at >= the card's duplicate
 *     similarity (per-comparison impostor FAR 1e-5; 0.95 without one). A best
 *     match at >= SAME_THRESHOLD that does not meet this is registered and
 *     recorded for review (audit detail, log line, response);
 *   - a template identical to an enrolled one (same DID) is always refused.
 *
 * Photos are stored as the bytes received, under the platform's `.jpg` names
 * even when they are PNG: the file names are part of the layout the gateway
 * and older tools expect, the original bytes are the evidence (no re-encoding
 * loss), and the Content-Type records the real format.
 */

export type PhotoInput = { bytes: Uint8Array } | { key: string };

/** A pet's reference embeddings and the enrolled photos behind them. */
interface References {
  vectors: Float32Array[];
  imageKeys: string[];
}

export interface FlowDeps {
  store: ObjectStore;
  registry: Registry;
  /** Decode + preprocess + model; throws MLError (INVALID_IMAGE, IMAGE_TOO_LARGE, ...) itself. */
  embed: (bytes: Uint8Array) => Promise<Float32Array>;
  calibration?: Calibration;
  modelVersion: string;
  /** Cosine a client embedding must reach against the server's (default 0.999). */
  clientParityMinCosine?: number;
  /**
   * Keypoint geometry as a second factor (see geometric-check.ts): SAME,
   * transfer approval and duplicate refusal then need its support too.
   * Without it every decision follows the similarity alone.
   */
  geometry?: GeometricCheck;
  now?: () => Date;
  log?: (event: string, fields: Record<string, unknown>) => void;
}

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
}

/** Two of the registration photos do not show one nose: INVALID_REQUEST with the pair's score. */
export class InconsistentPhotosError extends MLError {
  constructor(
    /** 1-based photo numbers. */
    readonly pair: [number, number],
    readonly similarity: number,
    /** The pair's keypoint inliers and the count that would have accepted it, when geometry was checked. */
    readonly geometry?: { inliers: number; required: number },
  ) {
    super(
      MLErrorCode.INVALID_REQUEST,
      `photos ${pair[0]} and ${pair[1]} do not show the same nose ` +
        `(similarity ${similarity.toFixed(3)} < ${REGISTER_PAIR_THRESHOLD}` +
        (geometry ? `, ${geometry.inliers} keypoint inliers < ${geometry.required}` : "") +
        `); retake them`,
    );
    this.name = "InconsistentPhotosError";
  }
}

export const MIN_REGISTER_PHOTOS = 2;
/**
 * Enrolment photos set the template every later check is compared with, so
 * they must carry detail: beads are a few pixels wide even at 224 px. Half the
 * model's input size on the short side is the least accepted (verification
 * shots may be smaller).
 */
export const MIN_ENROL_SIDE = 112;
export const MAX_REGISTER_PHOTOS = 10;
export const DEFAULT_TOP_K = 5;
export const MAX_TOP_K = 50;
/**
 * Every pair of one registration's photos must reach this (REVIEW, 0.70):
 * the duplicate check and the stored template guard against the rest, and
 * at SAME (0.85) most real dogs' photo pairs were refused.
 */
export const REGISTER_PAIR_THRESHOLD = REVIEW_THRESHOLD;

const MAX_ID_LENGTH = 128;
const MAX_GUARDIAN_LENGTH = 256;
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/** Shortens caller-supplied text before it goes into an error message. */
const shown = (s: unknown) => {
  const t = typeof s === "string" ? s : String(s);
  return JSON.stringify(t.length > 80 ? `${t.slice(0, 80)}...` : t);
};

function checkDid(petDid: unknown): string {
  if (!isValidPetDid(petDid)) throw invalidRequest(`invalid pet DID ${shown(petDid)}`);
  return petDid;
}

function optionalText(value: unknown, what: string, max: number): string | undefined {
  if (value === undefined || value === null || value === "") return undefined;
  if (typeof value !== "string" || value.length > max || CONTROL.test(value)) {
    throw invalidRequest(`${what} must be text of at most ${max} characters without control characters`);
  }
  return value;
}

function requiredText(value: unknown, what: string, max: number): string {
  const v = optionalText(value, what, max);
  if (v === undefined) throw invalidRequest(`${what} is required`);
  return v;
}

/** Decodability is checked by embedding; here only the declared size. */
function checkEnrolmentSize(bytes: Uint8Array, label: string): void {
  const format = sniffFormat(bytes);
  if (!format) return;
  let side: number;
  try {
    const h = readHeader(bytes, format);
    side = Math.min(h.width, h.height);
  } catch {
    return; // the decoder reports a broken header with its own message
  }
  if (side < MIN_ENROL_SIDE) {
    throw invalidRequest(`${label} is only ${side} px on its short side; registration needs at least ${MIN_ENROL_SIDE} px, retake it closer`);
  }
}

function contentTypeOf(bytes: Uint8Array): string {
  const format = sniffFormat(bytes);
  return format ? `image/${format}` : "application/octet-stream";
}

/** The audit detail's record of the geometric check. */
function geometryDetail(g: GeometryEvidence | undefined) {
  if (!g) return {};
  return g.checked
    ? { geometry: { inliers: g.inliers, inlierRatio: g.inlierRatio, required: g.required, supported: g.supported, probeKeypoints: g.probeKeypoints } }
    : { geometry: { checked: false, reason: g.reason } };
}

/** 1:N: the shortlist's first candidates by cosine whose geometry is checked (two matches per candidate). */
export const IDENTIFY_GEOMETRY_CANDIDATES = 10;

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * A server whose model version the registry has moved on from: its 1:N
 * answers would miss every pet already re-embedded. Retryable, so the caller
 * goes to an upgraded replica.
 */
export function supersededError(current: string, running: string) {
  return serviceUnavailable(`the registry has moved to model version ${current}; this server runs ${running} (a rollout is in progress)`);
}

function consentValue(value: unknown): boolean {
  if (typeof value !== "boolean") throw invalidRequest(`training consent must be true or false, got ${shown(value)}`);
  return value;
}

/**
 * Grants or withdraws a registered pet's training consent, audited as kind
 * 'consent' with the previous and the new value. Needs no model, so it is
 * outside createFlows: it answers while a model is still loading.
 * `modelVersion` only labels the audit row.
 */
export async function setTrainingConsent(registry: Registry, req: ConsentRequest, modelVersion: string): Promise<ConsentChange> {
  const petDid = checkDid(req?.petDid);
  const trainingConsent = consentValue(req?.trainingConsent);
  const requestedBy = optionalText(req?.requestedBy, "requested by", MAX_GUARDIAN_LENGTH);
  const requestId = optionalText(req?.requestId, "request id", MAX_ID_LENGTH);
  const change = await registry.setTrainingConsent(petDid, trainingConsent, { requestedBy, requestId, modelVersion });
  if (!change) throw vectorNotFound(`no registered pet ${petDid}`);
  return change;
}

export function createFlows(deps: FlowDeps): Flows {
  const { store, registry, calibration, modelVersion } = deps;
  const geometric = deps.geometry;
  const now = deps.now ?? (() => new Date());
  const log = deps.log ?? (() => {});
  const parityBound = deps.clientParityMinCosine ?? DEFAULT_CLIENT_PARITY_MIN_COSINE;
  let lastShotMs = 0;

  /** Request-level checks of optional client vectors; [] when none were given. */
  const clientVectors = (given: ClientVector[] | undefined, labels: string[]): ClientVector[] => {
    const list = Array.isArray(given) ? given.filter((c) => c !== undefined && c !== null) : [];
    if (list.length > 0) checkClientVectors(list, labels, modelVersion, EMBEDDING_DIM);
    return list;
  };
  /** The audit detail's record of accepted client vectors. */
  const clientDetail = (a: ClientAgreement | undefined) =>
    a ? { clientEmbedding: { agreement: a.agreement, cosines: a.cosines, executionProvider: a.executionProvider, modelVersion: a.modelVersion } } : {};

  const scored = (a: Float32Array, b: Float32Array): MatchScores => {
    if (a.length !== b.length) {
      throw vectorDimensionMismatch(`photo embedding has ${a.length} dimensions, stored vector has ${b.length}`);
    }
    const s = scores(a, b, calibration);
    return { ...s, verdict: verdictOf(s.similarity) };
  };

  /** Embeds one photo; `label` ("photo 2") prefixes any failure so the caller knows which one. */
  async function embedPhoto(bytes: Uint8Array, label: string): Promise<Float32Array> {
    let v: Float32Array;
    try {
      v = await deps.embed(bytes);
    } catch (e) {
      if (e instanceof MLError) throw new MLError(e.code, `${label}: ${e.message}`, { cause: e });
      throw inferenceError(`${label}: embedding failed`, e);
    }
    if (v.length !== EMBEDDING_DIM || !v.every(Number.isFinite)) {
      throw inferenceError(`${label}: the model returned ${v.length} values, expected ${EMBEDDING_DIM} finite ones`);
    }
    return v;
  }

  /**
   * Bytes of a photo given inline or by key. With `petDid` the key must lie
   * under that pet's folder; without, under some pet's folder.
   */
  async function loadPhoto(photo: PhotoInput | undefined, label: string, petDid?: string): Promise<{ bytes: Uint8Array; key?: string }> {
    const p = photo as { bytes?: unknown; key?: unknown } | undefined;
    const hasBytes = p?.bytes !== undefined && p?.bytes !== null;
    const hasKey = p?.key !== undefined && p?.key !== null && p?.key !== "";
    if (hasBytes === hasKey) throw invalidRequest(`${label}: give either image bytes or an image key`);
    if (hasBytes) {
      if (!(p!.bytes instanceof Uint8Array) || p!.bytes.length === 0) throw invalidRequest(`${label}: image data is empty`);
      return { bytes: p!.bytes };
    }
    let key: string;
    try {
      key = petDid === undefined ? validateUploadedPhotoKey(p!.key).key : validateImageKey(p!.key, petDid);
    } catch (e) {
      throw e instanceof MLError ? new MLError(e.code, `${label}: ${e.message}`, { cause: e }) : e;
    }
    const bytes = await store.get(key);
    if (bytes === undefined) throw invalidRequest(`${label}: image not found: ${key}`);
    if (bytes.length === 0) throw invalidRequest(`${label}: stored image is empty: ${key}`);
    return { bytes, key };
  }

  /**
   * Embeddings of different model versions are not comparable: a row from an
   * earlier model is re-embedded from its stored image with the current one
   * (and saved) before use. Rows whose image is gone are left out.
   */
  async function current(petDid: string, rows: EmbeddingRecord[]): Promise<Float32Array[]> {
    const out: Float32Array[] = [];
    const from: string[] = [];
    for (const r of rows) {
      if (r.modelVersion === modelVersion) {
        out.push(r.embedding);
        continue;
      }
      const fresh = await reembed(petDid, r.imageKey);
      if (fresh) {
        out.push(fresh.embedding);
        if (fresh.written) from.push(r.modelVersion);
      }
    }
    await auditModelChange(petDid, from);
    return out;
  }

  /** One 'reembed' audit row per pet whose enrolled photos moved to the running model: the versions they left. */
  async function auditModelChange(petDid: string, from: string[]): Promise<void> {
    if (from.length === 0) return;
    await registry.addAudit({
      kind: "reembed",
      petDid,
      modelVersion,
      detail: { images: from.length, fromModelVersions: [...new Set(from)].sort() },
    });
  }

  /** The image's embedding by the running model; `written` is false when the registry has moved past it (kept in memory only). */
  async function reembed(petDid: string, imageKey: string): Promise<{ embedding: Float32Array; written: boolean } | undefined> {
    const bytes = await store.get(imageKey);
    if (bytes === undefined) {
      log("reembed.missing_image", { petDid, imageKey });
      return undefined;
    }
    const embedding = await embedPhoto(bytes, imageKey);
    return { embedding, written: await registry.replaceEmbedding(petDid, imageKey, embedding, modelVersion) };
  }

  /**
   * The pet's reference vectors: its enrolled embeddings; for pets the
   * previous server registered, vector.npy and then the legacy JSON template.
   * With them, the enrolled photos their keypoints come from.
   */
  async function referencesOf(petDid: string): Promise<References> {
    const rows = await registry.embeddingsOf(petDid);
    const refs = await current(petDid, rows);
    if (refs.length > 0) return { vectors: refs, imageKeys: rows.map((r) => r.imageKey) };
    const pet = await registry.findPet(petDid);
    if (pet) {
      // The template is a mean of embeddings by the registering model: no score against another version's probe.
      if (pet.modelVersion === modelVersion) return { vectors: [pet.template], imageKeys: pet.imageKeys };
      throw vectorNotFound(
        `no nose print of pet ${petDid} by model version ${modelVersion}: it was enrolled by ${pet.modelVersion} and its photos cannot be read to re-embed them; register it again`,
      );
    }

    // Pets of the previous server: its photos, where they are, under the platform's names.
    const platformPhotos = [imageKey(petDid, 1), imageKey(petDid, 2)];
    const key = vectorKey(petDid);
    const npy = await store.get(key);
    if (npy !== undefined) {
      try {
        return { vectors: readNpy(npy, EMBEDDING_DIM).rows, imageKeys: platformPhotos };
      } catch (e) {
        if (e instanceof NpyError && e.reason === "dimension") throw vectorDimensionMismatch(`${key}: ${e.message}`);
        throw internalError(`stored vector ${key} is unreadable: ${errorMessage(e)}`, e);
      }
    }
    const legacy = await readLegacyVector(store, petDid, EMBEDDING_DIM);
    if (legacy) return { vectors: [legacy.vector], imageKeys: platformPhotos };
    throw vectorNotFound(`no enrolled nose print for pet ${petDid}`);
  }

  /** Best score of `probe` over the references (a pet matches by its best photo). */
  function bestOf(probe: Float32Array, refs: Float32Array[]): MatchScores {
    let best: MatchScores | undefined;
    for (const r of refs) {
      const s = scored(probe, r);
      if (!best || s.cosine > best.cosine) best = s;
    }
    return best!;
  }

  /**
   * The match's verdict with keypoint geometry behind it: SAME needs the
   * policy's inliers against one of the pet's enrolled photos. Without a
   * geometric check the verdict stays the similarity's.
   */
  async function withGeometry(match: MatchScores, probe: NoseFeatures | undefined, enrolled: Promise<EnrolledKeypoints> | undefined): Promise<MatchScores> {
    if (!geometric || !enrolled) return match;
    const evidence = await geometric.compare(probe, await enrolled, geometric.policy.sameInliers);
    return { ...match, geometry: evidence, verdict: decideVerdict(match.similarity, evidence, geometric.policy) };
  }

  /** verify_{ms}.jpg, unique: monotonic within this process, probed against the store across processes. */
  async function storeVerifyShot(petDid: string, bytes: Uint8Array): Promise<string> {
    let ts = Math.max(now().getTime(), lastShotMs + 1);
    for (let attempt = 0; ; attempt++) {
      const key = verifyImageKey(petDid, ts);
      if (attempt >= 8 || !(await store.exists(key))) {
        lastShotMs = ts;
        throwIfCancelled();
        await store.put(key, bytes, contentTypeOf(bytes));
        return key;
      }
      ts++;
    }
  }

  /** Verification shared by verifyPet and approveTransfer; a client vector is checked before the shot is stored. */
  async function matchPet(petDid: string, photo: PhotoInput, client: ClientVector[] = []) {
    const refs = await referencesOf(petDid);
    const { bytes, key } = await loadPhoto(photo, "photo", petDid);
    // The enrolled keypoints load while the photo is embedded and its keypoints found.
    const enrolled = geometric?.enrolledOf(refs.imageKeys);
    enrolled?.catch(() => {}); // awaited below; a failure is reported there, not as unhandled
    const [probe, features] = await Promise.all([embedPhoto(bytes, "photo"), geometric?.photo(bytes)]);
    const agreement = client.length > 0 ? clientAgreement(client, [probe], ["photo"], parityBound) : undefined;
    const match = await withGeometry(bestOf(probe, refs.vectors), features, enrolled);
    const storedImageKey = key === undefined ? await storeVerifyShot(petDid, bytes) : "";
    return { match, imageKey: key, storedImageKey, agreement };
  }

  const duplicateAt = duplicateThreshold(calibration);

  /** The best geometric support any new photo has against an enrolled pet (undefined without geometry). */
  async function duplicateGeometry(petDid: string, features: Array<NoseFeatures | undefined>, memo: Map<string, GeometryEvidence>) {
    if (!geometric) return undefined;
    const known = memo.get(petDid);
    if (known) return known;
    if (features.every((f) => f === undefined)) {
      // Nothing to compare: the similarity decides, as without geometry.
      return { checked: false as const, reason: "no keypoints could be found in the new photos" };
    }
    const keys = (await registry.embeddingsOf(petDid)).map((r) => r.imageKey);
    let best: GeometryEvidence | undefined;
    for (const f of features) {
      const e = await geometric.againstEnrolled(f, keys, geometric.policy.duplicateInliers);
      if (!e.checked) {
        best = e;
        break;
      }
      if (!best || (best.checked && e.inliers > best.inliers)) best = e;
    }
    best ??= { checked: false, reason: "no keypoints" };
    memo.set(petDid, best);
    return best;
  }

  async function refuseIfSuperseded(reader: RegistryReader): Promise<void> {
    const later = await reader.supersededBy(modelVersion);
    if (later !== undefined) throw supersededError(later, modelVersion);
  }

  /**
   * Every pair of one registration's photos must reach REGISTER_PAIR_THRESHOLD,
   * or, with geometry, share the policy's consistency inliers: two photos of
   * one shoot share many keypoints even where the embedding falls short.
   * Returns the least similar pair, with its inliers when geometry is checked.
   */
  async function checkConsistent(embeddings: Float32Array[], features: Array<NoseFeatures | undefined>) {
    let minPair = Infinity;
    let worst: [number, number] = [1, 2];
    const short: Array<{ pair: [number, number]; similarity: number }> = [];
    for (let i = 0; i < embeddings.length; i++) {
      for (let j = i + 1; j < embeddings.length; j++) {
        const s = scored(embeddings[i], embeddings[j]).similarity;
        if (s < minPair) {
          minPair = s;
          worst = [i + 1, j + 1];
        }
        if (s < REGISTER_PAIR_THRESHOLD) short.push({ pair: [i + 1, j + 1], similarity: s });
      }
    }
    if (!geometric) {
      if (minPair < REGISTER_PAIR_THRESHOLD) throw new InconsistentPhotosError(worst, minPair);
      return { minPair, worst, minPairInliers: undefined };
    }
    const required = geometric.policy.consistencyInliers;
    const inliersOf = ([a, b]: [number, number]) => geometric.pair(features[a - 1], features[b - 1]);
    let minPairInliers: number | undefined;
    for (const { pair, similarity } of short.sort((x, y) => x.similarity - y.similarity)) {
      const inliers = await inliersOf(pair);
      if (inliers < required) throw new InconsistentPhotosError(pair, similarity, { inliers, required });
      if (pair === short[0].pair) minPairInliers = inliers;
    }
    minPairInliers ??= await inliersOf(worst);
    return { minPair, worst, minPairInliers };
  }

  /**
   * 1:N with geometry: the first candidates by cosine are checked against
   * their enrolled photos and take the verdict it gives; those with
   * geometric support come first. A 1:N SAME is never the cosine's alone.
   */
  async function rerankWithGeometry(shortlist: PetMatch[], probe: NoseFeatures | undefined): Promise<PetMatch[]> {
    if (!geometric) return shortlist;
    const checked = await Promise.all(
      shortlist.map(async (m, i) => {
        if (i >= IDENTIFY_GEOMETRY_CANDIDATES) {
          // Not checked: no SAME on the cosine alone.
          return { ...m, verdict: m.verdict === "SAME" ? ("REVIEW" as const) : m.verdict };
        }
        const keys = (await registry.embeddingsOf(m.petDid)).map((r) => r.imageKey);
        const evidence = await geometric.againstEnrolled(probe, keys, geometric.policy.sameInliers);
        return { ...m, geometry: evidence, verdict: decideVerdict(m.similarity, evidence, geometric.policy) };
      }),
    );
    const supported = (m: PetMatch) => (m.geometry?.checked && m.geometry.supported ? 1 : 0);
    return checked.sort((a, b) => supported(b) - supported(a) || b.cosine - a.cosine || (a.petDid < b.petDid ? -1 : 1));
  }

  /**
   * The 1:N duplicate rule. Throws DuplicatePetError when every new photo's
   * best match is the same enrolled pet at >= duplicateAt and, with
   * geometry, some new photo shares the policy's duplicate inliers with that
   * pet's enrolled photos; otherwise returns the review to record when some
   * photo's best match reaches SAME. `evidence` keeps the geometry found per
   * pet, so the check repeated under the registration lock does not redo it.
   */
  async function checkNotRegistered(
    reader: RegistryReader,
    embeddings: Float32Array[],
    ownDid: string,
    features: Array<NoseFeatures | undefined> = [],
    evidence = new Map<string, GeometryEvidence>(),
  ): Promise<DuplicateReview | undefined> {
    // The DID hashes the template; an existing row for it is the same nose even if the search missed it.
    if (await reader.findPet(ownDid)) throw new DuplicatePetError(ownDid, 1);
    const matches: PhotoMatch[] = [];
    for (let i = 0; i < embeddings.length; i++) {
      let best: { petDid: string; similarity: number; cosine: number } | undefined;
      for (const n of await reader.nearestPets(embeddings[i], 3, modelVersion)) {
        const s = scored(embeddings[i], n.embedding);
        if (!best || s.cosine > best.cosine) best = { petDid: n.petDid, similarity: s.similarity, cosine: s.cosine };
      }
      if (best) matches.push({ photo: i + 1, petDid: best.petDid, similarity: best.similarity });
    }
    if (matches.length === 0) return undefined;
    const lowest = Math.min(...matches.map((m) => m.similarity));
    if (
      matches.length === embeddings.length &&
      matches.every((m) => m.petDid === matches[0].petDid) &&
      lowest >= duplicateAt
    ) {
      const geometry = await duplicateGeometry(matches[0].petDid, features, evidence);
      if (!geometry?.checked || geometry.supported) throw new DuplicatePetError(matches[0].petDid, lowest, duplicateAt);
      // The embedding says duplicate, the keypoints do not: registered, and recorded for review below.
      log("register.duplicate_without_geometry", { candidatePetDid: matches[0].petDid, similarity: lowest, inliers: geometry.inliers, required: geometry.required });
    }
    const top = matches.reduce((a, b) => (b.similarity > a.similarity ? b : a));
    if (top.similarity < SAME_THRESHOLD) return undefined;
    return { petDid: top.petDid, similarity: top.similarity, matches };
  }

  async function migrateStale({ batch = 32, keepGoing = () => true }: { batch?: number; keepGoing?: () => boolean } = {}): Promise<ReembedReport> {
    const report: ReembedReport = { embeddings: 0, pets: 0, from: {}, missing: [], superseded: 0 };
    const pets = new Set<string>();
    // Rows that cannot move (image missing, registry moved on) stay stale: skip them on later pages.
    const skipped = new Set<string>();
    while (keepGoing()) {
      const stale = (await registry.staleEmbeddings(modelVersion, batch + skipped.size)).filter((s) => !skipped.has(`${s.petDid}\n${s.imageKey}`));
      if (stale.length === 0) break;
      const moved = new Map<string, string[]>();
      for (const s of stale.slice(0, batch)) {
        let fresh: Awaited<ReturnType<typeof reembed>>;
        try {
          fresh = await reembed(s.petDid, s.imageKey);
        } catch (e) {
          // A stored photo the model cannot take (corrupt) must not stop the sweep; outages must.
          if (!(e instanceof MLError) || e.code > MLErrorCode.INVALID_REQUEST) throw e;
          log("reembed.unreadable_image", { petDid: s.petDid, imageKey: s.imageKey, error: e.message });
          fresh = undefined;
        }
        if (!fresh || !fresh.written) {
          skipped.add(`${s.petDid}\n${s.imageKey}`);
          if (!fresh) report.missing.push({ petDid: s.petDid, imageKey: s.imageKey });
          else report.superseded++;
          continue;
        }
        report.embeddings++;
        report.from[s.modelVersion] = (report.from[s.modelVersion] ?? 0) + 1;
        pets.add(s.petDid);
        moved.set(s.petDid, [...(moved.get(s.petDid) ?? []), s.modelVersion]);
      }
      for (const [petDid, from] of moved) await auditModelChange(petDid, from);
      // The registry moved to a later version: this sweep has nothing left to do.
      if (report.superseded > 0) break;
    }
    report.pets = pets.size;
    return report;
  }

  const registered = (pet: PetRecord): RegisterResult => ({
    petDid: pet.petDid,
    vector: pet.template,
    vectorSize: pet.template.length,
    imageKeys: pet.imageKeys,
    vectorKey: pet.vectorKey,
    minPairSimilarity: pet.minPairSimilarity,
    modelVersion: pet.modelVersion,
    created: false,
  });

  return {
    async reembedStale(batch = 32) {
      return (await migrateStale({ batch })).embeddings;
    },

    migrateStale,


    async compareWithStoredImage(req) {
      const petDid = checkDid(req?.petDid);
      const key = validateImageKey(req?.imageKey, petDid);
      const refs = await referencesOf(petDid);
      const bytes = await store.get(key);
      if (bytes === undefined) throw invalidRequest(`image not found: ${key}`);
      // The stored image against the other enrolled photos: against itself it would match every keypoint.
      const enrolled = geometric?.enrolledOf(refs.imageKeys.filter((k) => k !== key));
      enrolled?.catch(() => {}); // awaited below
      const [probe, features] = await Promise.all([embedPhoto(bytes, "image"), geometric?.photo(bytes)]);
      return { ...(await withGeometry(bestOf(probe, refs.vectors), features, enrolled)), vectorSize: probe.length };
    },

    async registerPet(req) {
      const requestId = optionalText(req?.requestId, "request id", MAX_ID_LENGTH);
      const requestedBy = optionalText(req?.requestedBy, "requested by", MAX_GUARDIAN_LENGTH);
      const trainingConsent = consentValue(req?.trainingConsent ?? false);
      const photoCount = Array.isArray(req?.photos) ? req.photos.length : 0;
      const givenClient = Array.isArray(req?.clientEmbeddings) ? req.clientEmbeddings : [];
      if (givenClient.length > 0 && givenClient.length !== photoCount) {
        throw invalidRequest(`give one client embedding per photo: ${photoCount} photos, ${givenClient.length} client embeddings`);
      }
      const client = clientVectors(givenClient, givenClient.map((_, i) => `photo ${i + 1}`));
      if (requestId) {
        const done = await registry.findPetByRequestId(requestId);
        if (done) return registered(done);
      }
      await refuseIfSuperseded(registry);
      const photos = Array.isArray(req?.photos) ? req.photos : [];
      if (photos.length < MIN_REGISTER_PHOTOS) {
        throw invalidRequest(`registration needs at least ${MIN_REGISTER_PHOTOS} photos of the nose, got ${photos.length}`);
      }
      if (photos.length > MAX_REGISTER_PHOTOS) {
        throw invalidRequest(`registration takes at most ${MAX_REGISTER_PHOTOS} photos, got ${photos.length}`);
      }

      // 1. Load and embed every photo before writing anything.
      const loaded: Array<{ bytes: Uint8Array; key?: string }> = [];
      for (let i = 0; i < photos.length; i++) {
        const p = await loadPhoto(photos[i], `photo ${i + 1}`);
        checkEnrolmentSize(p.bytes, `photo ${i + 1}`);
        loaded.push(p);
      }
      // Embedded concurrently: the preprocessing pool and the micro-batcher take them together,
      // while the geometry worker finds their keypoints.
      const [embeddings, features] = await Promise.all([
        Promise.all(loaded.map((p, i) => embedPhoto(p.bytes, `photo ${i + 1}`))),
        Promise.all(loaded.map((p) => geometric?.photo(p.bytes))),
      ]);
      const agreement = client.length > 0 ? clientAgreement(client, embeddings, client.map((_, i) => `photo ${i + 1}`), parityBound) : undefined;
      const { minPair, worst, minPairInliers } = await checkConsistent(embeddings, features);
      const tpl = template(embeddings);
      const petDid = petDidFromVector(tpl);
      const duplicateEvidence = new Map<string, GeometryEvidence>();
      await checkNotRegistered(registry, embeddings, petDid, features, duplicateEvidence);

      // 2. Objects: photos, then the template.
      const imageKeys = loaded.map((_, i) => imageKey(petDid, i + 1));
      const vKey = vectorKey(petDid);
      const written: string[] = [];
      try {
        for (let i = 0; i < loaded.length; i++) {
          if (loaded[i].key === imageKeys[i]) continue; // already in place (a retry given the stored keys)
          // A call that ended stops writing; what it wrote is removed below.
          // Once every object is in place the rows follow even so, so a
          // registration is never left half made.
          throwIfCancelled();
          await store.put(imageKeys[i], loaded[i].bytes, contentTypeOf(loaded[i].bytes));
          written.push(imageKeys[i]);
        }
        throwIfCancelled();
        await store.put(vKey, writeNpy(tpl), "application/octet-stream");
        written.push(vKey);
      } catch (e) {
        for (const key of written.reverse()) {
          await store.delete(key).catch((err) => log("register.cleanup_failed", { key, error: errorMessage(err) }));
        }
        throw e;
      }

      // 3. Rows, last and atomically.
      const audit: AuditEntry = {
        kind: "register",
        petDid,
        requestedBy,
        requestId,
        similarity: minPair,
        modelVersion,
        detail: {
          imageKeys,
          vectorKey: vKey,
          photos: photos.length,
          minPairSimilarity: minPair,
          lowestPair: worst,
          ...(minPairInliers === undefined ? {} : { minPairInliers }),
          trainingConsent,
          ...clientDetail(agreement),
        },
      };
      // Decided again under the registration lock; that answer is the one kept.
      let review: DuplicateReview | undefined;
      let outcome: "inserted" | "exists";
      try {
        outcome = await registry.insertPet(
          {
            petDid,
            template: tpl,
            modelVersion,
            requestId,
            requestedBy,
            imageKeys,
            vectorKey: vKey,
            minPairSimilarity: minPair,
            trainingConsent,
            embeddings: embeddings.map((embedding, i) => ({ imageKey: imageKeys[i], embedding })),
          },
          audit,
          async (tx) => {
            // Under the lock a rollout's adoption also takes: rows written here are either seen by its sweep or refused.
            await refuseIfSuperseded(tx);
            review = await checkNotRegistered(tx, embeddings, petDid, features, duplicateEvidence);
            if (review) audit.detail = { ...audit.detail, duplicateReview: { ...review, threshold: duplicateAt } };
          },
        );
      } catch (e) {
        // A duplicate found under the lock means nothing committed and the
        // objects under this new DID belong to no one: remove them.
        if (e instanceof DuplicatePetError && e.existingPetDid !== petDid) {
          for (const key of written) await store.delete(key).catch(() => {});
        }
        throw e;
      }
      if (outcome === "exists") {
        // Lost a race: the same request id, or the same nose, committed first.
        const byRequest = requestId ? await registry.findPetByRequestId(requestId) : undefined;
        if (byRequest) return registered(byRequest);
        throw new DuplicatePetError(petDid, 1);
      }
      if (review) {
        log("register.duplicate_review", {
          petDid,
          candidatePetDid: review.petDid,
          similarity: review.similarity,
          duplicateSimilarity: duplicateAt,
          matches: review.matches,
          requestId,
        });
      }
      await geometric?.enrol(imageKeys.map((key, i) => ({ imageKey: key, features: features[i] })));
      log("register.done", { petDid, photos: photos.length, idempotencyKey: requestId, minPairSimilarity: minPair, minPairInliers, clientAgreement: agreement?.agreement });
      return {
        petDid,
        vector: tpl,
        vectorSize: tpl.length,
        imageKeys,
        vectorKey: vKey,
        minPairSimilarity: minPair,
        modelVersion,
        created: true,
        ...(review ? { review } : {}),
        ...(agreement ? { clientAgreement: agreement.agreement } : {}),
        ...(minPairInliers === undefined ? {} : { minPairInliers }),
      };
    },

    async verifyPet(req) {
      const petDid = checkDid(req?.petDid);
      const requestedBy = optionalText(req?.requestedBy, "requested by", MAX_GUARDIAN_LENGTH);
      const client = clientVectors(req?.clientEmbedding ? [req.clientEmbedding] : [], [""]);
      const { match, imageKey: key, storedImageKey, agreement } = await matchPet(petDid, req?.photo, client);
      const verificationId = randomUUID();
      await registry.addAudit({
        kind: "verify",
        petDid,
        requestedBy,
        similarity: match.similarity,
        cosine: match.cosine,
        verdict: match.verdict,
        modelVersion,
        detail: { verificationId, imageKey: key ?? storedImageKey, ...geometryDetail(match.geometry), ...clientDetail(agreement) },
      });
      return {
        ...match,
        storedImageKey,
        verificationId,
        modelVersion,
        vectorSize: EMBEDDING_DIM,
        ...(agreement ? { clientAgreement: agreement.agreement } : {}),
      };
    },

    async identifyPet(req) {
      const topK = req?.topK === undefined || req.topK === 0 ? DEFAULT_TOP_K : req.topK;
      if (!Number.isInteger(topK) || topK < 1 || topK > MAX_TOP_K) {
        throw invalidRequest(`topK must be an integer from 1 to ${MAX_TOP_K}, got ${shown(req?.topK)}`);
      }
      const minSimilarity = req?.minSimilarity ?? 0;
      if (!Number.isFinite(minSimilarity) || minSimilarity < 0 || minSimilarity > 1) {
        throw invalidRequest(`minSimilarity must lie in [0, 1], got ${shown(req?.minSimilarity)}`);
      }
      const client = clientVectors(req?.clientEmbedding ? [req.clientEmbedding] : [], [""]);
      await refuseIfSuperseded(registry);
      const { bytes } = await loadPhoto(req?.photo, "photo");
      const [probe, features] = await Promise.all([embedPhoto(bytes, "photo"), geometric?.photo(bytes)]);
      const agreement = client.length > 0 ? clientAgreement(client, [probe], ["photo"], parityBound) : undefined;
      // The index picks candidates in float32; scores come from the one shared formula.
      const shortlist: PetMatch[] = (await registry.nearestPets(probe, topK, modelVersion))
        .map((n) => ({ petDid: n.petDid, ...scored(probe, n.embedding) }))
        .filter((m) => m.similarity >= minSimilarity)
        .sort((a, b) => b.cosine - a.cosine || (a.petDid < b.petDid ? -1 : 1));
      const matches = await rerankWithGeometry(shortlist, features);
      await registry.addAudit({
        kind: "identify",
        petDid: matches[0]?.petDid,
        similarity: matches[0]?.similarity,
        cosine: matches[0]?.cosine,
        verdict: matches[0]?.verdict,
        modelVersion,
        detail: {
          topK,
          minSimilarity,
          matches: matches.map((m) => ({ petDid: m.petDid, similarity: m.similarity, ...(m.geometry?.checked ? { inliers: m.geometry.inliers } : {}) })),
          ...clientDetail(agreement),
        },
      });
      return { matches, modelVersion, ...(agreement ? { clientAgreement: agreement.agreement } : {}) };
    },

    async approveTransfer(req) {
      const petDid = checkDid(req?.petDid);
      const fromGuardian = requiredText(req?.fromGuardian, "fromGuardian", MAX_GUARDIAN_LENGTH);
      const toGuardian = requiredText(req?.toGuardian, "toGuardian", MAX_GUARDIAN_LENGTH);
      if (fromGuardian === toGuardian) throw invalidRequest("fromGuardian and toGuardian are the same");
      const requestId = optionalText(req?.requestId, "request id", MAX_ID_LENGTH);

      if (requestId) {
        const prior = await registry.findApproval(requestId);
        if (prior) {
          if (prior.petDid !== petDid || prior.fromGuardian !== fromGuardian || prior.toGuardian !== toGuardian) {
            throw invalidRequest(`request id ${shown(requestId)} was already used for another transfer`);
          }
          return {
            approved: true,
            approvalId: prior.approvalId,
            approvedAt: prior.approvedAt.toISOString(),
            cosine: prior.cosine,
            cosineSimilarity: prior.cosineSimilarity,
            euclideanDistance: prior.euclideanDistance,
            similarity: prior.similarity,
            verdict: verdictOf(prior.similarity),
            storedImageKey: "",
            modelVersion: prior.modelVersion,
          };
        }
      }

      const { match, imageKey: key, storedImageKey } = await matchPet(petDid, req?.photo);
      const audit: AuditEntry = {
        kind: "transfer",
        petDid,
        requestedBy: toGuardian,
        requestId,
        similarity: match.similarity,
        cosine: match.cosine,
        verdict: match.verdict,
        modelVersion,
        detail: { fromGuardian, toGuardian, imageKey: key ?? storedImageKey, approved: match.verdict === "SAME", ...geometryDetail(match.geometry) },
      };
      if (match.verdict !== "SAME") {
        await registry.addAudit(audit);
        return { ...match, approved: false, approvalId: "", approvedAt: "", storedImageKey, modelVersion };
      }
      throwIfCancelled();
      const record = await registry.insertApproval(
        {
          petDid,
          fromGuardian,
          toGuardian,
          similarity: match.similarity,
          cosine: match.cosine,
          cosineSimilarity: match.cosineSimilarity,
          euclideanDistance: match.euclideanDistance,
          modelVersion,
          requestId,
        },
        audit,
      );
      return {
        ...match,
        approved: true,
        approvalId: record.approvalId,
        approvedAt: record.approvedAt.toISOString(),
        storedImageKey,
        modelVersion,
      };
    },
  };
}
