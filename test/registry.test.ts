import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { MLErrorCode } from "../gen/nose_embedder_pb.js";
import { writeNpy } from "../shared/npy.js";
import { cosine } from "../shared/similarity.js";
import { openPglite, openPostgres, type Database } from "../server/db/database.js";
import { MIGRATIONS, migrate } from "../server/db/migrations.js";
import { MLError, invalidImage, isRetryable, storageError, toWireError } from "../server/errors.js";
import { createFlows, DuplicatePetError, InconsistentPhotosError, type Flows, type FlowDeps } from "../server/registry/flows.js";
import { createRegistry, type Registry } from "../server/registry/registry.js";
import { createFolderStore } from "../server/storage/folder-store.js";
import { legacyVectorKey, vectorKey } from "../server/storage/keys.js";
import type { ObjectStore } from "../server/storage/object-store.js";
import { createS3Store } from "../server/storage/s3-store.js";
import { postgresUnavailable, startPostgres, type TestPostgres } from "./support/postgres.js";
import { INSTALL, requireSystem } from "./support/require-system.js";
import { startS3, type TestS3 } from "./support/s3.js";
import { seededUnit, taggedPhoto } from "./support/vectors.js";

// ---------------------------------------------------------------------------
// A deterministic stand-in for the embedding model, and only for it. A "photo"
// is a JPEG signature followed by `dog=NAME;shot=N;noise=S`: its embedding is
// the dog's fixed random direction plus per-photo noise of norm S derived from
// a hash of the bytes, so two shots of one dog score about 1 / (1 + S^2).
// With `like=OTHER;cos=T` the dog is a look-alike: its direction is T times
// OTHER's plus sqrt(1 - T^2) times its own, so it scores about T against OTHER.
// ---------------------------------------------------------------------------

const DIM = 512;

const gaussianUnit = (seed: string) => seededUnit(seed, DIM);

function photo(dog: string, shot: number, noise = 0.25, like?: { dog: string; cos: number }): Uint8Array {
  return taggedPhoto(`dog=${dog};shot=${shot};noise=${noise}` + (like ? `;like=${like.dog};cos=${like.cos}` : ""));
}

let embedCalls = 0;
async function fakeEmbed(bytes: Uint8Array): Promise<Float32Array> {
  embedCalls++;
  if (bytes[0] !== 0xff || bytes[1] !== 0xd8) throw invalidImage("not a JPEG or PNG image");
  const fields = Object.fromEntries(
    new TextDecoder()
      .decode(bytes.subarray(4))
      .split(";")
      .map((kv) => kv.split("=")),
  );
  let base = gaussianUnit(`dog:${fields.dog}`);
  if (fields.like !== undefined) {
    const t = Number(fields.cos);
    const other = gaussianUnit(`dog:${fields.like}`);
    base = base.map((x, i) => t * other[i] + Math.sqrt(1 - t * t) * x);
  }
  const noise = gaussianUnit(`photo:${createHash("sha256").update(bytes).digest("hex")}`);
  const s = Number(fields.noise);
  return base.map((x, i) => x + s * noise[i]);
}

// ---------------------------------------------------------------------------

const PYTHON = "/usr/bin/python3";
const hasNumpy =
  existsSync(PYTHON) &&
  (() => {
    try {
      execFileSync(PYTHON, ["-c", "import numpy"], { stdio: "ignore" });
      return true;
    } catch {
      return false;
    }
  })();

const pgSkip = requireSystem("PostgreSQL with pgvector", postgresUnavailable(), INSTALL.postgres);
if (pgSkip) console.log(`# skipping the PostgreSQL half: ${pgSkip}`);

/** Bounds a hang, not a speed: rejects when `p` has not settled after `ms`. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  const hung = new Promise<never>(
    (_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: still pending after ${ms} ms`)), ms)),
  );
  return Promise.race([p, hung]).finally(() => clearTimeout(timer));
}

function rejectsWith(code: MLErrorCode, message?: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof MLError, `expected MLError, got ${String((e as Error)?.stack ?? e)}`);
    assert.equal(e.code, code, `code ${e.code}: ${e.message}`);
    if (message) assert.match(e.message, message);
    return true;
  };
}

/**
 * The database as a registry sees it, recording the statements run inside
 * transactions, so a test can re-run the registry's own SQL (EXPLAIN it, or
 * run it with the index disabled) instead of a copy of it.
 */
function recording(db: Database): { db: Database; statements: Array<{ sql: string; params?: unknown[] }> } {
  const statements: Array<{ sql: string; params?: unknown[] }> = [];
  return {
    statements,
    db: {
      ...db,
      kind: db.kind,
      query: (sql, params) => db.query(sql, params),
      transaction: (fn) =>
        db.transaction((tx) =>
          fn({
            query: (sql, params) => {
              statements.push({ sql, params });
              return tx.query(sql, params);
            },
          }),
        ),
      close: () => db.close(),
    },
  };
}

/** Database layer checks that hold on every backend. */
function databaseContract(name: string, open: () => Promise<Database>) {
  describe(`${name}: database layer`, () => {
    let db: Database;
    before(async () => {
      db = await open();
    });
    after(async () => {
      await db?.close();
    });

    test("migrations are idempotent", async () => {
      const first = await migrate(db);
      assert.deepEqual(await migrate(db), []);
      assert.ok(first.length === 0 || first[0] === 1);
      const { rows } = await db.query<{ version: number }>("SELECT version FROM schema_migrations ORDER BY version");
      assert.deepEqual(
        rows.map((r) => Number(r.version)),
        MIGRATIONS.map((m) => m.version),
      );
      const idx = await db.query<{ indexdef: string }>("SELECT indexdef FROM pg_indexes WHERE indexname = 'pet_embeddings_embedding_hnsw'");
      assert.match(idx.rows[0].indexdef, /USING hnsw \(embedding vector_cosine_ops\)/);
    });

    test("a transaction that throws leaves nothing behind", async () => {
      await assert.rejects(
        db.transaction(async (tx) => {
          await tx.query("INSERT INTO audit_log (kind, model_version) VALUES ('verify', 'rollback-check')");
          throw new Error("boom");
        }),
        /boom/,
      );
      const { rows } = await db.query("SELECT 1 FROM audit_log WHERE model_version = 'rollback-check'");
      assert.equal(rows.length, 0);
    });

    test("nearest pets through the HNSW index agree with exact search", async () => {
      const registry = createRegistry(db);
      const dogs = Array.from({ length: 60 }, (_, i) => `knn-${i}`);
      for (const dog of dogs) {
        const e1 = await fakeEmbed(photo(dog, 1));
        const e2 = await fakeEmbed(photo(dog, 2));
        const petDid = `did:pet:${dog}`;
        await registry.insertPet(
          {
            petDid,
            template: e1,
            modelVersion: "test",
            imageKeys: [],
            vectorKey: "",
            minPairSimilarity: 1,
            embeddings: [
              { imageKey: "a", embedding: e1 },
              { imageKey: "b", embedding: e2 },
            ],
          },
          { kind: "register", petDid, modelVersion: "test" },
        );
      }
      // The registry's own search statement and its settings, as it runs them.
      const rec = recording(db);
      const recorded = createRegistry(rec.db);
      const k = 5;
      let hits = 0;
      let agreed = 0;
      let planChecked = false;
      for (const dog of dogs.slice(0, 20)) {
        const probe = await fakeEmbed(photo(dog, 9, 0.6));
        rec.statements.length = 0;
        const got = await recorded.nearestPets(probe, k);
        assert.equal(got.length, k);
        assert.ok(
          got.every((g, i) => i === 0 || g.distance >= got[i - 1].distance),
          "nearest first",
        );
        assert.equal(new Set(got.map((g) => g.petDid)).size, k, "one entry per pet");
        if (got[0].petDid === `did:pet:${dog}`) hits++;
        // The returned embedding is the stored one, bit for bit.
        const best = got[0];
        assert.ok(Math.abs(1 - best.distance - cosine(probe, best.embedding)) < 1e-4);

        const search = rec.statements.find((st) => st.sql.includes("<=>"));
        assert.ok(search, "the search ran in a transaction");
        const settings = rec.statements.filter((st) => st !== search && /set_config|^\s*SET /i.test(st.sql));
        const run = (extra: string[], sql: string) =>
          db.transaction(async (tx) => {
            for (const st of settings) await tx.query(st.sql, st.params);
            for (const st of extra) await tx.query(st);
            return (await tx.query<Record<string, unknown>>(sql, search.params)).rows;
          });
        // On 120 rows the planner rightly sorts the whole table (it takes the
        // index from about 2,000 rows); with sequential scans priced out, the
        // same statement runs on the HNSW index, as on a registry of real size.
        const viaIndex = ["SET LOCAL enable_seqscan = off"];
        // Exact search: the same statement with every index path turned off (a sequential scan).
        const noIndex = ["SET LOCAL enable_indexscan = off", "SET LOCAL enable_bitmapscan = off", "SET LOCAL enable_indexonlyscan = off"];
        const approx = (await run(viaIndex, search.sql)).map((r) => r.pet_did as string);
        const exact = (await run(noIndex, search.sql)).map((r) => r.pet_did as string);
        assert.equal(approx.length, k);
        assert.equal(exact.length, k);
        assert.deepEqual(got.map((g) => g.petDid).sort(), [...exact].sort(), "the registry's answer is the exact top-k");
        agreed += approx.filter((d) => exact.includes(d)).length;
        if (!planChecked) {
          planChecked = true;
          const plan = JSON.stringify(await run(viaIndex, `EXPLAIN (FORMAT JSON) ${search.sql}`));
          assert.match(
            plan,
            /"Node Type":\s*"Index Scan"[^}]*"Index Name":\s*"pet_embeddings_embedding_hnsw"/,
            `the search must run on the HNSW index: ${plan.slice(0, 400)}`,
          );
          const seq = JSON.stringify(await run(noIndex, `EXPLAIN (FORMAT JSON) ${search.sql}`));
          assert.doesNotMatch(seq, /pet_embeddings_embedding_hnsw/);
          assert.match(seq, /"Node Type":\s*"Seq Scan","Parent Relationship":"Outer"[^}]*"Relation Name":\s*"pet_embeddings"/);
        }
      }
      assert.equal(hits, 20);
      const recall = agreed / (20 * k);
      console.log(`${name}: recall@${k} of the HNSW index against exact search ${recall.toFixed(3)} over 20 probes`);
      assert.ok(recall >= 0.95, `recall@${k} ${recall}`);
    });
  });
}

interface Backend {
  db: Database;
  store: ObjectStore;
  dispose(): Promise<void>;
  outage?: { stopStore(): Promise<void>; startStore(): Promise<void>; stopDb(): Promise<void>; startDb(): Promise<void> };
}

/** Flows end to end, with the real stores and databases and the fake embedding. */
function flowsSuite(name: string, open: () => Promise<Backend>, withOutages = false) {
  describe(`${name}: registration flows`, () => {
    let backend: Backend;
    let registry: Registry;
    let flows: Flows;
    let clock = Date.parse("2026-01-01T00:00:00Z");
    let deps: FlowDeps;
    let rexDid = "";
    let fidoDid = "";

    before(async () => {
      backend = await open();
      await migrate(backend.db);
      registry = createRegistry(backend.db);
      deps = { store: backend.store, registry, embed: fakeEmbed, modelVersion: "fake-1", now: () => new Date(clock) };
      flows = createFlows(deps);
    });
    after(async () => {
      await backend?.dispose();
    });

    test("registers a dog from two photos: DID, images, vector.npy, rows", async () => {
      const r = await flows.registerPet({
        photos: [{ bytes: photo("rex", 1) }, { bytes: photo("rex", 2) }],
        requestId: "reg-rex",
        requestedBy: "0xguardian1",
      });
      assert.equal(r.created, true);
      assert.match(r.petDid, /^did:ethr:besu:0x[0-9a-f]{40}$/);
      assert.deepEqual(r.imageKeys, [`nose-print-photo/${r.petDid}/image_1.jpg`, `nose-print-photo/${r.petDid}/image_2.jpg`]);
      assert.equal(r.vectorKey, `nose-print-photo/${r.petDid}/vector.npy`);
      assert.equal(r.vectorSize, 512);
      assert.ok(r.minPairSimilarity > 0.85);
      assert.deepEqual(await backend.store.get(r.imageKeys[1]), photo("rex", 2));
      assert.equal((await registry.embeddingsOf(r.petDid)).length, 2);
      assert.deepEqual((await registry.findPet(r.petDid))?.template, r.vector);
      rexDid = r.petDid;
    });

    test(
      "vector.npy written by registration loads in numpy as the template",
      { skip: requireSystem("numpy under /usr/bin/python3", !hasNumpy && "import numpy failed", INSTALL.python) },
      async () => {
        const bytes = (await backend.store.get(vectorKey(rexDid)))!;
        const dir = mkdtempSync(join(tmpdir(), "nosepaw-npy-"));
        try {
          writeFileSync(join(dir, "vector.npy"), bytes);
          const out = execFileSync(PYTHON, [
            "-c",
            "import numpy as np, sys, json; a = np.load(sys.argv[1]); print(json.dumps([str(a.dtype), list(a.shape), [float(x) for x in a]]))",
            join(dir, "vector.npy"),
          ]);
          const [dtype, shape, values] = JSON.parse(out.toString()) as [string, number[], number[]];
          assert.equal(dtype, "float32");
          assert.deepEqual(shape, [512]);
          assert.deepEqual(Float32Array.from(values), (await registry.findPet(rexDid))!.template);
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      },
    );

    test("a retry with the same request id returns the same registration without re-embedding", async () => {
      const calls = embedCalls;
      const r = await flows.registerPet({ photos: [{ bytes: photo("rex", 1) }, { bytes: photo("rex", 2) }], requestId: "reg-rex" });
      assert.equal(embedCalls, calls);
      assert.equal(r.created, false);
      assert.equal(r.petDid, rexDid);
      assert.equal(r.imageKeys.length, 2);
    });

    test("after a model upgrade, comparison re-embeds the pet's photos instead of comparing across versions", async () => {
      // The upgraded model points every photo the opposite way: scored against
      // the old rows, a true match would look like the worst mismatch.
      const upgraded = async (b: Uint8Array) => (await fakeEmbed(b)).map((x) => -x);
      const v2 = createFlows({ ...deps, embed: upgraded, modelVersion: "fake-2" });
      // A stored photo, so neither a verification shot nor an audit row is written.
      const r = await v2.compareWithStoredImage({ petDid: rexDid, imageKey: `nose-print-photo/${rexDid}/image_2.jpg` });
      assert.equal(r.verdict, "SAME");
      assert.deepEqual(
        (await registry.embeddingsOf(rexDid)).map((e) => e.modelVersion),
        ["fake-2", "fake-2"],
      );
      // The background sweep brings them back to the running version.
      assert.equal(await flows.reembedStale(), 2);
      assert.deepEqual(
        (await registry.embeddingsOf(rexDid)).map((e) => e.modelVersion),
        ["fake-1", "fake-1"],
      );
      assert.equal(await flows.reembedStale(), 0);
    });

    /** Each photo's best score against a pet's enrolled embeddings, as the duplicate rule computes it (no card: similarity = cosine). */
    async function bestAgainst(petDid: string, photos: Uint8Array[]): Promise<number[]> {
      const refs = (await registry.embeddingsOf(petDid)).map((e) => e.embedding);
      assert.ok(refs.length > 0, `${petDid} has enrolled embeddings`);
      const out: number[] = [];
      for (const p of photos) {
        const e = await fakeEmbed(p);
        out.push(Math.max(...refs.map((r) => cosine(e, r))));
      }
      return out;
    }

    async function registerAudit(petDid: string): Promise<Array<{ similarity: number; detail: Record<string, any> }>> {
      const { rows } = await backend.db.query<{ similarity: number; detail: unknown }>(
        "SELECT similarity, detail FROM audit_log WHERE kind = 'register' AND pet_did = $1",
        [petDid],
      );
      return rows.map((r) => ({
        similarity: Number(r.similarity),
        detail: (typeof r.detail === "string" ? JSON.parse(r.detail) : r.detail) as Record<string, any>,
      }));
    }

    test("refuses to register the same nose again when both photos match the pet at >= 0.95, and names it", async () => {
      const photos = [photo("rex", 3, 0.05), photo("rex", 4, 0.05)];
      const best = await bestAgainst(rexDid, photos);
      assert.ok(
        best.every((b) => b >= 0.95),
        `both photos score >= 0.95 against rex: ${best}`,
      );
      await assert.rejects(flows.registerPet({ photos: photos.map((bytes) => ({ bytes })) }), (e: unknown) => {
        assert.ok(e instanceof DuplicatePetError, String(e));
        assert.equal(e.existingPetDid, rexDid);
        // The lowest of the photos' scores is the one reported.
        assert.ok(Math.abs(e.similarity - Math.min(...best)) < 1e-9, `${e.similarity} vs ${best}`);
        const wire = toWireError(e);
        assert.equal(wire.errorCode, MLErrorCode.INVALID_REQUEST);
        assert.equal(wire.retryable, false);
        assert.ok(wire.errorMessage.includes(rexDid));
        assert.match(wire.errorMessage, new RegExp(`lowest similarity ${Math.min(...best).toFixed(3)} >= 0\\.95`));
        return true;
      });
    });

    test("the same photos again without a request id are refused as the pet they registered", async () => {
      await assert.rejects(flows.registerPet({ photos: [{ bytes: photo("rex", 1) }, { bytes: photo("rex", 2) }] }), (e: unknown) => {
        assert.ok(e instanceof DuplicatePetError, String(e));
        assert.equal(e.existingPetDid, rexDid);
        assert.equal(e.similarity, 1);
        assert.match(e.message, /already registered as .* \(the same enrolment template\)$/);
        return true;
      });
    });

    test("photos of one dog scoring between 0.70 and 0.85 register and report the pair's score", async () => {
      // Noisy shots (noise 0.6) of one dog: about 1 / 1.36 = 0.74.
      const photos = [photo("pip", 1, 0.6), photo("pip", 2, 0.6)];
      const pair = cosine(await fakeEmbed(photos[0]), await fakeEmbed(photos[1]));
      assert.ok(pair >= 0.7 && pair < 0.85, `pair scores ${pair}`);
      const r = await flows.registerPet({ photos: photos.map((bytes) => ({ bytes })) });
      assert.equal(r.created, true);
      assert.equal(r.minPairSimilarity, pair);
      assert.equal(r.review, undefined);
      const audit = await registerAudit(r.petDid);
      assert.equal(audit.length, 1);
      assert.ok(Math.abs(audit[0].similarity - pair) < 1e-6, "audit similarity is the pair's score (stored as real)");
      assert.equal(audit[0].detail.minPairSimilarity, pair);
      assert.deepEqual(audit[0].detail.lowestPair, [1, 2]);
      assert.equal(audit[0].detail.pairThreshold, 0.7, "the threshold applied: 0.70 without a card's registration.pair_threshold");
      assert.equal(audit[0].detail.duplicateReview, undefined);
    });

    test("photos scoring under 0.70 are refused with the pair and its score", async () => {
      // noise 1.0: about 1 / 2 = 0.5.
      const photos = [photo("blur", 1, 1), photo("blur", 2, 1)];
      const pair = cosine(await fakeEmbed(photos[0]), await fakeEmbed(photos[1]));
      assert.ok(pair < 0.7, `pair scores ${pair}`);
      await assert.rejects(flows.registerPet({ photos: photos.map((bytes) => ({ bytes })) }), (e: unknown) => {
        assert.ok(e instanceof InconsistentPhotosError, String(e));
        assert.equal(e.code, MLErrorCode.INVALID_REQUEST);
        assert.deepEqual(e.pair, [1, 2]);
        assert.equal(e.similarity, pair);
        assert.equal(e.message, `photos 1 and 2 do not show the same nose (similarity ${pair.toFixed(3)} < 0.7); retake them`);
        return true;
      });
    });

    test("a nose matching an enrolled pet between 0.85 and the duplicate similarity registers, and the review is recorded", async () => {
      const toby = await flows.registerPet({ photos: [{ bytes: photo("toby", 1, 0.05) }, { bytes: photo("toby", 2, 0.05) }] });
      const photos = [photo("toby-twin", 1, 0.05, { dog: "toby", cos: 0.9 }), photo("toby-twin", 2, 0.05, { dog: "toby", cos: 0.9 })];
      const best = await bestAgainst(toby.petDid, photos);
      assert.ok(
        best.every((b) => b >= 0.85 && b < 0.95),
        `both photos score SAME but under 0.95 against toby: ${best}`,
      );
      const events: Array<{ event: string; fields: Record<string, unknown> }> = [];
      const logged = createFlows({ ...deps, log: (event, fields) => events.push({ event, fields }) });
      const r = await logged.registerPet({ photos: photos.map((bytes) => ({ bytes })), requestId: "reg-toby-twin" });
      assert.equal(r.created, true);
      assert.notEqual(r.petDid, toby.petDid);
      const top = Math.max(...best);
      assert.deepEqual(r.review, {
        petDid: toby.petDid,
        similarity: top,
        matches: [
          { photo: 1, petDid: toby.petDid, similarity: best[0] },
          { photo: 2, petDid: toby.petDid, similarity: best[1] },
        ],
      });
      const audit = await registerAudit(r.petDid);
      assert.equal(audit.length, 1);
      assert.equal(audit[0].detail.duplicateReview.petDid, toby.petDid);
      assert.equal(audit[0].detail.duplicateReview.similarity, top);
      assert.equal(audit[0].detail.duplicateReview.threshold, 0.95);
      const line = events.find((e) => e.event === "register.duplicate_review");
      assert.ok(line, `review logged: ${JSON.stringify(events.map((e) => e.event))}`);
      assert.equal(line.fields.petDid, r.petDid);
      assert.equal(line.fields.candidatePetDid, toby.petDid);
      assert.equal(line.fields.similarity, top);
      // A retry of the same request returns the registration as stored, with no review attached.
      const again = await flows.registerPet({ photos: photos.map((bytes) => ({ bytes })), requestId: "reg-toby-twin" });
      assert.equal(again.created, false);
      assert.equal(again.petDid, r.petDid);
    });

    test("only one photo matching an enrolled pet at >= 0.95 is not refused", async () => {
      const nala = await flows.registerPet({ photos: [{ bytes: photo("nala", 1, 0.05) }, { bytes: photo("nala", 2, 0.05) }] });
      // Photo 1 is nala again; photo 2 a look-alike that scores about 0.8 against her.
      const photos = [photo("nala", 3, 0.05), photo("nala-pup", 1, 0.05, { dog: "nala", cos: 0.8 })];
      const best = await bestAgainst(nala.petDid, photos);
      assert.ok(best[0] >= 0.95 && best[1] < 0.85, `one photo above 0.95, the other under 0.85: ${best}`);
      const pair = cosine(await fakeEmbed(photos[0]), await fakeEmbed(photos[1]));
      assert.ok(pair >= 0.7, `the pair is consistent: ${pair}`);
      const r = await flows.registerPet({ photos: photos.map((bytes) => ({ bytes })) });
      assert.equal(r.created, true);
      assert.equal(r.minPairSimilarity, pair);
      assert.deepEqual(r.review, {
        petDid: nala.petDid,
        similarity: best[0],
        matches: [
          { photo: 1, petDid: nala.petDid, similarity: best[0] },
          { photo: 2, petDid: nala.petDid, similarity: best[1] },
        ],
      });
      assert.equal((await registerAudit(r.petDid))[0].detail.duplicateReview.petDid, nala.petDid);
    });

    test("a card's duplicate_similarity moves the refusal threshold", async () => {
      const odie = await flows.registerPet({ photos: [{ bytes: photo("odie", 1) }, { bytes: photo("odie", 2) }] });
      // Re-takes scoring about 0.97: refused at the default 0.95 ...
      const photos = [photo("odie", 3, 0.05), photo("odie", 4, 0.05)];
      const best = await bestAgainst(odie.petDid, photos);
      assert.ok(
        best.every((b) => b >= 0.95 && b < 0.999),
        `${best}`,
      );
      await assert.rejects(flows.registerPet({ photos: photos.map((bytes) => ({ bytes })) }), DuplicatePetError);
      // ... registered for review under a card (identity calibration on [0, 1]) whose duplicate_similarity is 0.999.
      const strict = createFlows({ ...deps, calibration: { cosine: [0, 1], similarity: [0, 1], duplicateSimilarity: 0.999 } });
      const r = await strict.registerPet({ photos: photos.map((bytes) => ({ bytes })) });
      assert.equal(r.created, true);
      assert.equal(r.review?.petDid, odie.petDid);
      assert.equal(r.review?.similarity, Math.max(...best));
    });

    test("refuses bad registrations with messages that name the photo", async () => {
      await assert.rejects(
        flows.registerPet({ photos: [{ bytes: photo("solo", 1) }] }),
        rejectsWith(MLErrorCode.INVALID_REQUEST, /at least 2 photos/),
      );
      await assert.rejects(
        flows.registerPet({ photos: [{ bytes: photo("a", 1) }, { bytes: photo("a", 2) }, { bytes: photo("b", 1) }] }),
        rejectsWith(MLErrorCode.INVALID_REQUEST, /photos [12] and 3 do not show the same nose \(similarity 0\.\d+ < 0\.7\)/),
      );
      await assert.rejects(
        flows.registerPet({ photos: [{ bytes: photo("c", 1) }, { bytes: new Uint8Array([1, 2, 3]) }] }),
        rejectsWith(MLErrorCode.INVALID_IMAGE, /^photo 2: not a JPEG/),
      );
      await assert.rejects(
        flows.registerPet({ photos: [{ bytes: photo("c", 1) }, { key: `nose-print-photo/${rexDid}/nope.jpg` }] }),
        rejectsWith(MLErrorCode.INVALID_REQUEST, /photo 2: image not found: nose-print-photo\/did:ethr/),
      );
      await assert.rejects(
        flows.registerPet({ photos: [{ bytes: photo("c", 1) }, { key: "nose-print-photo/../secrets.jpg" }] }),
        rejectsWith(MLErrorCode.INVALID_REQUEST, /photo 2: image key/),
      );
    });

    test("registers a second dog from photos given as uploaded keys", async () => {
      const upload = "did:pet:upload-42";
      await backend.store.put(`nose-print-photo/${upload}/a.jpg`, photo("fido", 1));
      await backend.store.put(`nose-print-photo/${upload}/b.jpg`, photo("fido", 2));
      const r = await flows.registerPet({
        photos: [{ key: `nose-print-photo/${upload}/a.jpg` }, { key: `nose-print-photo/${upload}/b.jpg` }],
      });
      assert.notEqual(r.petDid, rexDid);
      assert.deepEqual(await backend.store.get(r.imageKeys[0]), photo("fido", 1));
      fidoDid = r.petDid;
    });

    test("verifies SAME, REVIEW and DIFFERENT and stores the shot as verify_{ms}.jpg", async () => {
      const same = await flows.verifyPet({ petDid: rexDid, photo: { bytes: photo("rex", 5) }, requestedBy: "0xguardian1" });
      assert.equal(same.verdict, "SAME");
      assert.ok(same.similarity >= 0.85 && same.cosineSimilarity > 0.9 && same.euclideanDistance < 0.6);
      assert.equal(same.storedImageKey, `nose-print-photo/${rexDid}/verify_${clock}.jpg`);
      assert.deepEqual(await backend.store.get(same.storedImageKey), photo("rex", 5));
      assert.match(same.verificationId, /^[0-9a-f-]{36}$/);

      // Same millisecond: the next shot must not overwrite the first.
      const review = await flows.verifyPet({ petDid: rexDid, photo: { bytes: photo("rex", 6, 0.75) } });
      assert.equal(review.verdict, "REVIEW");
      assert.equal(review.storedImageKey, `nose-print-photo/${rexDid}/verify_${clock + 1}.jpg`);

      const different = await flows.verifyPet({ petDid: rexDid, photo: { bytes: photo("fido", 7) } });
      assert.equal(different.verdict, "DIFFERENT");

      const byKey = await flows.verifyPet({ petDid: rexDid, photo: { key: same.storedImageKey } });
      assert.equal(byKey.storedImageKey, "");
      assert.equal(byKey.similarity, same.similarity);
      clock += 1000;
    });

    test("verify refuses unknown pets, bad DIDs and other pets' keys", async () => {
      const unknown = "did:ethr:besu:0x" + "0".repeat(40);
      await assert.rejects(flows.verifyPet({ petDid: unknown, photo: { bytes: photo("rex", 1) } }), (e: unknown) => {
        rejectsWith(MLErrorCode.VECTOR_NOT_FOUND, /no enrolled nose print/)(e);
        assert.equal(isRetryable((e as MLError).code), false);
        return true;
      });
      await assert.rejects(
        flows.verifyPet({ petDid: "did:ethr:besu:0x12", photo: { bytes: photo("rex", 1) } }),
        rejectsWith(MLErrorCode.INVALID_REQUEST, /invalid pet DID/),
      );
      await assert.rejects(
        flows.verifyPet({ petDid: rexDid, photo: { key: `nose-print-photo/${fidoDid}/image_1.jpg` } }),
        rejectsWith(MLErrorCode.INVALID_REQUEST, /must lie under/),
      );
    });

    test("compareWithStoredImage scores a stored photo against the enrolled rows", async () => {
      const key = `nose-print-photo/${rexDid}/verify_${clock - 1000}.jpg`;
      const c = await flows.compareWithStoredImage({ imageKey: key, petDid: rexDid });
      assert.ok(c.similarity >= 0.85);
      assert.equal(c.vectorSize, 512);
      await assert.rejects(
        flows.compareWithStoredImage({ imageKey: `nose-print-photo/${rexDid}/missing.jpg`, petDid: rexDid }),
        rejectsWith(MLErrorCode.INVALID_REQUEST, /image not found: nose-print-photo\/.*\/missing\.jpg/),
      );
      await assert.rejects(
        flows.compareWithStoredImage({ imageKey: `nose-print-photo/${rexDid}/../x.jpg`, petDid: rexDid }),
        rejectsWith(MLErrorCode.INVALID_REQUEST, /'\.\.' segment/),
      );
    });

    test("compareWithStoredImage falls back to vector.npy, then the legacy JSON", async () => {
      const npyDid = "did:pet:legacy-npy";
      await backend.store.put(vectorKey(npyDid), writeNpy(await fakeEmbed(photo("old1", 1))));
      await backend.store.put(`nose-print-photo/${npyDid}/q.jpg`, photo("old1", 2));
      const a = await flows.compareWithStoredImage({ imageKey: `nose-print-photo/${npyDid}/q.jpg`, petDid: npyDid });
      assert.equal(a.verdict, "SAME");

      const jsonDid = "did:pet:legacy-json";
      const fv = Array.from(await fakeEmbed(photo("old2", 1)));
      await backend.store.put(
        legacyVectorKey(jsonDid),
        new TextEncoder().encode(
          JSON.stringify({ petDID: jsonDid, featureVector: fv, vectorSize: 512, createdAt: "2024-01-01", version: "1" }),
        ),
      );
      await backend.store.put(`nose-print-photo/${jsonDid}/q.jpg`, photo("old3", 1));
      const b = await flows.compareWithStoredImage({ imageKey: `nose-print-photo/${jsonDid}/q.jpg`, petDid: jsonDid });
      assert.equal(b.verdict, "DIFFERENT");
      await backend.store.put(`nose-print-photo/${jsonDid}/same.jpg`, photo("old2", 2));
      assert.equal(
        (await flows.compareWithStoredImage({ imageKey: `nose-print-photo/${jsonDid}/same.jpg`, petDid: jsonDid })).verdict,
        "SAME",
        "the JSON alone is read",
      );

      // Both files, holding different dogs: vector.npy is the template, the JSON is not read.
      const bothDid = "did:pet:legacy-both";
      await backend.store.put(vectorKey(bothDid), writeNpy(await fakeEmbed(photo("npy-dog", 1))));
      const otherFv = Array.from(await fakeEmbed(photo("json-dog", 1)));
      await backend.store.put(
        legacyVectorKey(bothDid),
        new TextEncoder().encode(JSON.stringify({ petDID: bothDid, featureVector: otherFv, vectorSize: 512 })),
      );
      await backend.store.put(`nose-print-photo/${bothDid}/npy.jpg`, photo("npy-dog", 2));
      await backend.store.put(`nose-print-photo/${bothDid}/json.jpg`, photo("json-dog", 2));
      const npyWins = await flows.compareWithStoredImage({ imageKey: `nose-print-photo/${bothDid}/npy.jpg`, petDid: bothDid });
      assert.equal(npyWins.verdict, "SAME", `vector.npy's dog scores ${npyWins.similarity}`);
      const jsonIgnored = await flows.compareWithStoredImage({ imageKey: `nose-print-photo/${bothDid}/json.jpg`, petDid: bothDid });
      assert.equal(jsonIgnored.verdict, "DIFFERENT", `the legacy JSON's dog scores ${jsonIgnored.similarity}`);

      const badDid = "did:pet:legacy-128";
      await backend.store.put(vectorKey(badDid), writeNpy(new Float32Array(128).fill(0.1)));
      await backend.store.put(`nose-print-photo/${badDid}/q.jpg`, photo("x", 1));
      await assert.rejects(
        flows.compareWithStoredImage({ imageKey: `nose-print-photo/${badDid}/q.jpg`, petDid: badDid }),
        rejectsWith(MLErrorCode.VECTOR_DIMENSION_MISMATCH, /128 dimensions, expected 512/),
      );
      await assert.rejects(
        flows.compareWithStoredImage({ imageKey: `nose-print-photo/did:pet:nobody/q.jpg`, petDid: "did:pet:nobody" }),
        rejectsWith(MLErrorCode.VECTOR_NOT_FOUND),
      );
    });

    test("identifies the dog among the registered ones, best first", async () => {
      for (const dog of ["bella", "max", "luna", "charlie"]) {
        await flows.registerPet({ photos: [{ bytes: photo(dog, 1) }, { bytes: photo(dog, 2) }] });
      }
      const r = await flows.identifyPet({ photo: { bytes: photo("rex", 8) } });
      assert.equal(r.matches.length, 5);
      assert.equal(r.matches[0].petDid, rexDid);
      assert.equal(r.matches[0].verdict, "SAME");
      assert.ok(r.matches.slice(1).every((m) => m.verdict === "DIFFERENT"));
      assert.ok(r.matches.every((m, i) => i === 0 || m.similarity <= r.matches[i - 1].similarity));

      const top = await flows.identifyPet({ photo: { bytes: photo("fido", 8) }, topK: 1 });
      assert.deepEqual(
        top.matches.map((m) => m.petDid),
        [fidoDid],
      );
      const filtered = await flows.identifyPet({ photo: { bytes: photo("fido", 9) }, topK: 50, minSimilarity: 0.5 });
      assert.deepEqual(
        filtered.matches.map((m) => m.petDid),
        [fidoDid],
      );
      await assert.rejects(
        flows.identifyPet({ photo: { bytes: photo("rex", 1) }, topK: 51 }),
        rejectsWith(MLErrorCode.INVALID_REQUEST, /topK/),
      );
    });

    test("approves a transfer only at SAME, once per request id", async () => {
      const ok = await flows.approveTransfer({
        petDid: rexDid,
        photo: { bytes: photo("rex", 10) },
        fromGuardian: "0xaaa",
        toGuardian: "0xbbb",
        requestId: "tx-1",
      });
      assert.equal(ok.approved, true);
      assert.equal(ok.verdict, "SAME");
      assert.match(ok.approvalId, /^[0-9a-f-]{36}$/);
      assert.ok(!Number.isNaN(Date.parse(ok.approvedAt)));

      const calls = embedCalls;
      const again = await flows.approveTransfer({
        petDid: rexDid,
        photo: { bytes: photo("rex", 10) },
        fromGuardian: "0xaaa",
        toGuardian: "0xbbb",
        requestId: "tx-1",
      });
      assert.equal(embedCalls, calls);
      assert.equal(again.approvalId, ok.approvalId);
      assert.equal(again.approvedAt, ok.approvedAt);
      await assert.rejects(
        flows.approveTransfer({
          petDid: fidoDid,
          photo: { bytes: photo("fido", 10) },
          fromGuardian: "0xaaa",
          toGuardian: "0xbbb",
          requestId: "tx-1",
        }),
        rejectsWith(MLErrorCode.INVALID_REQUEST, /already used/),
      );

      const refused = await flows.approveTransfer({
        petDid: rexDid,
        photo: { bytes: photo("fido", 11) },
        fromGuardian: "0xaaa",
        toGuardian: "0xccc",
        requestId: "tx-2",
      });
      assert.equal(refused.approved, false);
      assert.equal(refused.approvalId, "");
      assert.equal(refused.verdict, "DIFFERENT");
      assert.equal(await registry.findApproval("tx-2"), undefined);

      const { rows } = await backend.db.query<{ kind: string; n: string }>(
        "SELECT kind, count(*)::text AS n FROM audit_log GROUP BY kind ORDER BY kind",
      );
      const counts = Object.fromEntries(rows.map((r) => [r.kind, Number(r.n)]));
      assert.equal(counts.transfer, 2);
      assert.equal(counts.verify, 4);
      assert.ok(counts.identify >= 3 && counts.register >= 6);
    });

    test("an object write failing midway leaves no pet, and a retry with the same request id completes", async () => {
      let puts = 0;
      const flaky: ObjectStore = {
        ...backend.store,
        async put(key, bytes, type) {
          if (++puts === 3) throw storageError("simulated outage on the third write");
          return backend.store.put(key, bytes, type);
        },
      };
      const photos = [{ bytes: photo("milo", 1) }, { bytes: photo("milo", 2) }, { bytes: photo("milo", 3) }];
      await assert.rejects(
        createFlows({ ...deps, store: flaky }).registerPet({ photos, requestId: "reg-milo" }),
        rejectsWith(MLErrorCode.STORAGE_CONNECTION_ERROR),
      );
      assert.equal(await registry.findPetByRequestId("reg-milo"), undefined);

      const r = await flows.registerPet({ photos, requestId: "reg-milo" });
      assert.equal(r.created, true);
      assert.equal(r.imageKeys.length, 3);
      assert.ok(await backend.store.exists(r.vectorKey));
      assert.equal((await registry.embeddingsOf(r.petDid)).length, 3);
    });

    test("a database failure after the objects leaves no pet, and a retry completes", async () => {
      let failed = false;
      const flakyRegistry: Registry = {
        ...registry,
        async insertPet(...args) {
          if (!failed) {
            failed = true;
            throw new MLError(MLErrorCode.SERVICE_UNAVAILABLE, "simulated database outage");
          }
          return registry.insertPet(...args);
        },
      };
      const f = createFlows({ ...deps, registry: flakyRegistry });
      const photos = [{ bytes: photo("coco", 1) }, { bytes: photo("coco", 2) }];
      await assert.rejects(f.registerPet({ photos, requestId: "reg-coco" }), rejectsWith(MLErrorCode.SERVICE_UNAVAILABLE));
      assert.equal(await registry.findPetByRequestId("reg-coco"), undefined);
      const r = await f.registerPet({ photos, requestId: "reg-coco" });
      assert.equal(r.created, true);
      assert.equal((await f.registerPet({ photos, requestId: "reg-coco" })).petDid, r.petDid);
    });

    test("two concurrent registrations of one nose create one pet", async () => {
      // Clean shots (noise 0.05, about 0.997 across the two requests), well above the duplicate similarity.
      const photos = [{ bytes: photo("twin", 1, 0.05) }, { bytes: photo("twin", 2, 0.05) }];
      const results = await Promise.allSettled([
        flows.registerPet({ photos, requestId: "twin-a" }),
        flows.registerPet({ photos: [{ bytes: photo("twin", 3, 0.05) }, { bytes: photo("twin", 4, 0.05) }], requestId: "twin-b" }),
      ]);
      assert.equal(results.filter((r) => r.status === "fulfilled").length, 1);
      const refused = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
      assert.ok(refused.reason instanceof DuplicatePetError, String(refused.reason));
    });

    if (!withOutages) return;
    test("outages are retryable and the same objects recover after restart", async () => {
      const o = backend.outage!;
      await o.stopStore();
      try {
        // Bounded against a hang, not timed: the store's deadline is 2.5 s.
        await assert.rejects(
          within(flows.verifyPet({ petDid: rexDid, photo: { bytes: photo("rex", 20) } }), 15_000, "verify with the store down"),
          (e: unknown) => {
            rejectsWith(MLErrorCode.STORAGE_CONNECTION_ERROR)(e);
            assert.equal(toWireError(e).retryable, true);
            return true;
          },
        );
        await assert.rejects(
          within(
            flows.compareWithStoredImage({ imageKey: `nose-print-photo/${rexDid}/image_1.jpg`, petDid: rexDid }),
            15_000,
            "compare with the store down",
          ),
          rejectsWith(MLErrorCode.STORAGE_CONNECTION_ERROR),
        );
      } finally {
        await o.startStore();
      }

      await o.stopDb();
      try {
        await assert.rejects(
          within(flows.verifyPet({ petDid: rexDid, photo: { bytes: photo("rex", 21) } }), 15_000, "verify with the database down"),
          (e: unknown) => {
            rejectsWith(MLErrorCode.SERVICE_UNAVAILABLE, /database unavailable/)(e);
            assert.equal(toWireError(e).retryable, true);
            return true;
          },
        );
        await assert.rejects(
          within(flows.identifyPet({ photo: { bytes: photo("rex", 22) } }), 15_000, "identify with the database down"),
          rejectsWith(MLErrorCode.SERVICE_UNAVAILABLE),
        );
      } finally {
        await o.startDb();
      }

      const v = await flows.verifyPet({ petDid: rexDid, photo: { bytes: photo("rex", 23) } });
      assert.equal(v.verdict, "SAME");
      assert.ok(await backend.store.exists(v.storedImageKey));
      const r = await flows.registerPet({ photos: [{ bytes: photo("after", 1) }, { bytes: photo("after", 2) }] });
      assert.equal(r.created, true);
    });
  });
}

// --- PGlite + folder store ----------------------------------------------------

const pgliteDir = mkdtempSync(join(tmpdir(), "nosepaw-pglite-"));
after(() => rmSync(pgliteDir, { recursive: true, force: true }));

databaseContract("PGlite", async () => {
  // Open, migrate, close and reopen: the schema persists in the data dir.
  const first = await openPglite({ dataDir: join(pgliteDir, "contract") });
  assert.deepEqual(
    await migrate(first),
    MIGRATIONS.map((m) => m.version),
  );
  await first.close();
  return openPglite({ dataDir: join(pgliteDir, "contract") });
});

flowsSuite("PGlite + folder store", async () => {
  const db = await openPglite({ dataDir: join(pgliteDir, "flows") });
  const root = mkdtempSync(join(tmpdir(), "nosepaw-objects-"));
  return {
    db,
    store: createFolderStore({ root }),
    async dispose() {
      await db.close();
      rmSync(root, { recursive: true, force: true });
    },
  };
});

// --- Debian PostgreSQL 15 + pgvector, s3rver ------------------------------------

describe("PostgreSQL server", { skip: pgSkip ?? false }, () => {
  let pg: TestPostgres;
  before(async () => {
    pg = await startPostgres();
  });
  after(async () => {
    await pg?.dispose();
  });

  test("replicas migrating at the same moment apply each version once", async () => {
    const a = openPostgres(pg.config);
    const b = openPostgres(pg.config);
    try {
      const [ra, rb] = await Promise.all([migrate(a), migrate(b)]);
      assert.deepEqual(
        [...ra, ...rb].sort((x, y) => x - y),
        MIGRATIONS.map((m) => m.version),
      );
    } finally {
      await a.close();
      await b.close();
    }
  });

  test("a server killed mid-query gives a retryable error, and the same pool works after restart", async () => {
    const pool = openPostgres({ ...pg.config, onError: () => {} });
    try {
      await pool.query("SELECT 1");
      // Settle-tracking from the start: both fail while the server is being stopped.
      const inFlight = Promise.allSettled([pool.query("SELECT pg_sleep(5)"), pool.transaction((tx) => tx.query("SELECT pg_sleep(5)"))]);
      await new Promise((r) => setTimeout(r, 300));
      await pg.stop();
      try {
        for (const r of await inFlight) {
          assert.equal(r.status, "rejected");
          rejectsWith(MLErrorCode.SERVICE_UNAVAILABLE, /database unavailable/)(r.reason);
          assert.equal(isRetryable((r.reason as MLError).code), true);
        }
        await assert.rejects(pool.query("SELECT 1"), rejectsWith(MLErrorCode.SERVICE_UNAVAILABLE));
        await assert.rejects(
          pool.transaction(async () => {}),
          rejectsWith(MLErrorCode.SERVICE_UNAVAILABLE),
        );
      } finally {
        await pg.start();
      }
      assert.deepEqual((await pool.query<{ x: number }>("SELECT 1 AS x")).rows, [{ x: 1 }]);
    } finally {
      await pool.close();
    }
  });

  databaseContract("PostgreSQL 15", async () => openPostgres(pg.config));

  describe("with s3rver", () => {
    let s3: TestS3;
    before(async () => {
      s3 = await startS3();
    });
    after(async () => {
      await s3?.dispose();
    });
    flowsSuite(
      "PostgreSQL + s3rver",
      async () => {
        // A fresh database so the suite starts empty.
        const admin = openPostgres(pg.config);
        await admin.query("CREATE DATABASE flows");
        await admin.close();
        const db = openPostgres({ ...pg.config, database: "flows", onError: () => {} });
        return {
          db,
          store: createS3Store(s3.config),
          async dispose() {
            await db.close();
          },
          outage: { stopStore: s3.stop, startStore: s3.start, stopDb: pg.stop, startDb: pg.start },
        };
      },
      true,
    );
  });
});
