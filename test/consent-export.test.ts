import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { openPglite, openPostgres, type Database } from "../server/db/database.js";
import { MIGRATIONS, migrate } from "../server/db/migrations.js";
import type { Manifest } from "../server/tools/registry-export.js";
import { folderOf, parseArgs, UsageError } from "../server/tools/registry-export.js";
import { assertError, gatewayClient, type GatewayClient } from "./support/grpc-client.js";
import { runTool, type CommandRun } from "./support/run-command.js";
import { postgresUnavailable, startPostgres, type TestPostgres } from "./support/postgres.js";
import { INSTALL, requireSystem } from "./support/require-system.js";
import { freePort, startS3, type TestS3 } from "./support/s3.js";
import { makeTestModel, ROOT, startServer, type RunningServer } from "./support/server.js";
import { nosePhotos } from "./support/nose-photos.js";
import { remoteRegistryEnv } from "./support/registry-env.js";

// The predictable user model the registry wire tests use (re-takes score SAME, other dogs do not).
const MODEL_PATH = makeTestModel(path.join(mkdtempSync(path.join(tmpdir(), "nosepaw-model-")), "pattern.onnx"), {
  kind: "pattern",
  card: true,
});
const bytes = (b: Buffer) => ({ image_data: b, image_format: "jpeg" });
const UNKNOWN_DID = `did:ethr:besu:0x${"cd".repeat(20)}`;

function exported(r: CommandRun, out: string): Manifest {
  assert.equal(r.code, 0, `export failed (${r.code}): ${r.stderr}`);
  return JSON.parse(readFileSync(path.join(out, "manifest.json"), "utf8")) as Manifest;
}

/** Sub-folders of an export, sorted (manifest.json is a file and not listed). */
const foldersIn = (out: string) =>
  readdirSync(out, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => e.name)
    .sort();

const filesIn = (dir: string) => readdirSync(dir).sort();

async function register(client: GatewayClient, photos: Buffer[], extra: Record<string, unknown> = {}): Promise<string> {
  const r = await client.call("RegisterPet", { photos: photos.map(bytes), ...extra });
  assert.equal(r.success, true, r.error_message);
  return r.pet_did;
}

async function auditRows(db: Database, petDid: string, kind: string) {
  const { rows } = await db.query<{ requested_by: string | null; request_id: string | null; model_version: string; detail: unknown }>(
    "SELECT requested_by, request_id, model_version, detail FROM audit_log WHERE pet_did = $1 AND kind = $2 ORDER BY id",
    [petDid, kind],
  );
  return rows.map((r) => ({ ...r, detail: (typeof r.detail === "string" ? JSON.parse(r.detail) : r.detail) as Record<string, any> }));
}

async function consentOf(db: Database, petDid: string): Promise<boolean> {
  const { rows } = await db.query<{ training_consent: boolean }>("SELECT training_consent FROM pets WHERE pet_did = $1", [petDid]);
  return rows[0].training_consent;
}

test("export arguments: defaults, --since as a UTC date, --min-photos, usage errors", () => {
  const d = parseArgs(["out"]);
  assert.equal(d.out, path.resolve("out"));
  assert.equal(d.minPhotos, 2);
  assert.equal(d.withVerifications, false);
  assert.equal(d.since, undefined);
  const o = parseArgs(["--since", "2026-03-01", "x", "--min-photos=3", "--with-verifications"]);
  assert.equal(o.since?.toISOString(), "2026-03-01T00:00:00.000Z");
  assert.equal(o.minPhotos, 3);
  assert.equal(o.withVerifications, true);
  assert.equal(d.withRefused, false);
  assert.equal(parseArgs(["x", "--with-refused"]).withRefused, true);
  for (const bad of [
    [],
    ["a", "b"],
    ["a", "--since", "2026-02-30"],
    ["a", "--since", "yesterday"],
    ["a", "--min-photos", "0"],
    ["a", "--min-photos", "2.5"],
    ["a", "--bogus"],
  ]) {
    assert.throws(() => parseArgs(bad), UsageError, JSON.stringify(bad));
  }
  assert.equal(folderOf(`did:ethr:besu:0x${"ab".repeat(20)}`), `0x${"ab".repeat(20)}`);
  assert.equal(folderOf("did:pet:rex-1"), "pet_rex-1");
});

test("migrations 2 and 3 upgrade a version-1 registry: existing pets get training_consent false, 'consent' and 'reembed' audit rows are accepted", async () => {
  const db = await openPglite({ dataDir: "memory://" });
  try {
    assert.deepEqual(
      await migrate(
        db,
        MIGRATIONS.filter((m) => m.version === 1),
      ),
      [1],
    );
    await db.query(
      `INSERT INTO pets (pet_did, model_version, template, image_keys, vector_key, min_pair_similarity)
       VALUES ('did:pet:old', 'v0', $1::vector, ARRAY['nose-print-photo/did:pet:old/image_1.jpg'], 'nose-print-photo/did:pet:old/vector.npy', 0.9)`,
      [`[${new Array(512).fill(0.01).join(",")}]`],
    );
    await assert.rejects(db.query("INSERT INTO audit_log (kind, model_version) VALUES ('consent', 'v0')"), /audit_log_kind_check/);
    // Every later migration applies on top of version 1, 2 and 3 among them.
    assert.deepEqual(
      await migrate(db),
      MIGRATIONS.map((m) => m.version)
        .filter((v) => v > 1)
        .sort((a, b) => a - b),
    );
    assert.equal(await consentOf(db, "did:pet:old"), false);
    await db.query("INSERT INTO audit_log (kind, pet_did, model_version) VALUES ('consent', 'did:pet:old', 'v0')");
    await db.query("INSERT INTO audit_log (kind, pet_did, model_version) VALUES ('reembed', 'did:pet:old', 'v1')");
    await assert.rejects(db.query("INSERT INTO audit_log (kind, model_version) VALUES ('other', 'v0')"), /audit_log_kind_check/);
    await assert.rejects(db.query("UPDATE pets SET training_consent = NULL"), /null value/);
    assert.deepEqual(await migrate(db), []);
  } finally {
    await db.close();
  }
});

describe("training consent and the registry export, embedded defaults (PGlite, folder store)", () => {
  const dataDir = path.join(mkdtempSync(path.join(tmpdir(), "nosepaw-data-")), "data");
  const env = { MODEL_PATH, DATA_DIR: dataDir };
  const work = mkdtempSync(path.join(tmpdir(), "nosepaw-export-"));
  const photo = nosePhotos(5);
  let server: RunningServer | undefined;
  let client: GatewayClient | undefined;
  // dog -> DID
  const did: string[] = [];
  let sameShot = "";
  let otherShot = "";

  before(async () => {
    server = await startServer(env);
    client = gatewayClient(server.address);
    await server.waitForLog((l) => l.msg === "database ready");
  });
  after(async () => {
    client?.close();
    await server?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  test("RegisterPet records training_consent; SetTrainingConsent changes it in-band", async () => {
    const c = client!;
    did[0] = await register(c, [photo(0, 0), photo(0, 1)], { training_consent: true, request_id: "reg-0", requested_by: "0xguardian0" });
    did[1] = await register(c, [photo(1, 0), photo(1, 1)]); // field absent: no consent
    did[2] = await register(c, [photo(2, 0), photo(2, 1)], { training_consent: false });
    did[3] = await register(c, [photo(3, 0), photo(3, 1)], { training_consent: true });
    did[4] = await register(c, [photo(4, 0), photo(4, 1)], { training_consent: true });

    const granted = await c.call("SetTrainingConsent", {
      pet_did: did[2],
      training_consent: true,
      requested_by: "0xguardian2",
      request_id: "consent-2",
    });
    assert.equal(granted.success, true, granted.error_message);
    assert.equal(granted.pet_did, did[2]);
    assert.equal(granted.training_consent, true);
    assert.equal(granted.error_code, undefined);
    // A retry of the same request answers the current value and writes nothing new (checked below).
    const retried = await c.call("SetTrainingConsent", {
      pet_did: did[2],
      training_consent: true,
      requested_by: "0xguardian2",
      request_id: "consent-2",
    });
    assert.equal(retried.success, true, retried.error_message);
    assert.equal(retried.training_consent, true);

    const withdrawn = await c.call("SetTrainingConsent", { pet_did: did[3], training_consent: false, requested_by: "0xguardian3" });
    assert.equal(withdrawn.success, true, withdrawn.error_message);
    assert.equal(withdrawn.training_consent, false);

    const unknown = await c.call("SetTrainingConsent", { pet_did: UNKNOWN_DID, training_consent: true });
    assertError(unknown, "VECTOR_NOT_FOUND", false);
    assert.match(unknown.error_message, /^ML_4004: /);
    assertError(await c.call("SetTrainingConsent", { pet_did: "did:ethr:besu:0x12", training_consent: true }), "INVALID_REQUEST", false);
    assertError(await c.call("SetTrainingConsent", { pet_did: "", training_consent: false }), "INVALID_REQUEST", false);

    const same = await c.call("VerifyPet", { pet_did: did[0], photo: bytes(photo(0, 2)) });
    assert.equal(same.success, true, same.error_message);
    assert.equal(same.verdict, "SAME");
    sameShot = same.stored_image_key;
    const other = await c.call("VerifyPet", { pet_did: did[0], photo: bytes(photo(1, 2)) });
    assert.equal(other.success, true, other.error_message);
    assert.notEqual(other.verdict, "SAME");
    otherShot = other.stored_image_key;
    assert.match(sameShot, /\/verify_\d+\.jpg$/);
    assert.match(otherShot, /\/verify_\d+\.jpg$/);
    assert.notEqual(sameShot, otherShot);
    // A SAME check of an enrolment photo's key is no new photo and must not be exported twice.
    const byKey = await c.call("VerifyPet", { pet_did: did[0], photo: { image_key: `nose-print-photo/${did[0]}/image_1.jpg` } });
    assert.equal(byKey.verdict, "SAME");
  });

  test("the pets table and the audit log hold consent: register detail, 'consent' rows with old and new value", async () => {
    // PGlite is single-process: the registry is read once the server has stopped.
    await server!.stop();
    server = undefined;
    client!.close();
    client = undefined;
    const db = await openPglite({ dataDir: path.join(dataDir, "pg") });
    try {
      assert.deepEqual(await Promise.all(did.map((d) => consentOf(db, d))), [true, false, true, false, true]);
      const reg0 = await auditRows(db, did[0], "register");
      assert.equal(reg0.length, 1);
      assert.equal(reg0[0].detail.trainingConsent, true);
      assert.equal(reg0[0].requested_by, "0xguardian0");
      assert.equal((await auditRows(db, did[1], "register"))[0].detail.trainingConsent, false);
      assert.equal((await auditRows(db, did[2], "register"))[0].detail.trainingConsent, false);

      const c2 = await auditRows(db, did[2], "consent");
      assert.equal(c2.length, 1, "the retried request id wrote no second row");
      assert.equal(c2[0].requested_by, "0xguardian2");
      assert.equal(c2[0].request_id, "consent-2");
      assert.equal(c2[0].detail.previous, false);
      assert.equal(c2[0].detail.trainingConsent, true);
      assert.equal(c2[0].detail.changed, true);
      assert.equal(c2[0].model_version, "test-pattern-1");
      const c3 = await auditRows(db, did[3], "consent");
      assert.equal(c3.length, 1);
      assert.deepEqual([c3[0].detail.previous, c3[0].detail.trainingConsent], [true, false]);
      assert.equal((await auditRows(db, did[0], "consent")).length, 0);
      const { rows } = await db.query<{ n: number }>("SELECT count(*)::int AS n FROM audit_log WHERE kind = 'consent'");
      assert.equal(Number(rows[0].n), 2, "the unknown and invalid DIDs wrote nothing");

      // Dog 4 registered long ago, for --since.
      await db.query("UPDATE pets SET created_at = '2025-06-01T12:00:00Z' WHERE pet_did = $1", [did[4]]);
    } finally {
      await db.close();
    }
  });

  test("the export writes exactly the consenting pets' enrolment photos, byte for byte, and a manifest", async () => {
    const out = path.join(work, "all");
    const r = await runTool("registry-export.ts", [out], env);
    const m = exported(r, out);
    const want = [0, 2, 4];
    assert.deepEqual(foldersIn(out), want.map((d) => folderOf(did[d])).sort());
    assert.deepEqual(foldersIn(out), want.map((d) => did[d].slice("did:ethr:besu:".length)).sort());
    for (const d of want) {
      const folder = path.join(out, folderOf(did[d]));
      assert.deepEqual(filesIn(folder), ["image_1.jpg", "image_2.jpg"]);
      assert.ok(readFileSync(path.join(folder, "image_1.jpg")).equals(photo(d, 0)), `dog ${d} photo 1 is the registered bytes`);
      assert.ok(readFileSync(path.join(folder, "image_2.jpg")).equals(photo(d, 1)), `dog ${d} photo 2 is the registered bytes`);
    }
    assert.equal(m.format, "nosepaw-registry-export/1");
    assert.deepEqual(m.options, { since: null, minPhotos: 2, withVerifications: false, withRefused: false });
    assert.deepEqual(m.skipped, []);
    assert.deepEqual(m.totals, { pets: 3, photos: 6, enrolmentPhotos: 6, verificationPhotos: 0, refused: 0, skipped: 0 });
    assert.deepEqual(m.pets.map((p) => p.petDid).sort(), want.map((d) => did[d]).sort());
    const p0 = m.pets.find((p) => p.petDid === did[0])!;
    assert.equal(p0.folder, folderOf(did[0]));
    assert.equal(p0.trainingConsent, true);
    assert.equal(p0.modelVersion, "test-pattern-1");
    assert.equal(p0.status, "active");
    assert.ok(Math.abs(Date.parse(p0.registeredAt) - Date.now()) < 10 * 60_000, p0.registeredAt);
    assert.equal(p0.consentRecordedAt, p0.registeredAt, "consent given at registration");
    assert.deepEqual(
      p0.photos.map((p) => [p.key, p.file, p.source, p.bytes, p.modelVersion]),
      [
        [`nose-print-photo/${did[0]}/image_1.jpg`, "image_1.jpg", "enrolment", photo(0, 0).length, "test-pattern-1"],
        [`nose-print-photo/${did[0]}/image_2.jpg`, "image_2.jpg", "enrolment", photo(0, 1).length, "test-pattern-1"],
      ],
    );
    const p2 = m.pets.find((p) => p.petDid === did[2])!;
    assert.ok(Date.parse(p2.consentRecordedAt) >= Date.parse(p2.registeredAt), "consent granted after registration");
    assert.equal(m.pets.find((p) => p.petDid === did[4])!.registeredAt, "2025-06-01T12:00:00.000Z");
    assert.match(r.stdout, /exported 3 pet\(s\), 6 photo\(s\) \(6 enrolment, 0 verification\) .*; skipped 0/);

    // The training pipeline's own dataset reader sees one dog per folder.
    const listed = JSON.parse(
      execFileSync("/usr/bin/python3", [
        "-c",
        "import sys, json; sys.path.insert(0, sys.argv[1]); from common import list_dataset; print(json.dumps(list_dataset(sys.argv[2])))",
        path.join(ROOT, "models/train"),
        out,
      ]).toString(),
    ) as Array<[string, string]>;
    assert.equal(listed.length, 6);
    assert.deepEqual([...new Set(listed.map(([dog]) => dog))].sort(), foldersIn(out));
  });

  test("--since and --min-photos leave pets out; --with-verifications adds the SAME shot only", async () => {
    const recent = path.join(work, "recent");
    const m = exported(await runTool("registry-export.ts", [recent, "--since", "2026-01-01"], env), recent);
    assert.deepEqual(foldersIn(recent), [0, 2].map((d) => folderOf(did[d])).sort(), "dog 4 registered before --since");
    assert.equal(m.options.since, "2026-01-01");
    const future = path.join(work, "future");
    assert.deepEqual(exported(await runTool("registry-export.ts", [future, "--since", "2999-01-01"], env), future).pets, []);

    const three = path.join(work, "three");
    const m3 = exported(await runTool("registry-export.ts", [three, "--min-photos", "3"], env), three);
    assert.deepEqual(m3.pets, []);
    assert.deepEqual(foldersIn(three), []);
    assert.equal(m3.skipped.length, 3);
    assert.ok(
      m3.skipped.every((s) => s.key === undefined && /2 readable photo\(s\), fewer than --min-photos 3/.test(s.reason)),
      JSON.stringify(m3.skipped),
    );

    const withShots = path.join(work, "verifications");
    const mv = exported(await runTool("registry-export.ts", [withShots, "--min-photos", "3", "--with-verifications"], env), withShots);
    assert.deepEqual(foldersIn(withShots), [folderOf(did[0])], "only dog 0 has a third photo: its SAME verification");
    const sameFile = path.basename(sameShot);
    assert.deepEqual(filesIn(path.join(withShots, folderOf(did[0]))), ["image_1.jpg", "image_2.jpg", sameFile].sort());
    assert.ok(readFileSync(path.join(withShots, folderOf(did[0]), sameFile)).equals(photo(0, 2)));
    assert.ok(!existsSync(path.join(withShots, folderOf(did[0]), path.basename(otherShot))), "the non-SAME shot is not exported");
    const shot = mv.pets[0].photos.find((p) => p.source === "verification")!;
    assert.equal(shot.key, sameShot);
    assert.equal(shot.file, sameFile);
    assert.equal(shot.verdict, "SAME");
    assert.equal(shot.audit, "verify");
    assert.ok(shot.similarity! >= 0.85);
    assert.equal(mv.pets[0].photos.length, 3);
    assert.deepEqual(mv.totals, { pets: 1, photos: 3, enrolmentPhotos: 2, verificationPhotos: 1, refused: 0, skipped: 2 });
  });

  test("a missing or unreadable photo is skipped and listed; a re-export drops a pet whose consent was withdrawn", async () => {
    const objects = path.join(dataDir, "objects", "nose-print-photo");
    // Dog 2's second photo gone, dog 4's second photo replaced by a folder (read fails).
    unlinkSync(path.join(objects, did[2], "image_2.jpg"));
    const blocked = path.join(objects, did[4], "image_2.jpg");
    unlinkSync(blocked);
    mkdirSync(blocked);
    writeFileSync(path.join(blocked, "x"), "x");
    const out = path.join(work, "damaged");
    const r = await runTool("registry-export.ts", [out, "--min-photos", "1"], env);
    const m = exported(r, out);
    assert.deepEqual(foldersIn(out), [0, 2, 4].map((d) => folderOf(did[d])).sort());
    assert.deepEqual(filesIn(path.join(out, folderOf(did[2]))), ["image_1.jpg"]);
    assert.deepEqual(filesIn(path.join(out, folderOf(did[4]))), ["image_1.jpg"]);
    assert.deepEqual(
      m.skipped.map((s) => s.key).sort(),
      [`nose-print-photo/${did[2]}/image_2.jpg`, `nose-print-photo/${did[4]}/image_2.jpg`].sort(),
    );
    assert.ok(m.skipped.every((s) => s.reason.length > 0));
    assert.match(r.stderr, /skipped nose-print-photo\/.*image_2\.jpg/);
    assert.match(r.stdout, /skipped 2/);
    // At the default --min-photos 2 those pets are left out entirely.
    const strict = path.join(work, "damaged-2");
    const ms = exported(await runTool("registry-export.ts", [strict], env), strict);
    assert.deepEqual(foldersIn(strict), [folderOf(did[0])]);
    assert.equal(ms.skipped.filter((x) => x.key === undefined).length, 2, "two pets left out for --min-photos");

    // Consent withdrawn, then exported again into the same folder: dog 0's folder goes.
    const s = await startServer(env);
    const c = gatewayClient(s.address);
    try {
      await s.waitForLog((l) => l.msg === "database ready");
      const w = await c.call("SetTrainingConsent", { pet_did: did[0], training_consent: false, requested_by: "0xguardian0" });
      assert.equal(w.success, true, w.error_message);
      assert.equal(w.training_consent, false);
    } finally {
      c.close();
      await s.stop();
    }
    const again = exported(await runTool("registry-export.ts", [out, "--min-photos", "1"], env), out);
    assert.deepEqual(foldersIn(out), [2, 4].map((d) => folderOf(did[d])).sort());
    assert.ok(!again.pets.some((p) => p.petDid === did[0]));
    assert.deepEqual(
      readdirSync(work).filter((n) => /\.(partial|previous)-/.test(n)),
      [],
      "no staging folders left behind",
    );
  });

  test("configuration and output problems exit non-zero without writing", async () => {
    const out = path.join(work, "bad");
    const noKeys = await runTool("registry-export.ts", [out], { ...env, NCP_ENDPOINT: "http://127.0.0.1:9" });
    assert.equal(noKeys.code, 2, noKeys.stderr);
    assert.match(noKeys.stderr, /NCP_ACCESS_KEY/);
    const noRegistry = await runTool("registry-export.ts", [out], { ...env, DATA_DIR: path.join(work, "nowhere") });
    assert.equal(noRegistry.code, 2, noRegistry.stderr);
    assert.match(noRegistry.stderr, /no (object store|embedded registry)/);
    const usage = await runTool("registry-export.ts", [], env);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /usage: npm run registry:export/);
    // A non-empty folder that is not an earlier export is never overwritten.
    const foreign = path.join(work, "foreign");
    mkdirSync(foreign);
    writeFileSync(path.join(foreign, "notes.txt"), "mine");
    const refused = await runTool("registry-export.ts", [foreign], env);
    assert.equal(refused.code, 2, refused.stderr);
    assert.equal(readFileSync(path.join(foreign, "notes.txt"), "utf8"), "mine");
    assert.ok(!existsSync(out));
    assert.ok(statSync(foreign).isDirectory());
  });
});

const pgMissing = requireSystem("PostgreSQL with pgvector", postgresUnavailable(), INSTALL.postgres);

describe("training consent and the registry export on PostgreSQL and an S3-protocol server", { skip: pgMissing ?? false }, () => {
  let s3: TestS3;
  let pg: TestPostgres;
  let server: RunningServer;
  let client: GatewayClient;
  let env: Record<string, string>;
  const work = mkdtempSync(path.join(tmpdir(), "nosepaw-export-"));

  before(async () => {
    [s3, pg] = await Promise.all([startS3("nose-bucket"), startPostgres("ml_server")]);
    env = {
      MODEL_PATH,
      DATA_DIR: mkdtempSync(path.join(tmpdir(), "nosepaw-data-")),
      ...remoteRegistryEnv(s3, pg),
    };
    server = await startServer(env);
    client = gatewayClient(server.address);
    await server.waitForLog((l) => l.msg === "database ready" && l.kind === "postgres");
  });
  after(async () => {
    client?.close();
    await server?.stop();
    await Promise.allSettled([s3?.dispose(), pg?.dispose()]);
    rmSync(work, { recursive: true, force: true });
  });

  test("consent through the RPCs, audited; the export (server running) writes the stored bytes with the SAME shot", async () => {
    const photo = nosePhotos(3);
    const yes = await register(client, [photo(0, 0), photo(0, 1)], { training_consent: true });
    const no = await register(client, [photo(1, 0), photo(1, 1)]);
    const later = await register(client, [photo(2, 0), photo(2, 1)], { training_consent: false });
    const set = await client.call("SetTrainingConsent", { pet_did: later, training_consent: true, requested_by: "0xg" });
    assert.equal(set.success, true, set.error_message);
    assertError(await client.call("SetTrainingConsent", { pet_did: UNKNOWN_DID, training_consent: false }), "VECTOR_NOT_FOUND", false);
    const same = await client.call("VerifyPet", { pet_did: yes, photo: bytes(photo(0, 3)) });
    assert.equal(same.verdict, "SAME", same.error_message);
    const other = await client.call("VerifyPet", { pet_did: yes, photo: bytes(photo(2, 3)) });
    assert.equal(other.success, true, other.error_message);
    assert.notEqual(other.verdict, "SAME");

    const db = openPostgres(pg.config);
    try {
      assert.deepEqual(await Promise.all([yes, no, later].map((d) => consentOf(db, d))), [true, false, true]);
      const rows = await auditRows(db, later, "consent");
      assert.equal(rows.length, 1);
      assert.deepEqual([rows[0].detail.previous, rows[0].detail.trainingConsent, rows[0].requested_by], [false, true, "0xg"]);
      assert.equal((await auditRows(db, yes, "register"))[0].detail.trainingConsent, true);
    } finally {
      await db.close();
    }

    const out = path.join(work, "pg");
    const m = exported(await runTool("registry-export.ts", [out, "--with-verifications"], env), out);
    assert.deepEqual(foldersIn(out), [folderOf(yes), folderOf(later)].sort());
    assert.equal(m.source.database.startsWith("postgres "), true);
    assert.equal(m.source.objectStore.startsWith("s3 "), true);
    const yesDir = path.join(out, folderOf(yes));
    assert.deepEqual(filesIn(yesDir), ["image_1.jpg", "image_2.jpg", path.basename(same.stored_image_key)].sort());
    assert.ok(readFileSync(path.join(yesDir, "image_1.jpg")).equals(photo(0, 0)));
    assert.ok(readFileSync(path.join(yesDir, "image_2.jpg")).equals(photo(0, 1)));
    assert.ok(readFileSync(path.join(yesDir, path.basename(same.stored_image_key))).equals(photo(0, 3)));
    assert.deepEqual(filesIn(path.join(out, folderOf(later))), ["image_1.jpg", "image_2.jpg"]);
    const shots = m.pets.flatMap((p) => p.photos).filter((p) => p.source === "verification");
    assert.deepEqual(
      shots.map((s) => s.key),
      [same.stored_image_key],
    );
  });

  test("an unreachable database or object store exits 1", async () => {
    const closedPort = String(await freePort());
    const noDb = await runTool("registry-export.ts", [path.join(work, "x")], { ...env, DB_PORT: closedPort });
    assert.equal(noDb.code, 1, noDb.stderr);
    assert.match(noDb.stderr, /registry database unreachable/);
    const noS3 = await runTool("registry-export.ts", [path.join(work, "y")], { ...env, NCP_ENDPOINT: `http://127.0.0.1:${closedPort}` });
    assert.equal(noS3.code, 1, noS3.stderr);
    assert.match(noS3.stderr, /object store unreachable/);
    assert.ok(!existsSync(path.join(work, "x")) && !existsSync(path.join(work, "y")));
  });
});
