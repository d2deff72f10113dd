import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { MLErrorCode } from "../gen/nose_embedder_pb.js";
import { openPglite, openPostgres, type Database } from "../server/db/database.js";
import { migrate } from "../server/db/migrations.js";
import { MLError } from "../server/errors.js";
import { createFlows, type Flows } from "../server/registry/flows.js";
import { createRegistry, NEAREST_ROWS_SQL, toVectorLiteral, type Registry } from "../server/registry/registry.js";
import { createFolderStore } from "../server/storage/folder-store.js";
import type { ObjectStore } from "../server/storage/object-store.js";
import { postgresUnavailable, startPostgres, type TestPostgres } from "./support/postgres.js";
import { INSTALL, requireSystem } from "./support/require-system.js";
import { seededUnit, taggedPhoto } from "./support/vectors.js";

/**
 * Two model versions on one registry. The second "model" sees dog A where
 * the first saw dog B and the reverse, and dog C where the first saw A: a
 * score computed across the two versions is then confidently wrong (an A
 * photo under v2 looks like B's v1 rows), so any path that mixes versions
 * shows up as a wrong pet or a wrong refusal.
 */

const DIM = 512;
const V1 = "test-v1";
const V2 = "test-v2";

const unit = (seed: string) => seededUnit(seed, DIM);

/** A JPEG signature and `dog=X;shot=N`: the registry checks the signature, the fake models read the text. */
const photo = (dog: string, shot: number) => taggedPhoto(`dog=${dog};shot=${shot}`);

/** A model that sees each dog as `seen[dog]`, plus small per-photo noise (two shots score about 0.98). */
const fakeModel = (seen: Record<string, string>) => async (bytes: Uint8Array) => {
  const dog = /dog=(\w+)/.exec(new TextDecoder().decode(bytes.subarray(4)))![1];
  const base = unit(`dog:${seen[dog] ?? dog}`);
  const noise = unit(`photo:${createHash("sha256").update(bytes).digest("hex")}`);
  return base.map((x, i) => x + 0.15 * noise[i]);
};
const modelV1 = fakeModel({});
const modelV2 = fakeModel({ A: "B", B: "A", C: "A" });

function rejectsWith(code: MLErrorCode, message: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof MLError, String(e));
    assert.equal(e.code, code, e.message);
    assert.match(e.message, message);
    return true;
  };
}

function versionSuite(name: string, open: () => Promise<Database>, cleanup: () => Promise<void> = async () => {}) {
  describe(name, () => {
    let db: Database;
    let registry: Registry;
    let store: ObjectStore;
    let v1: Flows;
    let v2: Flows;
    const pets: Record<string, string> = {};

    before(async () => {
      db = await open();
      await migrate(db);
      registry = createRegistry(db);
      store = createFolderStore({ root: mkdtempSync(join(tmpdir(), "nosepaw-versions-")) });
      v1 = createFlows({ store, registry, embed: modelV1, modelVersion: V1 });
      v2 = createFlows({ store, registry, embed: modelV2, modelVersion: V2 });
      await registry.adoptModelVersion(V1);
      for (const dog of ["A", "B", "D"]) {
        const r = await v1.registerPet({ photos: [{ bytes: photo(dog, 0) }, { bytes: photo(dog, 1) }] });
        pets[dog] = r.petDid;
      }
      // D's photos are lost: its v1 template is all that is left of it.
      for (const key of (await registry.findPet(pets.D))!.imageKeys) await store.delete(key);
      await registry.adoptModelVersion(V2);
    });
    after(async () => {
      await db?.close();
      await cleanup();
    });

    test("IdentifyPet under v2 ignores v1 rows until they are re-embedded (no cross-version match)", async () => {
      // Without the filter, A's photo under v2 lands on B's v1 rows at SAME.
      const r = await v2.identifyPet({ photo: { bytes: photo("A", 2) } });
      assert.deepEqual(r.matches, []);
      const v1Rows = await registry.nearestPets(await modelV2(photo("A", 2)), 5);
      assert.equal(v1Rows[0]?.petDid, pets.B, "the rows are there: only the version filter keeps them out");
    });

    test("the duplicate check at registration under v2 is not decided by v1 rows", async () => {
      // C under v2 looks like A under v1: without the filter it would be refused as a duplicate of A.
      const r = await v2.registerPet({ photos: [{ bytes: photo("C", 0) }, { bytes: photo("C", 1) }] });
      assert.equal(r.created, true);
      assert.equal(r.modelVersion, V2);
      assert.equal(r.review, undefined, "no v1 pet is even a review candidate");
      const rows = await registry.embeddingsOf(r.petDid);
      assert.ok(rows.every((e) => e.modelVersion === V2));
    });

    test("VerifyPet under v2 re-embeds the pet's v1 rows first; CompareWithStoredImage refuses a v1 template it cannot re-embed", async () => {
      const r = await v2.verifyPet({ petDid: pets.A, photo: { bytes: photo("A", 2) } });
      assert.equal(r.verdict, "SAME");
      assert.equal(r.modelVersion, V2);
      assert.ok((await registry.embeddingsOf(pets.A)).every((e) => e.modelVersion === V2));
      // D has v1 rows whose photos are gone and a v1 template: no v2 score can be computed for it.
      await assert.rejects(
        v2.verifyPet({ petDid: pets.D, photo: { bytes: photo("D", 2) } }),
        rejectsWith(MLErrorCode.VECTOR_NOT_FOUND, new RegExp(`enrolled by ${V1}`)),
      );
      await store.put(`nose-print-photo/${pets.D}/verify_1.jpg`, photo("D", 3));
      await assert.rejects(
        v2.compareWithStoredImage({ petDid: pets.D, imageKey: `nose-print-photo/${pets.D}/verify_1.jpg` }),
        rejectsWith(MLErrorCode.VECTOR_NOT_FOUND, new RegExp(`enrolled by ${V1}`)),
      );
    });

    test("a server still on v1 refuses 1:N (retryable) and re-embeds for verification without moving rows back", async () => {
      await assert.rejects(
        v1.identifyPet({ photo: { bytes: photo("B", 2) } }),
        rejectsWith(MLErrorCode.SERVICE_UNAVAILABLE, new RegExp(`moved to model version ${V2}`)),
      );
      await assert.rejects(
        v1.registerPet({ photos: [{ bytes: photo("E", 0) }, { bytes: photo("E", 1) }] }),
        rejectsWith(MLErrorCode.SERVICE_UNAVAILABLE, new RegExp(`moved to model version ${V2}; this server runs ${V1}`)),
      );
      const audits = (await registry.auditOf(pets.A, ["reembed"])).length;
      const r = await v1.verifyPet({ petDid: pets.A, photo: { bytes: photo("A", 3) } });
      assert.equal(r.verdict, "SAME");
      assert.equal(r.modelVersion, V1);
      assert.ok(
        (await registry.embeddingsOf(pets.A)).every((e) => e.modelVersion === V2),
        "rows stay on v2",
      );
      assert.equal((await registry.auditOf(pets.A, ["reembed"])).length, audits, "nothing moved, nothing audited");
    });

    test("the sweep moves the rest to v2 and reports photos it cannot read; then IdentifyPet finds the pets", async () => {
      const report = await v2.migrateStale();
      assert.equal(report.embeddings, 2, "B's two rows (A's moved on verification)");
      assert.deepEqual(report.from, { [V1]: 2 });
      assert.equal(report.missing.length, 2, "D's two photos are gone");
      assert.ok(report.missing.every((m) => m.petDid === pets.D));
      const r = await v2.identifyPet({ photo: { bytes: photo("A", 4) } });
      assert.equal(r.matches[0].petDid, pets.A);
      assert.equal(r.matches[0].verdict, "SAME");
      assert.equal((await v2.migrateStale()).embeddings, 0);
    });

    test("EXPLAIN: the version-filtered nearest-rows query still scans the HNSW index", async () => {
      const plan = await db.transaction(async (tx) => {
        await tx.query("SELECT set_config('enable_seqscan', 'off', true), set_config('hnsw.iterative_scan', 'relaxed_order', true)");
        const { rows } = await tx.query<Record<string, string>>(`EXPLAIN ${NEAREST_ROWS_SQL}`, [
          toVectorLiteral(await modelV2(photo("A", 5))),
          40,
          5,
          V2,
        ]);
        return rows.map((r) => Object.values(r)[0]).join("\n");
      });
      assert.match(plan, /Index Scan using pet_embeddings_embedding_hnsw/, plan);
      assert.match(plan, /Filter: .*model_version/, plan);
    });
  });
}

versionSuite("two model versions on one PGlite registry", () => openPglite({ dataDir: "memory://" }));

const pgMissing = requireSystem("PostgreSQL with pgvector", postgresUnavailable(), INSTALL.postgres);
let pg: TestPostgres | undefined;
describe("two model versions on one PostgreSQL registry", { skip: pgMissing }, () => {
  versionSuite(
    "PostgreSQL",
    async () => {
      pg = await startPostgres("versions");
      return openPostgres(pg.config);
    },
    async () => pg?.dispose(),
  );
});
