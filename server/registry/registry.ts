import type { Database, Queryable } from "../db/database.js";

/**
 * SQL access to registered pets, their enrolled embeddings, the audit log and
 * transfer approvals. No business rules here: flows.ts decides, this stores.
 */

export type AuditKind = "register" | "verify" | "transfer" | "identify" | "consent" | "reembed";

export interface NewPet {
  petDid: string;
  template: Float32Array;
  modelVersion: string;
  requestId?: string;
  requestedBy?: string;
  imageKeys: string[];
  vectorKey: string;
  minPairSimilarity: number;
  /** The guardian agreed to the photos' use for training. Default false. */
  trainingConsent?: boolean;
  /** One per enrolled photo, in photo order. */
  embeddings: Array<{ imageKey: string; embedding: Float32Array }>;
}

export interface PetRecord {
  petDid: string;
  createdAt: Date;
  modelVersion: string;
  template: Float32Array;
  status: string;
  requestId: string | null;
  imageKeys: string[];
  vectorKey: string;
  minPairSimilarity: number;
  trainingConsent: boolean;
}

export interface EmbeddingRecord {
  imageKey: string;
  embedding: Float32Array;
  modelVersion: string;
  createdAt: Date;
}

/** Best-matching enrolled embedding of one pet. */
export interface NearestPet {
  petDid: string;
  imageKey: string;
  embedding: Float32Array;
  /** pgvector's cosine distance (1 - cosine), computed in float32. */
  distance: number;
}

export interface AuditEntry {
  kind: AuditKind;
  petDid?: string;
  requestedBy?: string;
  requestId?: string;
  similarity?: number;
  cosine?: number;
  verdict?: string;
  modelVersion: string;
  detail?: Record<string, unknown>;
}

/** An audit row as stored. */
export interface AuditRecord {
  id: number;
  kind: AuditKind;
  petDid: string | null;
  requestedBy: string | null;
  requestId: string | null;
  similarity: number | null;
  cosine: number | null;
  verdict: string | null;
  modelVersion: string;
  createdAt: Date;
  detail: Record<string, unknown>;
}

export interface ConsentChange {
  petDid: string;
  /** The value before the call. */
  previous: boolean;
  /** The value after the call. */
  trainingConsent: boolean;
  /** False when a retry of the same request id found it already recorded. */
  recorded: boolean;
}

export interface PetFilter {
  /** Only pets with this consent value. */
  trainingConsent?: boolean;
  /** Only pets registered at or after this instant. */
  registeredSince?: Date;
}

export interface NewApproval {
  petDid: string;
  fromGuardian: string;
  toGuardian: string;
  similarity: number;
  cosine: number;
  cosineSimilarity: number;
  euclideanDistance: number;
  modelVersion: string;
  requestId?: string;
}

export interface ApprovalRecord extends Required<Omit<NewApproval, "requestId">> {
  approvalId: string;
  approvedAt: Date;
  requestId: string | null;
}

/** The read side of the registry, usable inside a transaction. */
export interface RegistryReader {
  findPet(petDid: string): Promise<PetRecord | undefined>;
  findPetByRequestId(requestId: string): Promise<PetRecord | undefined>;
  embeddingsOf(petDid: string): Promise<EmbeddingRecord[]>;
  /**
   * Up to k active pets whose best enrolled embedding is nearest to `v` by
   * cosine, nearest first. With `modelVersion`, only embeddings made by that
   * version take part: a score across model versions means nothing.
   */
  nearestPets(v: Float32Array, k: number, modelVersion?: string): Promise<NearestPet[]>;
  /**
   * The model version the registry has moved on to since `modelVersion` was
   * adopted, or undefined when `modelVersion` is the latest adopted (or was
   * never adopted: a replica that is about to adopt it is not behind).
   */
  supersededBy(modelVersion: string): Promise<string | undefined>;
}

export interface Registry extends RegistryReader {
  /**
   * Inserts the pet, its embeddings and a 'register' audit row in one
   * transaction. `guard` runs first inside it, after a lock that serialises
   * registrations across replicas, and may throw to abort (the duplicate
   * check). Returns "exists" without writing when the DID or the request id
   * is already registered.
   */
  insertPet(pet: NewPet, audit: AuditEntry, guard?: (tx: RegistryReader) => Promise<void>): Promise<"inserted" | "exists">;
  addAudit(entry: AuditEntry): Promise<void>;
  /** Enrolled images whose embedding came from another model version, oldest first. */
  staleEmbeddings(modelVersion: string, limit: number): Promise<Array<{ petDid: string; imageKey: string; modelVersion: string }>>;
  /**
   * Replaces one enrolled image's embedding with `modelVersion`'s. Written
   * only while that version is not superseded (an old replica during a
   * rollout re-embeds in memory but must not move rows back); returns
   * whether the row was written.
   */
  replaceEmbedding(petDid: string, imageKey: string, embedding: Float32Array, modelVersion: string): Promise<boolean>;
  /**
   * Records that a server runs `modelVersion`. A version seen for the first
   * time becomes the registry's current one (a rollout); one seen before does
   * not, unless `promote` (an operator's explicit choice, as a rollback).
   * Serialised with registrations, so a registration by a replica on the
   * earlier version commits before this or sees it.
   */
  adoptModelVersion(modelVersion: string, promote?: boolean): Promise<void>;
  /**
   * Runs `fn` while holding the re-embedding lock, so one replica at a time
   * sweeps; answers `{ ran: false }` at once when another holds it. PGlite is
   * single-process and needs none.
   */
  withSweepLock<R>(fn: () => Promise<R>): Promise<{ ran: true; result: R } | { ran: false }>;
  /** A cheap round trip that fails when the database does not answer. */
  ping(): Promise<void>;
  findApproval(requestId: string): Promise<ApprovalRecord | undefined>;
  /**
   * Sets a pet's training consent and writes a 'consent' audit row (detail:
   * previous and new value) in one transaction. Undefined for an unknown pet.
   * With a request id already recorded for this pet, nothing is written.
   */
  setTrainingConsent(
    petDid: string,
    trainingConsent: boolean,
    audit: Omit<AuditEntry, "kind" | "petDid">,
  ): Promise<ConsentChange | undefined>;
  /** Pets matching the filter, oldest registration first. */
  listPets(filter?: PetFilter): Promise<PetRecord[]>;
  /** A pet's audit rows, oldest first, optionally of the given kinds only. */
  auditOf(petDid: string, kinds?: AuditKind[]): Promise<AuditRecord[]>;
  /** Records an approval and its audit row; idempotent on request id (returns the first one). */
  insertApproval(approval: NewApproval, audit: AuditEntry): Promise<ApprovalRecord>;
  /** Pets per status and enrolled embeddings per model version, for monitoring. */
  counts(): Promise<{ pets: Record<string, number>; embeddings: Record<string, number> }>;
}

export interface RegistryOptions {
  /**
   * hnsw.ef_search for nearest-pet queries; pgvector's default of 40 misses too many. Default 200: the
   * smallest that found exact search's top pet for 99% of enrolled dogs at 100k pets (bench, 1:N).
   */
  efSearch?: number;
}

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

// Serialises registrations (duplicate check + insert) across replicas: "nosepet\0".
const REGISTER_LOCK = "7957705946101543936";
// One re-embedding sweep at a time across replicas: "nosewep\0".
export const SWEEP_LOCK = "7957705946370244608";

/**
 * The nearest-rows query. Filtering on model_version keeps the HNSW index in
 * use with pgvector's iterative scan (set per transaction), which reads on
 * until enough rows pass the filter instead of returning fewer.
 */
export const NEAREST_ROWS_SQL = `SELECT best.pet_did, best.image_key, best.embedding::text AS embedding, best.distance
   FROM (SELECT DISTINCT ON (c.pet_did) c.pet_did, c.image_key, c.embedding, c.distance
           FROM (SELECT e.pet_did, e.image_key, e.embedding, e.embedding <=> $1::vector AS distance
                   FROM pet_embeddings e
                  WHERE ($4::text IS NULL OR e.model_version = $4::text)
                  ORDER BY e.embedding <=> $1::vector
                  LIMIT $2) c
           JOIN pets p ON p.pet_did = c.pet_did AND p.status = 'active'
          ORDER BY c.pet_did, c.distance) best
  ORDER BY best.distance, best.pet_did
  LIMIT $3`;

const SUPERSEDED_SQL = `SELECT v.version FROM model_versions v JOIN model_versions mine ON mine.version = $1
  WHERE v.promotion > mine.promotion ORDER BY v.promotion DESC LIMIT 1`;

interface PetRow {
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

const PET_COLUMNS =
  "pet_did, created_at, model_version, template::text AS template, status, request_id, image_keys, vector_key, min_pair_similarity, training_consent";

const toPet = (r: PetRow): PetRecord => ({
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

interface AuditRow {
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

const toAudit = (r: AuditRow): AuditRecord => ({
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

interface ApprovalRow {
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

const APPROVAL_COLUMNS =
  "approval_id::text AS approval_id, pet_did, from_guardian, to_guardian, similarity, cosine, cosine_similarity, euclidean_distance, model_version, approved_at, request_id";

const toApproval = (r: ApprovalRow): ApprovalRecord => ({
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

function reader(q: Queryable, efSearch: number, inTransaction: (fn: (tx: Queryable) => Promise<NearestPet[]>) => Promise<NearestPet[]>): RegistryReader {
  return {
    async findPet(petDid) {
      const { rows } = await q.query<PetRow>(`SELECT ${PET_COLUMNS} FROM pets WHERE pet_did = $1`, [petDid]);
      return rows[0] && toPet(rows[0]);
    },
    async findPetByRequestId(requestId) {
      const { rows } = await q.query<PetRow>(`SELECT ${PET_COLUMNS} FROM pets WHERE request_id = $1`, [requestId]);
      return rows[0] && toPet(rows[0]);
    },
    async embeddingsOf(petDid) {
      const { rows } = await q.query<{ image_key: string; embedding: string; model_version: string; created_at: Date | string }>(
        "SELECT image_key, embedding::text AS embedding, model_version, created_at FROM pet_embeddings WHERE pet_did = $1 ORDER BY id",
        [petDid],
      );
      return rows.map((r) => ({
        imageKey: r.image_key,
        embedding: parseVector(r.embedding),
        modelVersion: r.model_version,
        createdAt: new Date(r.created_at),
      }));
    },
    async nearestPets(v, k, modelVersion) {
      // The HNSW index answers "nearest rows"; a pet has several rows, so ask
      // for more rows than pets and keep each pet's best. ef_search must be at
      // least the row limit or the index returns fewer rows than asked.
      const rowLimit = Math.min(1000, Math.max(40, k * 8));
      const ef = Math.min(1000, Math.max(efSearch, rowLimit));
      return inTransaction(async (tx) => {
        await tx.query("SELECT set_config('hnsw.ef_search', $1, true), set_config('hnsw.iterative_scan', 'relaxed_order', true)", [String(ef)]);
        const { rows } = await tx.query<{ pet_did: string; image_key: string; embedding: string; distance: number }>(NEAREST_ROWS_SQL, [
          toVectorLiteral(v),
          rowLimit,
          k,
          modelVersion ?? null,
        ]);
        return rows.map((r) => ({
          petDid: r.pet_did,
          imageKey: r.image_key,
          embedding: parseVector(r.embedding),
          distance: Number(r.distance),
        }));
      });
    },
    async supersededBy(modelVersion) {
      const { rows } = await q.query<{ version: string }>(SUPERSEDED_SQL, [modelVersion]);
      return rows[0]?.version;
    },
  };
}

async function insertAudit(q: Queryable, a: AuditEntry): Promise<void> {
  await q.query(
    `INSERT INTO audit_log (kind, pet_did, requested_by, request_id, similarity, cosine, verdict, model_version, detail)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)`,
    [
      a.kind,
      a.petDid ?? null,
      a.requestedBy || null,
      a.requestId || null,
      a.similarity ?? null,
      a.cosine ?? null,
      a.verdict ?? null,
      a.modelVersion,
      JSON.stringify(a.detail ?? {}),
    ],
  );
}

export function createRegistry(db: Database, options: RegistryOptions = {}): Registry {
  const efSearch = options.efSearch ?? 200;
  const outer = reader(db, efSearch, (fn) => db.transaction(fn));

  return {
    ...outer,

    async insertPet(pet, audit, guard) {
      return db.transaction(async (tx) => {
        await tx.query("SELECT pg_advisory_xact_lock($1)", [REGISTER_LOCK]);
        const existing = await tx.query<{ pet_did: string }>(
          "SELECT pet_did FROM pets WHERE pet_did = $1 OR (request_id IS NOT NULL AND request_id = $2)",
          [pet.petDid, pet.requestId ?? null],
        );
        if (existing.rows.length > 0) return "exists" as const;
        // Already inside a transaction: the nearest-pet query runs in it.
        if (guard) await guard(reader(tx, efSearch, (fn) => fn(tx)));
        // A constraint answers what the lock already decided, should a writer ever bypass it.
        const inserted = await tx.query<{ pet_did: string }>(
          `INSERT INTO pets (pet_did, model_version, template, request_id, requested_by, image_keys, vector_key, min_pair_similarity, training_consent)
           VALUES ($1, $2, $3::vector, $4, $5, $6, $7, $8, $9)
           ON CONFLICT DO NOTHING
           RETURNING pet_did`,
          [
            pet.petDid,
            pet.modelVersion,
            toVectorLiteral(pet.template),
            pet.requestId || null,
            pet.requestedBy || null,
            pet.imageKeys,
            pet.vectorKey,
            pet.minPairSimilarity,
            pet.trainingConsent === true,
          ],
        );
        if (inserted.rows.length === 0) return "exists" as const;
        for (const e of pet.embeddings) {
          await tx.query(
            "INSERT INTO pet_embeddings (pet_did, image_key, embedding, model_version) VALUES ($1, $2, $3::vector, $4)",
            [pet.petDid, e.imageKey, toVectorLiteral(e.embedding), pet.modelVersion],
          );
        }
        await insertAudit(tx, audit);
        return "inserted" as const;
      });
    },

    addAudit: (entry) => insertAudit(db, entry),

    async staleEmbeddings(modelVersion, limit) {
      const { rows } = await db.query<{ pet_did: string; image_key: string; model_version: string }>(
        "SELECT pet_did, image_key, model_version FROM pet_embeddings WHERE model_version <> $1 ORDER BY id LIMIT $2",
        [modelVersion, limit],
      );
      return rows.map((r) => ({ petDid: r.pet_did, imageKey: r.image_key, modelVersion: r.model_version }));
    },

    async replaceEmbedding(petDid, imageKey, embedding, modelVersion) {
      const { rows } = await db.query(
        `UPDATE pet_embeddings SET embedding = $3::vector, model_version = $4
          WHERE pet_did = $1 AND image_key = $2 AND NOT EXISTS (${SUPERSEDED_SQL.replace("$1", "$4")})
          RETURNING id`,
        [petDid, imageKey, toVectorLiteral(embedding), modelVersion],
      );
      return rows.length > 0;
    },

    async adoptModelVersion(modelVersion, promote = false) {
      await db.transaction(async (tx) => {
        await tx.query("SELECT pg_advisory_xact_lock($1)", [REGISTER_LOCK]);
        await tx.query(
          `INSERT INTO model_versions (version) VALUES ($1)
           ON CONFLICT (version) DO ${promote ? "UPDATE SET promotion = nextval('model_promotion'), promoted_at = now()" : "NOTHING"}`,
          [modelVersion],
        );
      });
    },

    async withSweepLock(fn) {
      if (db.kind === "pglite") return { ran: true, result: await fn() };
      // The lock lives as long as this transaction; the sweep's own queries
      // run on other pooled connections meanwhile.
      return db.transaction(async (tx) => {
        const { rows } = await tx.query<{ got: boolean }>("SELECT pg_try_advisory_xact_lock($1) AS got", [SWEEP_LOCK]);
        if (!rows[0]?.got) return { ran: false } as const;
        return { ran: true, result: await fn() } as const;
      });
    },

    async ping() {
      await db.query("SELECT 1");
    },

    async setTrainingConsent(petDid, trainingConsent, audit) {
      return db.transaction(async (tx) => {
        const { rows } = await tx.query<{ training_consent: boolean }>(
          "SELECT training_consent FROM pets WHERE pet_did = $1 FOR UPDATE",
          [petDid],
        );
        if (!rows[0]) return undefined;
        const current = rows[0].training_consent === true;
        if (audit.requestId) {
          const prior = await tx.query(
            "SELECT 1 FROM audit_log WHERE kind = 'consent' AND pet_did = $1 AND request_id = $2 LIMIT 1",
            [petDid, audit.requestId],
          );
          if (prior.rows.length > 0) return { petDid, previous: current, trainingConsent: current, recorded: false };
        }
        await tx.query("UPDATE pets SET training_consent = $2 WHERE pet_did = $1", [petDid, trainingConsent]);
        await insertAudit(tx, {
          ...audit,
          kind: "consent",
          petDid,
          detail: { ...audit.detail, previous: current, trainingConsent, changed: current !== trainingConsent },
        });
        return { petDid, previous: current, trainingConsent, recorded: true };
      });
    },

    async listPets(filter = {}) {
      const where: string[] = [];
      const params: unknown[] = [];
      if (filter.trainingConsent !== undefined) {
        params.push(filter.trainingConsent);
        where.push(`training_consent = $${params.length}`);
      }
      if (filter.registeredSince !== undefined) {
        params.push(filter.registeredSince.toISOString());
        where.push(`created_at >= $${params.length}::timestamptz`);
      }
      const { rows } = await db.query<PetRow>(
        `SELECT ${PET_COLUMNS} FROM pets ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY created_at, pet_did`,
        params,
      );
      return rows.map(toPet);
    },

    async counts() {
      const pets = await db.query<{ status: string; n: number | string }>("SELECT status, count(*) AS n FROM pets GROUP BY status");
      const embeddings = await db.query<{ model_version: string; n: number | string }>(
        "SELECT model_version, count(*) AS n FROM pet_embeddings GROUP BY model_version",
      );
      return {
        pets: Object.fromEntries(pets.rows.map((r) => [r.status, Number(r.n)])),
        embeddings: Object.fromEntries(embeddings.rows.map((r) => [r.model_version, Number(r.n)])),
      };
    },

    async auditOf(petDid, kinds) {
      const { rows } = await db.query<AuditRow>(
        `SELECT id, kind, pet_did, requested_by, request_id, similarity, cosine, verdict, model_version, created_at, detail
           FROM audit_log WHERE pet_did = $1 ${kinds ? "AND kind = ANY($2::text[])" : ""} ORDER BY id`,
        kinds ? [petDid, kinds] : [petDid],
      );
      return rows.map(toAudit);
    },

    async findApproval(requestId) {
      const { rows } = await db.query<ApprovalRow>(`SELECT ${APPROVAL_COLUMNS} FROM transfer_approvals WHERE request_id = $1`, [requestId]);
      return rows[0] && toApproval(rows[0]);
    },

    async insertApproval(a, audit) {
      return db.transaction(async (tx) => {
        const inserted = await tx.query<ApprovalRow>(
          `INSERT INTO transfer_approvals
             (pet_did, from_guardian, to_guardian, similarity, cosine, cosine_similarity, euclidean_distance, model_version, request_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (request_id) DO NOTHING
           RETURNING ${APPROVAL_COLUMNS}`,
          [
            a.petDid,
            a.fromGuardian,
            a.toGuardian,
            a.similarity,
            a.cosine,
            a.cosineSimilarity,
            a.euclideanDistance,
            a.modelVersion,
            a.requestId || null,
          ],
        );
        if (inserted.rows[0]) {
          const record = toApproval(inserted.rows[0]);
          await insertAudit(tx, { ...audit, detail: { ...audit.detail, approvalId: record.approvalId } });
          return record;
        }
        const { rows } = await tx.query<ApprovalRow>(`SELECT ${APPROVAL_COLUMNS} FROM transfer_approvals WHERE request_id = $1`, [
          a.requestId,
        ]);
        return toApproval(rows[0]);
      });
    },
  };
}
