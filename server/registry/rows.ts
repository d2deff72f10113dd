import type { ApprovalRecord, AuditKind, AuditRecord, PetRecord } from "./records.js";

// Rows as the database returns them, and the records and vectors they become.

export const toVectorLiteral = (v: ArrayLike<number>): string => {
  const parts = new Array<string>(v.length);
  for (let i = 0; i < v.length; i++) {
    if (!Number.isFinite(v[i])) throw new RangeError(`vector value at ${i} is not finite`);
    parts[i] = String(v[i]);
  }
  return `[${parts.join(",")}]`;
};

export const parseVector = (text: string): Float32Array => {
  const body = text.trim().replace(/^\[/, "").replace(/\]$/, "");
  return body === "" ? new Float32Array(0) : Float32Array.from(body.split(","), Number);
};

export interface PetRow {
  pet_did: string;
  created_at: Date | string;
  model_version: string;
  template: string;
  status: string;
  request_id: string | null;
  image_keys: string[];
  vector_key: string;
  min_pair_similarity: number;
  training_consent: boolean;
}

export const PET_COLUMNS =
  "pet_did, created_at, model_version, template::text AS template, status, request_id, image_keys, vector_key, min_pair_similarity, training_consent";

export const toPet = (r: PetRow): PetRecord => ({
  petDid: r.pet_did,
  createdAt: new Date(r.created_at),
  modelVersion: r.model_version,
  template: parseVector(r.template),
  status: r.status,
  requestId: r.request_id,
  imageKeys: r.image_keys,
  vectorKey: r.vector_key,
  minPairSimilarity: Number(r.min_pair_similarity),
  trainingConsent: r.training_consent === true,
});

export interface AuditRow {
  id: number | string;
  kind: AuditKind;
  pet_did: string | null;
  requested_by: string | null;
  request_id: string | null;
  similarity: number | null;
  cosine: number | null;
  verdict: string | null;
  model_version: string;
  created_at: Date | string;
  detail: unknown;
}

export const toAudit = (r: AuditRow): AuditRecord => ({
  id: Number(r.id),
  kind: r.kind,
  petDid: r.pet_did,
  requestedBy: r.requested_by,
  requestId: r.request_id,
  similarity: r.similarity === null ? null : Number(r.similarity),
  cosine: r.cosine === null ? null : Number(r.cosine),
  verdict: r.verdict,
  modelVersion: r.model_version,
  createdAt: new Date(r.created_at),
  detail: (typeof r.detail === "string" ? JSON.parse(r.detail) : (r.detail ?? {})) as Record<string, unknown>,
});

export interface ApprovalRow {
  approval_id: string;
  pet_did: string;
  from_guardian: string;
  to_guardian: string;
  similarity: number;
  cosine: number;
  cosine_similarity: number;
  euclidean_distance: number;
  model_version: string;
  approved_at: Date | string;
  request_id: string | null;
}

export const APPROVAL_COLUMNS =
  "approval_id::text AS approval_id, pet_did, from_guardian, to_guardian, similarity, cosine, cosine_similarity, euclidean_distance, model_version, approved_at, request_id";

export const toApproval = (r: ApprovalRow): ApprovalRecord => ({
  approvalId: r.approval_id,
  petDid: r.pet_did,
  fromGuardian: r.from_guardian,
  toGuardian: r.to_guardian,
  similarity: Number(r.similarity),
  cosine: Number(r.cosine),
  cosineSimilarity: Number(r.cosine_similarity),
  euclideanDistance: Number(r.euclidean_distance),
  modelVersion: r.model_version,
  approvedAt: new Date(r.approved_at),
  requestId: r.request_id,
});
