import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import pg from "pg";
import { openPglite, openPostgres, type Database } from "../server/db/database.js";
import { migrate } from "../server/db/migrations.js";
import { createFlows, DuplicatePetError, type Flows } from "../server/registry/flows.js";
import { createRegistry } from "../server/registry/registry.js";
import { createFolderStore } from "../server/storage/folder-store.js";
import { gatewayClient } from "./support/grpc-client.js";
import { nosePhotos } from "./support/nose-photos.js";
import { postgresUnavailable, startPostgres, type TestPostgres } from "./support/postgres.js";
import { INSTALL, requireSystem } from "./support/require-system.js";
import { makeTestModel, startServer, type RunningServer } from "./support/server.js";
import { seededUnit, taggedPhoto } from "./support/vectors.js";

/**
 * One nose registered many times at once, over separate database
 * connections: exactly one pet results, and every other registration is
 * answered as a duplicate naming the winner's DID. Both kinds of sameness
 * race: identical photos (the same DID, caught by the primary key) and other
 * photos of the same nose (another DID, caught only by the duplicate check
 * running under the registration lock).
 */

const N = 8;
const DIM = 512;

const unit = (seed: string) => seededUnit(seed, DIM);
const photo = (dog: string, shot: number) => taggedPhoto(`dog=${dog};shot=${shot}`);
/** Two shots of a dog score about 0.98: above the default duplicate similarity (0.95). */
const embed = async (bytes: Uint8Array) => {
  const dog = /dog=(\w+)/.exec(new TextDecoder().decode(bytes.subarray(4)))![1];
  const noise = unit(`photo:${createHash("sha256").update(bytes).digest("hex")}`);
  return unit(`dog:${dog}`).map((x, i) => x + 0.15 * noise[i]);
};

/** N registrations of one dog at once, spread over the given flows; photo pairs chosen by `shots(i)`. */
async function race(flows: Flows[], dog: string, shots: (i: number) => [number, number]) {
  const results = await Promise.allSettled(
    Array.from({ length: N }, (_, i) => flows[i % flows.length].registerPet({ photos: shots(i).map((k) => ({ bytes: photo(dog, k) })) })),
  );
  const won = results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  const lost = results.flatMap((r) => (r.status === "rejected" ? [r.reason] : []));
  assert.equal(won.length, 1, `one registration wins: ${lost.map((e) => (e as Error).message).join("; ")}`);
  for (const e of lost) {
    assert.ok(e instanceof DuplicatePetError, String(e));
    assert.equal(e.existingPetDid, won[0].petDid, "the loser is told the winner's DID");
  }
  return won[0].petDid;
}

function raceSuite(name: string, connections: () => Promise<Database[]>, cleanup: () => Promise<void> = async () => {}) {
  describe(name, () => {
    let dbs: Database[];
    let flows: Flows[];
    before(async () => {
      dbs = await connections();
      await migrate(dbs[0]);
      const store = createFolderStore({ root: mkdtempSync(join(tmpdir(), "nosepaw-race-")) });
      flows = dbs.map((db) => createFlows({ store, registry: createRegistry(db), embed, modelVersion: "race-1" }));
    });
    after(async () => {
      await Promise.all(dbs?.map((db) => db.close()) ?? []);
      await cleanup();
    });
    const pets = async (did: string) => (await dbs[0].query("SELECT 1 FROM pets WHERE pet_did = $1", [did])).rows.length;
    const total = async () => Number((await dbs[0].query<{ n: string }>("SELECT count(*) AS n FROM pets")).rows[0].n);

    test(`${N} identical registrations at once: one pet, the others get its DID`, async () => {
      const before = await total();
      const did = await race(flows, "A", () => [0, 1]);
      assert.equal(await pets(did), 1);
      assert.equal(await total(), before + 1);
    });

    test(`${N} registrations of one nose with different photos at once: one pet, the others get its DID`, async () => {
      const before = await total();
      await race(flows, "B", (i) => [2 * i, 2 * i + 1]);
      assert.equal(await total(), before + 1, "the duplicate check and the insert ran under one lock");
    });
  });
}

raceSuite("registration race on PGlite (one process, concurrent calls)", async () => [await openPglite({ dataDir: "memory://" })]);

const pgMissing = requireSystem("PostgreSQL with pgvector", postgresUnavailable(), INSTALL.postgres);
let pgServer: TestPostgres | undefined;
describe("registration race on PostgreSQL", { skip: pgMissing }, () => {
  raceSuite(
    "two connection pools, as two replicas",
    async () => {
      pgServer = await startPostgres("race");
      return [openPostgres(pgServer.config), openPostgres(pgServer.config)];
    },
    async () => pgServer?.dispose(),
  );

  // The replicas share PostgreSQL and one object folder (written atomically:
  // a temp file renamed into place). Not s3rver: its folder store is not
  // atomic when one key is written concurrently, which this race does on
  // purpose, so it would test s3rver rather than the registry.
  describe("through two server processes sharing PostgreSQL and an object folder", () => {
    let objects: string;
    let pgs: TestPostgres;
    const servers: RunningServer[] = [];
    before(async () => {
      objects = mkdtempSync(join(tmpdir(), "nosepaw-race-objects-"));
      pgs = await startPostgres("race_wire");
    });
    after(async () => {
      await Promise.all(servers.map((s) => s.stop()));
      await pgs?.dispose();
      rmSync(objects, { recursive: true, force: true });
    });

    test("the same nose sent to two replicas at once: one pet; every other answer is the duplicate with the winner's DID", async () => {
      const model = makeTestModel(join(mkdtempSync(join(tmpdir(), "nosepaw-model-")), "pattern.onnx"), { kind: "pattern", card: true });
      assert.ok(JSON.parse(readFileSync(model.replace(/\.onnx$/, ".json"), "utf8")).calibration);
      const env = {
        OBJECT_STORE_DIR: objects,
        DB_HOST: pgs.config.host,
        DB_PORT: String(pgs.config.port),
        DB_USERNAME: pgs.config.username,
        DB_PASSWORD: pgs.config.password,
        DB_DATABASE: pgs.config.database,
        MODEL_PATH: model,
      };
      servers.push(...(await Promise.all([startServer(env), startServer(env)])));
      const clients = servers.map((s) => gatewayClient(s.address));
      const shot = nosePhotos(1);
      const bytes = (b: Buffer) => ({ image_data: b, image_format: "jpeg" });
      try {
        for (const s of servers) await s.waitForLog((l) => l.msg === "database ready");
        // Identical pairs and the other pair of the same shoot, alternating between the replicas.
        const answers = await Promise.all(
          Array.from({ length: N }, (_, i) =>
            clients[i % 2].call("RegisterPet", {
              photos: i % 4 < 2 ? [bytes(shot(0, 0)), bytes(shot(0, 1))] : [bytes(shot(0, 2)), bytes(shot(0, 3))],
            }),
          ),
        );
        const won = answers.filter((a) => a.success);
        assert.equal(won.length, 1, JSON.stringify(answers.map((a) => a.error_message)));
        for (const a of answers.filter((x) => !x.success)) {
          assert.equal(a.error_code, "INVALID_REQUEST", a.error_message);
          assert.equal(a.duplicate_pet_did, won[0].pet_did, a.error_message);
        }
        const db = new pg.Client({ ...pgs.config, user: pgs.config.username });
        await db.connect();
        try {
          assert.equal((await db.query("SELECT pet_did FROM pets")).rows.length, 1);
        } finally {
          await db.end();
        }
      } finally {
        clients.forEach((c) => c.close());
      }
    });
  });
});
