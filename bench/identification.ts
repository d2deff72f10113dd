/**
 * 1:N identification through the registry's own query (nearestPets, the
 * HNSW index of the schema's migrations), on PGlite and on PostgreSQL, with
 * recall measured against exact search: the same query with index scans
 * disabled, which PostgreSQL then answers by a sequential scan.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { openDatabase, type Database, type DatabaseConfig } from "../server/db/database.js";
import { migrate, MIGRATIONS } from "../server/db/migrations.js";
import { createRegistry, NEAREST_ROWS_SQL } from "../server/registry/registry.js";
import { postgresUnavailable, startPostgres, type TestPostgres } from "../test/support/postgres.js";
import { summarize, type Summary } from "./stats.js";
import { vectorSource, vectorText } from "./vectors.js";

const MODEL_VERSION = "bench-1";
/** Photos enrolled per pet: registration takes at least two. */
const PHOTOS_PER_PET = 2;
/** Share of pets enrolled with a near twin (another pet whose nose is at cosine ~0.97). */
const TWIN_SHARE = 0.01;
/** The server's default top_k for IdentifyPet. */
const SERVER_TOP_K = 5;

export interface IdentifyRun {
  engine: "pglite" | "postgres";
  pets: number;
  rows: number;
  loadSeconds: number;
  indexBuildSeconds: number;
  indexMiB: number;
  tableMiB: number;
  indexBytesPerRow: number;
  /** Registry's nearestPets, top_k 5 (the server's default), enrolled dogs' new photos. */
  query: Summary;
  /** Same query with index scans off: the exact answer's cost. */
  exactQuery: Summary;
  /** Enrolled dogs' new photos: top-1 pet equal to exact search's. */
  recallAt1: number;
  /** Enrolled dogs' new photos: share of exact search's top 10 pets found by the index's top 10. */
  recallAt10: number;
  /** Photos of dogs that are not enrolled: the index's hardest case on random data. */
  unknownRecallAt1: number;
  unknownRecallAt10: number;
  queries: number;
  indexUsed: boolean;
  exactUsesSeqScan: boolean;
  settings: Record<string, string>;
}

export interface IdentificationResult {
  runs: IdentifyRun[];
  skipped: string[];
  efSearchNote: string;
}

interface Corpus {
  pets: number;
  petVectors: Float32Array[];
  queries: Float32Array[];
  unknown: Float32Array[];
}

function makeCorpus(pets: number, queries: number, seed: number): Corpus {
  const src = vectorSource(seed);
  const every = Math.round(1 / TWIN_SHARE);
  const petVectors: Float32Array[] = [];
  // A planted twin: every 100th pet's nose lies close to the one before it.
  for (let p = 0; p < pets; p++) petVectors.push(p > 0 && p % every === 0 ? src.near(petVectors[p - 1], 0.25) : src.unit());
  // New photos of enrolled dogs (one in five of a twin) and of dogs never enrolled.
  const twins = Math.floor((pets - 1) / every);
  const step = Math.max(1, Math.floor(pets / queries));
  const picked = Array.from({ length: queries }, (_, i) =>
    i % 5 === 0 && twins > 0 ? every * (1 + ((i / 5) % twins)) : (i * step + 7) % pets,
  );
  return {
    pets,
    petVectors,
    queries: picked.map((p) => src.near(petVectors[p], 0.33)),
    unknown: Array.from({ length: Math.max(10, Math.floor(queries / 2)) }, () => src.unit()),
  };
}

const hnswStatement = () => {
  const s = MIGRATIONS.flatMap((m) => m.statements).find((x) => /USING hnsw/i.test(x));
  if (!s) throw new Error("no HNSW index in the migrations");
  return s;
};
const indexName = () => /CREATE INDEX (\w+)/i.exec(hnswStatement())![1];

/** Pets and their enrolled photos, written straight into the registry's tables in large batches. */
async function load(db: Database, corpus: Corpus, seed: number): Promise<void> {
  const src = vectorSource(seed + 1);
  const batch = 500;
  for (let start = 0; start < corpus.pets; start += batch) {
    const dids: string[] = [];
    const templates: string[] = [];
    const embDid: string[] = [];
    const embKey: string[] = [];
    const embVec: string[] = [];
    for (let p = start; p < Math.min(corpus.pets, start + batch); p++) {
      const did = `did:ethr:besu:0x${p.toString(16).padStart(40, "0")}`;
      dids.push(did);
      templates.push(vectorText(corpus.petVectors[p]));
      for (let k = 1; k <= PHOTOS_PER_PET; k++) {
        embDid.push(did);
        embKey.push(`nose-print-photo/${did}/image_${k}.jpg`);
        embVec.push(vectorText(src.near(corpus.petVectors[p], 0.33)));
      }
    }
    await db.transaction(async (tx) => {
      await tx.query(
        `INSERT INTO pets (pet_did, model_version, template, image_keys, vector_key, min_pair_similarity)
         SELECT d, $3, t::vector, ARRAY(SELECT 'nose-print-photo/' || d || '/image_' || k || '.jpg' FROM generate_series(1, $4::int) k),
                'nose-print-photo/' || d || '/vector.npy', 0.9
           FROM unnest($1::text[], $2::text[]) AS u(d, t)`,
        [dids, templates, MODEL_VERSION, PHOTOS_PER_PET],
      );
      await tx.query(
        `INSERT INTO pet_embeddings (pet_did, image_key, embedding, model_version)
         SELECT d, k, v::vector, $4 FROM unnest($1::text[], $2::text[], $3::text[]) AS u(d, k, v)`,
        [embDid, embKey, embVec, MODEL_VERSION],
      );
    });
  }
}

const relMiB = async (db: Database, rel: string) =>
  Number((await db.query<{ b: string }>("SELECT pg_total_relation_size($1::regclass)::text AS b", [rel])).rows[0].b) / 2 ** 20;

/** The plan of the registry's query, under the settings nearestPets gives its transaction (ef_search, iterative scan). */
async function planOf(db: Database, v: Float32Array, efSearch = 200): Promise<string> {
  return db.transaction(async (tx) => {
    await tx.query("SELECT set_config('hnsw.ef_search', $1, true), set_config('hnsw.iterative_scan', 'relaxed_order', true)", [
      String(efSearch),
    ]);
    const { rows } = await tx.query<Record<string, string>>(`EXPLAIN ${NEAREST_ROWS_SQL}`, [
      vectorText(v),
      40,
      SERVER_TOP_K,
      MODEL_VERSION,
    ]);
    return rows.map((r) => Object.values(r)[0]).join("\n");
  });
}

const dids = (matches: { petDid: string }[]) => matches.map((m) => m.petDid);
const overlap = (a: string[], b: string[]) => (b.length ? a.filter((x) => b.includes(x)).length / b.length : 1);

/**
 * Opens the database as the server does (openDatabase, migrate,
 * createRegistry with its defaults), loads the pets with the index dropped,
 * builds it with the migration's own statement, then queries: once per
 * ef_search in `efSearch` (undefined: the registry's default), so one build
 * answers for several settings. One run per ef_search.
 */
async function runOne(
  engine: "pglite" | "postgres",
  dbConfig: DatabaseConfig,
  exactConfig: DatabaseConfig | undefined,
  corpus: Corpus,
  seed: number,
  log: (s: string) => void,
  efSearch: Array<number | undefined>,
): Promise<IdentifyRun[]> {
  // Loading and the index build run on their own connection without the
  // server's statement timeout (a 100k build takes minutes); queries then
  // go through a database opened exactly as the server opens it.
  const setup = await openDatabase(dbConfig.kind === "postgres" ? { ...dbConfig, queryTimeoutMs: 4 * 3_600_000 } : dbConfig);
  let db: Database = setup;
  let exactDb: Database | undefined;
  try {
    await migrate(setup);
    await setup.query(`DROP INDEX ${indexName()}`);
    let t = performance.now();
    await load(setup, corpus, seed);
    const loadSeconds = (performance.now() - t) / 1000;
    log(`    loaded ${corpus.pets} pets in ${loadSeconds.toFixed(0)} s, building the index`);
    // The build's working memory: past it pgvector builds on disk, far slower.
    // One transaction, so the setting and the build share a connection.
    const buildMem = engine === "pglite" ? "1GB" : "2GB";
    let workers = "";
    t = performance.now();
    await setup.transaction(async (tx) => {
      await tx.query(`SET LOCAL maintenance_work_mem = '${buildMem}'`);
      workers = String(Object.values((await tx.query("SHOW max_parallel_maintenance_workers")).rows[0] ?? {})[0] ?? "");
      await tx.query(hnswStatement());
    });
    const indexBuildSeconds = (performance.now() - t) / 1000;
    log(`    index built in ${indexBuildSeconds.toFixed(0)} s, querying`);
    await setup.query("ANALYZE pets");
    await setup.query("ANALYZE pet_embeddings");
    const rows = corpus.pets * PHOTOS_PER_PET;
    const indexMiB = await relMiB(setup, indexName());
    const tableMiB = await relMiB(setup, "pet_embeddings");
    if (engine === "postgres") {
      await setup.close();
      db = await openDatabase(dbConfig);
    }

    // Exact search: the same registry query on a connection with index scans off.
    if (engine === "pglite") exactDb = db;
    else exactDb = await openDatabase(exactConfig!);
    const exactRegistry = createRegistry(exactDb);
    const setExact = async (on: boolean) => {
      if (engine === "pglite") await db.query(on ? "SET enable_indexscan = off" : "RESET enable_indexscan");
    };
    await setExact(true);
    const exactPlan = await planOf(exactDb, corpus.queries[0]);
    const exactTimes: number[] = [];
    const exact10: string[][] = [];
    for (const q of corpus.queries) {
      const s = performance.now();
      exact10.push(dids(await exactRegistry.nearestPets(q, 10, MODEL_VERSION)));
      exactTimes.push(performance.now() - s);
    }
    const exactUnknown10: string[][] = [];
    for (const q of corpus.unknown) exactUnknown10.push(dids(await exactRegistry.nearestPets(q, 10, MODEL_VERSION)));
    await setExact(false);

    const runs: IdentifyRun[] = [];
    for (const ef of efSearch) {
      const registry = createRegistry(db, ef === undefined ? {} : { efSearch: ef });
      const plan = await planOf(db, corpus.queries[0], ef);
      // Warm the index's pages once, as a running server's would be.
      for (const q of corpus.queries.slice(0, 5)) await registry.nearestPets(q, SERVER_TOP_K, MODEL_VERSION);
      const times: number[] = [];
      const top5: string[][] = [];
      const top10: string[][] = [];
      for (const q of corpus.queries) {
        const s = performance.now();
        top5.push(dids(await registry.nearestPets(q, SERVER_TOP_K, MODEL_VERSION)));
        times.push(performance.now() - s);
        top10.push(dids(await registry.nearestPets(q, 10, MODEL_VERSION)));
      }
      const unknown10: string[][] = [];
      for (const q of corpus.unknown) unknown10.push(dids(await registry.nearestPets(q, 10, MODEL_VERSION)));
      const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
      runs.push({
        engine,
        pets: corpus.pets,
        rows,
        loadSeconds,
        indexBuildSeconds,
        indexMiB,
        tableMiB,
        indexBytesPerRow: (indexMiB * 2 ** 20) / rows,
        query: summarize(times),
        exactQuery: summarize(exactTimes),
        recallAt1: mean(top5.map((r, i) => (r[0] === exact10[i][0] ? 1 : 0))),
        recallAt10: mean(top10.map((r, i) => overlap(r, exact10[i]))),
        unknownRecallAt1: mean(unknown10.map((r, i) => (r[0] === exactUnknown10[i][0] ? 1 : 0))),
        unknownRecallAt10: mean(unknown10.map((r, i) => overlap(r, exactUnknown10[i]))),
        queries: corpus.queries.length,
        indexUsed: plan.includes(indexName()),
        exactUsesSeqScan: /Seq Scan on pet_embeddings/.test(exactPlan) && !exactPlan.includes(indexName()),
        settings: {
          maintenance_work_mem: buildMem,
          ...(engine === "postgres" ? { max_parallel_maintenance_workers: workers } : {}),
          photos_per_pet: String(PHOTOS_PER_PET),
          ef_search: ef === undefined ? "registry default (createRegistry without options)" : String(ef),
        },
      });
      if (efSearch.length > 1)
        log(`    ef_search ${ef ?? "default"}: recall@1 ${runs.at(-1)!.recallAt1}, p95 ${runs.at(-1)!.query.p95.toFixed(1)} ms`);
    }
    return runs;
  } finally {
    if (exactDb && exactDb !== db) await exactDb.close();
    await db.close();
    if (setup !== db) await setup.close();
  }
}

export async function identification(
  sizes: number[],
  queries: number,
  log: (s: string) => void,
  /** PGlite only up to this many pets: it builds single-threaded in WASM, slow past 10k on a busy machine. */
  pgliteMaxPets = Infinity,
  /** ef_search values to query each build at; undefined: the registry's default. */
  efSearch: Array<number | undefined> = [undefined],
  /** Corpus seed, plus the registry size: another value draws other pets and queries. */
  seedBase = 1000,
): Promise<IdentificationResult> {
  const runs: IdentifyRun[] = [];
  const skipped: string[] = [];
  const pgWhy = postgresUnavailable();
  if (pgWhy) skipped.push(`PostgreSQL: ${pgWhy}`);
  let pg: TestPostgres | undefined;
  try {
    if (!pgWhy) {
      pg = await startPostgres("nosepaw", ["shared_buffers=1GB"]);
      const admin = await openDatabase({ kind: "postgres", ...pg.config });
      // A role whose sessions never use index scans: the exact-search side.
      await admin.query("CREATE ROLE exact_search LOGIN SUPERUSER");
      await admin.query("ALTER ROLE exact_search SET enable_indexscan = off");
      await admin.close();
    }
    for (const pets of sizes) {
      const seed = seedBase + pets;
      const corpus = makeCorpus(pets, queries, seed);
      if (pets <= pgliteMaxPets) {
        const dir = mkdtempSync(path.join(tmpdir(), "nosepaw-bench-pg-"));
        try {
          log(`  identification: PGlite, ${pets} pets`);
          runs.push(...(await runOne("pglite", { kind: "pglite", dataDir: path.join(dir, "pg") }, undefined, corpus, seed, log, efSearch)));
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      } else skipped.push(`PGlite at ${pets} pets (--pglite-max=${pgliteMaxPets})`);
      if (pg) {
        log(`  identification: PostgreSQL, ${pets} pets`);
        const admin = await openDatabase({ kind: "postgres", ...pg.config });
        const name = `bench_${pets}`;
        await admin.query(`CREATE DATABASE ${name}`);
        await admin.close();
        const config = { ...pg.config, database: name };
        runs.push(
          ...(await runOne(
            "postgres",
            { kind: "postgres", ...config },
            { kind: "postgres", ...config, username: "exact_search", queryTimeoutMs: 600_000 },
            corpus,
            seed,
            log,
            efSearch,
          )),
        );
        const drop = await openDatabase({ kind: "postgres", ...pg.config });
        await drop.query(`DROP DATABASE ${name}`);
        await drop.close();
      }
    }
  } finally {
    await pg?.dispose();
  }
  return {
    runs,
    skipped,
    efSearchNote: efSearch.some((ef) => ef !== undefined)
      ? `hnsw.ef_search ${efSearch.map((ef) => ef ?? "default").join(", ")}, one run each on the same index build (--ef)`
      : "hnsw.ef_search is the registry's default: createRegistry(db) as the server calls it sets max(efSearch 200, row limit) per query",
  };
}
