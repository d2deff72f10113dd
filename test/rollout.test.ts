import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import pg from "pg";
import { SWEEP_LOCK } from "../server/registry/registry.js";
import { cosine } from "../shared/similarity.js";
import { createS3Store } from "../server/storage/s3-store.js";
import { gatewayClient, type GatewayClient } from "./support/grpc-client.js";
import { nosePhotos } from "./support/nose-photos.js";
import { postgresUnavailable, startPostgres, type TestPostgres } from "./support/postgres.js";
import { INSTALL, requireSystem } from "./support/require-system.js";
import { remoteRegistryEnv } from "./support/registry-env.js";
import { startS3, type TestS3 } from "./support/s3.js";
import { makeTestModel, ROOT, startServer, type RunningServer } from "./support/server.js";

/**
 * A rollout across replicas on one PostgreSQL and one S3-protocol store: one
 * server stays on the old model version while two start on a new one. No
 * score is computed across versions, the re-embedding sweep runs on one
 * replica at a time, every stored pet moves, and `npm run registry:reembed`
 * does the same on demand (here: a rollback).
 */

const dir = mkdtempSync(path.join(tmpdir(), "nosepaw-rollout-"));
const v1 = makeTestModel(path.join(dir, "v1.onnx"), { kind: "pattern", card: true });
const card = JSON.parse(readFileSync(v1.replace(/\.onnx$/, ".json"), "utf8"));
writeFileSync(v1.replace(/\.onnx$/, ".json"), JSON.stringify({ ...card, version: "test-pattern-1" }));
// The upgrade: the same model with its output rotated by a fixed orthogonal
// matrix. It scores photos exactly as v1 does, but its vectors are unrelated
// to v1's, so a score across the two versions would show (as DIFFERENT).
const v2 = makeTestModel(path.join(dir, "v2.onnx"), { kind: "pattern", card: true, rotate: 2 });
writeFileSync(v2.replace(/\.onnx$/, ".json"), JSON.stringify({ ...card, version: "test-pattern-2" }));
const bytes = (b: Buffer) => ({ image_data: b, image_format: "jpeg" });

async function untilHealth(c: GatewayClient, want: "SERVING" | "NOT_SERVING", timeoutMs = 30_000): Promise<any> {
  const deadline = Date.now() + timeoutMs;
  let last: any;
  while (Date.now() < deadline) {
    last = await c.call("HealthCheck", { service: "" });
    if (last.status === want) return last;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`not ${want} within ${timeoutMs} ms: ${JSON.stringify(last)}`);
}

function reembedCli(env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile(
      "npm",
      ["run", "--silent", "registry:reembed"],
      { cwd: ROOT, env: { ...process.env, ...env }, timeout: 60_000 },
      (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    ),
  );
}

const pgMissing = requireSystem("PostgreSQL with pgvector", postgresUnavailable(), INSTALL.postgres);

describe("rollout of a new model version across replicas", { skip: pgMissing }, () => {
  let s3: TestS3;
  let pgServer: TestPostgres;
  let db: pg.Client;
  let env: Record<string, string>;
  const servers: RunningServer[] = [];
  const clients: GatewayClient[] = [];
  const photo = nosePhotos(4);
  const pets: string[] = [];

  const start = async (model: string) => {
    const s = await startServer({ ...env, MODEL_PATH: model });
    servers.push(s);
    const c = gatewayClient(s.address);
    clients.push(c);
    return { s, c };
  };
  const versions = async () =>
    (
      await db.query<{ model_version: string; n: string }>(
        "SELECT model_version, count(*) AS n FROM pet_embeddings GROUP BY model_version ORDER BY 1",
      )
    ).rows.map((r) => `${r.model_version}:${r.n}`);

  before(async () => {
    [s3, pgServer] = await Promise.all([startS3("rollout"), startPostgres("rollout")]);
    env = remoteRegistryEnv(s3, pgServer);
    db = new pg.Client({ ...pgServer.config, user: pgServer.config.username });
    await db.connect();
  });
  after(async () => {
    clients.forEach((c) => c.close());
    await Promise.all(servers.map((s) => s.stop()));
    await db?.end();
    await Promise.allSettled([s3?.dispose(), pgServer?.dispose()]);
  });

  let old: { s: RunningServer; c: GatewayClient };
  let n1: { s: RunningServer; c: GatewayClient };
  let n2: { s: RunningServer; c: GatewayClient };

  test("old and new replicas side by side: no cross-version score, one sweep at a time, every pet moved", async () => {
    old = await start(v1);
    await untilHealth(old.c, "SERVING");
    for (let dog = 0; dog < 4; dog++) {
      const r = await old.c.call("RegisterPet", { photos: [bytes(photo(dog, 0)), bytes(photo(dog, 1))] });
      assert.equal(r.success, true, r.error_message);
      pets.push(r.pet_did);
    }
    assert.deepEqual(await versions(), ["test-pattern-1:8"]);

    // Another replica's sweep holds the lock while the new replicas start: they must wait for it.
    await db.query("BEGIN");
    await db.query("SELECT pg_advisory_xact_lock($1)", [SWEEP_LOCK]);
    [n1, n2] = await Promise.all([start(v2), start(v2)]);
    for (const n of [n1, n2]) await n.s.waitForLog((l) => l.msg === "re-embedding sweep is running on another replica", 20_000);
    assert.deepEqual(await versions(), ["test-pattern-1:8"], "nobody swept under the held lock");

    // The old replica has been superseded: it says so, refuses 1:N (retryable), and verifies on its own version in memory.
    const h = await untilHealth(old.c, "NOT_SERVING", 5000);
    assert.match(h.message, /the registry has moved to model version test-pattern-2; this server runs test-pattern-1/);
    const refused = await old.c.call("IdentifyPet", { photo: bytes(photo(0, 2)) });
    assert.equal(refused.success, false);
    assert.equal(refused.error_code, "SERVICE_UNAVAILABLE");
    assert.equal(refused.retryable, true);
    assert.match(refused.error_message, /moved to model version test-pattern-2/);
    const dup = await old.c.call("RegisterPet", { photos: [bytes(photo(0, 2)), bytes(photo(0, 3))] });
    assert.equal(dup.error_code, "SERVICE_UNAVAILABLE", dup.error_message);
    const oldVerify = await old.c.call("VerifyPet", { pet_did: pets[0], photo: bytes(photo(0, 2)) });
    assert.equal(oldVerify.success, true, oldVerify.error_message);
    assert.equal(oldVerify.model_version, "test-pattern-1");
    assert.equal(oldVerify.verdict, "SAME");

    // The two versions' vectors of one photo are unrelated: a cross-version score would be visible.
    await untilHealth(n1.c, "SERVING");
    const [e1, e2] = await Promise.all([old.c, n1.c].map((c) => c.call("ExtractNoseVector", bytes(photo(1, 2)))));
    assert.ok(e1.success && e2.success, `${e1.error_message} ${e2.error_message}`);
    const crossCos = cosine(e1.vector, e2.vector);
    assert.ok(Math.abs(crossCos) < 0.3, `v1 and v2 embed one photo alike (cosine ${crossCos}): the new model is not really new`);

    // A new replica verifies a pet the sweep has not reached by re-embedding it first.
    const newVerify = await n1.c.call("VerifyPet", { pet_did: pets[1], photo: bytes(photo(1, 2)) });
    assert.equal(newVerify.success, true, newVerify.error_message);
    assert.equal(newVerify.model_version, "test-pattern-2");
    assert.equal(newVerify.verdict, "SAME");
    assert.deepEqual(await versions(), ["test-pattern-1:6", "test-pattern-2:2"]);
    // The old replica's verification did not move pet 0 back or forth.
    const pet0 = await db.query("SELECT DISTINCT model_version FROM pet_embeddings WHERE pet_did = $1", [pets[0]]);
    assert.deepEqual(pet0.rows, [{ model_version: "test-pattern-1" }]);

    await db.query("COMMIT");
    const deadline = Date.now() + 20_000;
    while ((await versions()).join() !== "test-pattern-2:8" && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(await versions(), ["test-pattern-2:8"], "every stored pet moved");
    await Promise.any([n1, n2].map((n) => n.s.waitForLog((l) => l.msg === "embeddings re-embedded", 10_000)));
    const swept = [n1, n2].flatMap((n) => n.s.logs.filter((l) => l.msg === "embeddings re-embedded").map((l) => l.count as number));
    assert.deepEqual(swept, [6], "one replica swept the six remaining rows, once");
    const audits = await db.query<{ pet_did: string; n: string }>(
      "SELECT pet_did, count(*) AS n FROM audit_log WHERE kind = 'reembed' GROUP BY pet_did",
    );
    assert.equal(audits.rows.length, 4);
    assert.ok(
      audits.rows.every((r) => r.n === "1"),
      JSON.stringify(audits.rows),
    );

    const found = await n2.c.call("IdentifyPet", { photo: bytes(photo(2, 2)) });
    assert.equal(found.success, true, found.error_message);
    assert.equal(found.matches[0].pet_did, pets[2]);
    assert.equal(found.model_version, "test-pattern-2");
    const again = await old.c.call("VerifyPet", { pet_did: pets[0], photo: bytes(photo(0, 3)) });
    assert.equal(again.model_version, "test-pattern-1");
    assert.deepEqual(await versions(), ["test-pattern-2:8"], "the old replica never writes its embeddings back");
  });

  test("npm run registry:reembed: rolls the registry back to the old model on demand, prints what it did, exits 1 when it cannot", async () => {
    assert.ok(old, "runs after the rollout");
    await Promise.all([n1.s.stop(), n2.s.stop()]);
    const back = await reembedCli({ ...env, MODEL_PATH: v1 });
    assert.equal(back.code, 0, back.stderr);
    assert.match(
      back.stdout,
      /re-embedded 8 embedding\(s\) of 4 pet\(s\) to model version test-pattern-1 \(8 from test-pattern-2\); 0 photo\(s\) missing/,
    );
    assert.deepEqual(await versions(), ["test-pattern-1:8"]);
    // The old replica is current again: SERVING, and 1:N answers.
    await untilHealth(old.c, "SERVING", 5000);
    const found = await old.c.call("IdentifyPet", { photo: bytes(photo(3, 2)) });
    assert.equal(found.matches[0].pet_did, pets[3]);

    // A photo gone from the store: that pet cannot move; the tool says so and fails.
    const store = createS3Store(s3.config);
    await store.delete(`nose-print-photo/${pets[3]}/image_2.jpg`);
    const partial = await reembedCli({ ...env, MODEL_PATH: v2 });
    assert.equal(partial.code, 1);
    assert.match(
      partial.stdout,
      /re-embedded 7 embedding\(s\) of 4 pet\(s\) to model version test-pattern-2 \(7 from test-pattern-1\); 1 photo\(s\) missing/,
    );
    assert.match(partial.stderr, new RegExp(`not moved: nose-print-photo/${pets[3]}/image_2.jpg`));

    const noModel = await reembedCli({ ...env, MODEL_PATH: path.join(dir, "missing.onnx") });
    assert.equal(noModel.code, 1);
    assert.match(noModel.stderr, /model file not found/);
    const noDb = await reembedCli({ ...env, MODEL_PATH: v2, DB_PORT: "1" });
    assert.equal(noDb.code, 1);
    assert.match(noDb.stderr, /registry:reembed: /);
  });
});
