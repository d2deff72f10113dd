import type { Database, Queryable } from "../db/database.js";
import {
  APPROVAL_COLUMNS,
  PET_COLUMNS,
  parseVector,
  toApproval,
  toAudit,
  toPet,
  toVectorLiteral,
  type ApprovalRow,
  type AuditRow,
  type PetRow,
} from "./rows.js";
import type { NearestPet, AuditEntry, RegistryReader, Registry, RegistryOptions } from "./records.js";

export type * from "./records.js";
export { parseVector, toVectorLiteral } from "./rows.js";

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

function reader(
  q: Queryable,
  efSearch: number,
  inTransaction: (fn: (tx: Queryable) => Promise<NearestPet[]>) => Promise<NearestPet[]>,
): RegistryReader {
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
    async imageKeysOf(petDids) {
      const keys = new Map<string, string[]>();
      if (petDids.length === 0) return keys;
      const { rows } = await q.query<{ pet_did: string; image_key: string }>(
        "SELECT pet_did, image_key FROM pet_embeddings WHERE pet_did = ANY($1::text[]) ORDER BY id",
        [petDids],
      );
      for (const r of rows) {
        const list = keys.get(r.pet_did);
        if (list) list.push(r.image_key);
        else keys.set(r.pet_did, [r.image_key]);
      }
      return keys;
    },
    async nearestPets(v, k, modelVersion) {
      // The HNSW index answers "nearest rows"; a pet has several rows, so ask
      // for more rows than pets and keep each pet's best. ef_search must be at
      // least the row limit or the index returns fewer rows than asked.
      const rowLimit = Math.min(1000, Math.max(40, k * 8));
      const ef = Math.min(1000, Math.max(efSearch, rowLimit));
      return inTransaction(async (tx) => {
        await tx.query("SELECT set_config('hnsw.ef_search', $1, true), set_config('hnsw.iterative_scan', 'relaxed_order', true)", [
          String(ef),
        ]);
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

/**
 * SQL access to registered pets, their enrolled embeddings, the audit log and
 * transfer approvals. No business rules here: the use cases decide, this stores.
 */
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
          await tx.query("INSERT INTO pet_embeddings (pet_did, image_key, embedding, model_version) VALUES ($1, $2, $3::vector, $4)", [
            pet.petDid,
            e.imageKey,
            toVectorLiteral(e.embedding),
            pet.modelVersion,
          ]);
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
        const { rows } = await tx.query<{ training_consent: boolean }>("SELECT training_consent FROM pets WHERE pet_did = $1 FOR UPDATE", [
          petDid,
        ]);
        if (!rows[0]) return undefined;
        const current = rows[0].training_consent === true;
        if (audit.requestId) {
          const prior = await tx.query("SELECT 1 FROM audit_log WHERE kind = 'consent' AND pet_did = $1 AND request_id = $2 LIMIT 1", [
            petDid,
            audit.requestId,
          ]);
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
