import type { Database, Queryable } from "./database.js";

/**
 * Schema versions, applied in order at start-up. A migration never changes
 * once released: new schema goes into a new version. Each one runs in the
 * same transaction as its row in schema_migrations, so it applies fully or
 * not at all.
 */
export interface Migration {
  version: number;
  name: string;
  statements: string[];
}

export const EMBEDDING_DIM = 512;

export const MIGRATIONS: Migration[] = [
  {
    version: 1,
    name: "pets, embeddings, audit log, transfer approvals",
    statements: [
      "CREATE EXTENSION IF NOT EXISTS vector",
      `CREATE TABLE pets (
        pet_did text PRIMARY KEY,
        created_at timestamptz NOT NULL DEFAULT now(),
        model_version text NOT NULL,
        template vector(${EMBEDDING_DIM}) NOT NULL,
        status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'retired')),
        request_id text UNIQUE,
        requested_by text,
        image_keys text[] NOT NULL,
        vector_key text NOT NULL,
        min_pair_similarity real NOT NULL
      )`,
      `CREATE TABLE pet_embeddings (
        id bigserial PRIMARY KEY,
        pet_did text NOT NULL REFERENCES pets (pet_did) ON DELETE CASCADE,
        image_key text NOT NULL,
        embedding vector(${EMBEDDING_DIM}) NOT NULL,
        model_version text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (pet_did, image_key)
      )`,
      // Cosine distance, matching how embeddings are compared everywhere else.
      "CREATE INDEX pet_embeddings_embedding_hnsw ON pet_embeddings USING hnsw (embedding vector_cosine_ops)",
      `CREATE TABLE audit_log (
        id bigserial PRIMARY KEY,
        kind text NOT NULL CHECK (kind IN ('register', 'verify', 'transfer', 'identify')),
        pet_did text,
        requested_by text,
        request_id text,
        similarity real,
        cosine real,
        verdict text,
        model_version text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        detail jsonb NOT NULL DEFAULT '{}'::jsonb
      )`,
      "CREATE INDEX audit_log_pet_did_created_at ON audit_log (pet_did, created_at)",
      `CREATE TABLE transfer_approvals (
        approval_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        pet_did text NOT NULL REFERENCES pets (pet_did),
        from_guardian text NOT NULL,
        to_guardian text NOT NULL,
        similarity real NOT NULL,
        cosine real NOT NULL,
        cosine_similarity real NOT NULL,
        euclidean_distance real NOT NULL,
        model_version text NOT NULL,
        approved_at timestamptz NOT NULL DEFAULT now(),
        request_id text UNIQUE
      )`,
      "CREATE INDEX transfer_approvals_pet_did ON transfer_approvals (pet_did, approved_at)",
    ],
  },
  {
    version: 2,
    name: "training consent on pets, consent audit rows",
    statements: [
      "ALTER TABLE pets ADD COLUMN training_consent boolean NOT NULL DEFAULT false",
      // Version 1 named no constraint, so PostgreSQL called it audit_log_kind_check.
      "ALTER TABLE audit_log DROP CONSTRAINT audit_log_kind_check",
      `ALTER TABLE audit_log ADD CONSTRAINT audit_log_kind_check
        CHECK (kind IN ('register', 'verify', 'transfer', 'identify', 'consent'))`,
      "CREATE INDEX pets_training_consent_created_at ON pets (created_at) WHERE training_consent",
    ],
  },
  {
    version: 3,
    name: "audit rows for model upgrades",
    statements: [
      "ALTER TABLE audit_log DROP CONSTRAINT audit_log_kind_check",
      `ALTER TABLE audit_log ADD CONSTRAINT audit_log_kind_check
        CHECK (kind IN ('register', 'verify', 'transfer', 'identify', 'consent', 'reembed'))`,
    ],
  },
  {
    version: 4,
    name: "model versions the registry has adopted, for rollouts across replicas",
    statements: [
      // The latest promotion is the registry's current model version: replicas
      // on an earlier one stop writing embeddings and stop answering 1:N.
      "CREATE SEQUENCE model_promotion",
      `CREATE TABLE model_versions (
        version text PRIMARY KEY,
        first_seen_at timestamptz NOT NULL DEFAULT now(),
        promoted_at timestamptz NOT NULL DEFAULT now(),
        promotion bigint NOT NULL DEFAULT nextval('model_promotion')
      )`,
    ],
  },
];

// Arbitrary constant shared by every replica: "nosepaw" in ASCII.
const MIGRATION_LOCK = 0x6e6f736570617700n;

/**
 * Brings the schema up to date; running it again is a no-op. Replicas that
 * start together serialise on an advisory lock held for the transaction, so
 * exactly one applies each version and the others then see it recorded.
 * Returns the versions this call applied.
 */
export async function migrate(db: Database, migrations: Migration[] = MIGRATIONS): Promise<number[]> {
  return db.transaction(async (tx: Queryable) => {
    await tx.query("SELECT pg_advisory_xact_lock($1)", [MIGRATION_LOCK.toString()]);
    await tx.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version integer PRIMARY KEY,
      name text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`);
    const { rows } = await tx.query<{ version: number }>("SELECT version FROM schema_migrations");
    const done = new Set(rows.map((r) => Number(r.version)));
    const applied: number[] = [];
    for (const m of [...migrations].sort((a, b) => a.version - b.version)) {
      if (done.has(m.version)) continue;
      for (const sql of m.statements) await tx.query(sql);
      await tx.query("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", [m.version, m.name]);
      applied.push(m.version);
    }
    return applied;
  });
}
