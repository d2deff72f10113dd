import { duplicateThreshold, scores, verdictOf, type Calibration } from "../../shared/similarity.js";
import type { GeometryEvidence } from "../../shared/geometry/index.js";
import { EMBEDDING_DIM } from "../db/migrations.js";
import { MLError, inferenceError, invalidRequest, vectorDimensionMismatch } from "../errors.js";
import { sniffFormat } from "../image/header.js";
import { validateImageKey, validateUploadedPhotoKey } from "../storage/keys.js";
import type { ObjectStore } from "../storage/object-store.js";
import { checkClientVectors, DEFAULT_CLIENT_PARITY_MIN_COSINE, type ClientAgreement, type ClientVector } from "./client-parity.js";
import { supersededError } from "./errors.js";
import { REGISTER_PAIR_THRESHOLD } from "./input.js";
import type { GeometricCheck } from "./geometric-check.js";
import type { Registry, RegistryReader } from "./registry.js";
import type { MatchScores, PhotoInput } from "./types.js";

export interface FlowDeps {
  store: ObjectStore;
  registry: Registry;
  /** Decode + preprocess + model; throws MLError (INVALID_IMAGE, IMAGE_TOO_LARGE, ...) itself. */
  embed: (bytes: Uint8Array) => Promise<Float32Array>;
  calibration?: Calibration;
  modelVersion: string;
  /** The similarity every pair of a registration's photos must reach: the model card's, else REGISTER_PAIR_THRESHOLD (0.70). */
  registerPairThreshold?: number;
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

/** What every use case shares: one per loaded model, kept across requests. */
export interface FlowContext {
  store: ObjectStore;
  registry: Registry;
  embed: (bytes: Uint8Array) => Promise<Float32Array>;
  calibration?: Calibration;
  modelVersion: string;
  geometry?: GeometricCheck;
  now: () => Date;
  log: (event: string, fields: Record<string, unknown>) => void;
  /** Cosine a client embedding must reach against the server's. */
  parityBound: number;
  /** The similarity a duplicate refusal needs, from the card's calibration. */
  duplicateAt: number;
  /** The similarity every pair of a registration's photos must reach, from the same model's card. */
  pairAt: number;
  /** Per-process state: the last verify_{ms} timestamp handed out, so shots of one process never collide. */
  shots: { lastMs: number };
}

/** The context of one set of use cases, with the defaults filled in. */
export function createContext(deps: FlowDeps): FlowContext {
  return {
    store: deps.store,
    registry: deps.registry,
    embed: deps.embed,
    calibration: deps.calibration,
    modelVersion: deps.modelVersion,
    geometry: deps.geometry,
    now: deps.now ?? (() => new Date()),
    log: deps.log ?? (() => {}),
    parityBound: deps.clientParityMinCosine ?? DEFAULT_CLIENT_PARITY_MIN_COSINE,
    duplicateAt: duplicateThreshold(deps.calibration),
    pairAt: deps.registerPairThreshold ?? REGISTER_PAIR_THRESHOLD,
    shots: { lastMs: 0 },
  };
}

/** The scores of two embeddings and the similarity's verdict. */
export function scored(ctx: FlowContext, a: Float32Array, b: Float32Array): MatchScores {
  if (a.length !== b.length) {
    throw vectorDimensionMismatch(`photo embedding has ${a.length} dimensions, stored vector has ${b.length}`);
  }
  const s = scores(a, b, ctx.calibration);
  return { ...s, verdict: verdictOf(s.similarity) };
}

/** Best score of `probe` over the references (a pet matches by its best photo). */
export function bestOf(ctx: FlowContext, probe: Float32Array, refs: Float32Array[]): MatchScores {
  let best: MatchScores | undefined;
  for (const r of refs) {
    const s = scored(ctx, probe, r);
    if (!best || s.cosine > best.cosine) best = s;
  }
  return best!;
}

/** Embeds one photo; `label` ("photo 2") prefixes any failure so the caller knows which one. */
export async function embedPhoto(ctx: FlowContext, bytes: Uint8Array, label: string): Promise<Float32Array> {
  let v: Float32Array;
  try {
    v = await ctx.embed(bytes);
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
export async function loadPhoto(
  ctx: FlowContext,
  photo: PhotoInput | undefined,
  label: string,
  petDid?: string,
): Promise<{ bytes: Uint8Array; key?: string }> {
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
  const bytes = await ctx.store.get(key);
  if (bytes === undefined) throw invalidRequest(`${label}: image not found: ${key}`);
  if (bytes.length === 0) throw invalidRequest(`${label}: stored image is empty: ${key}`);
  return { bytes, key };
}

/** The Content-Type a stored photo gets: its real format, whatever its `.jpg` name says. */
export function contentTypeOf(bytes: Uint8Array): string {
  const format = sniffFormat(bytes);
  return format ? `image/${format}` : "application/octet-stream";
}

/** Request-level checks of optional client vectors; [] when none were given. */
export function clientVectors(ctx: FlowContext, given: ClientVector[] | undefined, labels: string[]): ClientVector[] {
  const list = Array.isArray(given) ? given.filter((c) => c !== undefined && c !== null) : [];
  if (list.length > 0) checkClientVectors(list, labels, ctx.modelVersion, EMBEDDING_DIM);
  return list;
}

/** The audit detail's record of accepted client vectors. */
export function clientDetail(a: ClientAgreement | undefined) {
  return a
    ? {
        clientEmbedding: {
          agreement: a.agreement,
          cosines: a.cosines,
          executionProvider: a.executionProvider,
          modelVersion: a.modelVersion,
        },
      }
    : {};
}

/** The audit detail's record of the geometric check. */
export function geometryDetail(g: GeometryEvidence | undefined) {
  if (!g) return {};
  return g.checked
    ? {
        geometry: {
          inliers: g.inliers,
          inlierRatio: g.inlierRatio,
          required: g.required,
          supported: g.supported,
          probeKeypoints: g.probeKeypoints,
        },
      }
    : { geometry: { checked: false, reason: g.reason } };
}

/** SERVICE_UNAVAILABLE when the registry has moved to a later model version than this one. */
export async function refuseIfSuperseded(ctx: FlowContext, reader: RegistryReader): Promise<void> {
  const later = await reader.supersededBy(ctx.modelVersion);
  if (later !== undefined) throw supersededError(later, ctx.modelVersion);
}

/** The message of anything thrown, for log fields. */
export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
