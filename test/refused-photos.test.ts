import assert from "node:assert/strict";
import { cpSync, existsSync, type Dirent, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import type { Manifest } from "../server/tools/registry-export.js";
import { gatewayClient, type GatewayClient } from "./support/grpc-client.js";
import { nosePhotos } from "./support/nose-photos.js";
import { makeTestModel, ROOT, startServer, type RunningServer } from "./support/server.js";
import { runTool } from "./support/run-command.js";

/**
 * A refused registration's photos are kept, with the owner's training
 * consent on that request, as labelled material under
 * refused-registrations/{day}/{id}/ (never under a pet DID); without consent
 * nothing is kept; `registry:export --with-refused` adds them as extra dogs
 * flagged refused; past REFUSED_PHOTO_RETENTION_DAYS they are deleted.
 */

const MODEL_PATH = makeTestModel(path.join(mkdtempSync(path.join(tmpdir(), "nosepaw-model-")), "pattern.onnx"), {
  kind: "pattern",
  card: true,
});
const bytes = (b: Buffer) => ({ image_data: b, image_format: "jpeg" });
const today = () => new Date().toISOString().slice(0, 10);
const daysAgo = (n: number) => new Date(Date.now() - n * 86_400_000).toISOString().slice(0, 10);

describe("photos of refused registrations, kept with consent", () => {
  const work = mkdtempSync(path.join(tmpdir(), "nosepaw-refused-"));
  const dataDir = path.join(work, "data");
  const refusedDir = path.join(dataDir, "objects", "refused-registrations");
  const env = { MODEL_PATH, DATA_DIR: dataDir, REFUSED_PHOTO_RETENTION_DAYS: "30" };
  const photo = nosePhotos(3);
  let server: RunningServer | undefined;
  let client: GatewayClient | undefined;
  let duplicateFolder = "";
  after(async () => {
    client?.close();
    await server?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  /** Files under a folder, recursively (the folder store leaves a deleted object's empty folders behind). */
  const filesUnder = (dir: string): string[] =>
    (existsSync(dir) ? (readdirSync(dir, { recursive: true, withFileTypes: true }) as Dirent[]) : [])
      .filter((e) => e.isFile())
      .map((e) => path.join(e.parentPath, e.name));
  /** `{day}/{id}` of every kept refusal that still holds a file. */
  const kept = () => [...new Set(filesUnder(refusedDir).map((f) => path.relative(refusedDir, path.dirname(f))))].sort();

  test("an inconsistent pair or a duplicate with consent is refused and its photos kept; without consent nothing is", async () => {
    server = await startServer(env);
    client = gatewayClient(server.address);
    await server.waitForLog((l) => l.msg === "database ready");

    // Two different dogs as one: refused as inconsistent, the owner consented.
    const refused = await client.call("RegisterPet", {
      photos: [bytes(photo(0, 0)), bytes(photo(1, 0))],
      training_consent: true,
      request_id: "refused-1",
    });
    assert.equal(refused.success, false);
    assert.equal(refused.error_code, "INVALID_REQUEST", refused.error_message);
    assert.match(refused.error_message, /^ML_4006: photos 1 and 2 do not show the same nose/);
    const folder = path.join(refusedDir, today(), "refused-1");
    assert.deepEqual(readdirSync(folder).sort(), ["image_1.jpg", "image_2.jpg", "meta.json"]);
    assert.ok(readFileSync(path.join(folder, "image_1.jpg")).equals(photo(0, 0)));
    assert.ok(readFileSync(path.join(folder, "image_2.jpg")).equals(photo(1, 0)));
    const meta = JSON.parse(readFileSync(path.join(folder, "meta.json"), "utf8"));
    assert.equal(meta.refusal, "inconsistent_photos");
    assert.equal(meta.errorCode, "ML_4006");
    assert.ok(Math.abs(meta.similarity - refused.min_pair_similarity) < 1e-6, `${meta.similarity} vs ${refused.min_pair_similarity}`);
    assert.deepEqual(meta.pair, [1, 2]);
    assert.equal(meta.modelVersion, "test-pattern-1");
    assert.equal(meta.trainingConsent, true);
    assert.equal(meta.requestId, "refused-1");
    assert.ok(Math.abs(Date.parse(meta.time) - Date.now()) < 60_000);

    // Without consent (absent or false): refused the same, nothing kept.
    for (const extra of [{}, { training_consent: false }]) {
      const r = await client.call("RegisterPet", { photos: [bytes(photo(0, 1)), bytes(photo(2, 1))], request_id: "refused-2", ...extra });
      assert.equal(r.error_code, "INVALID_REQUEST", r.error_message);
    }
    assert.deepEqual(kept(), [`${today()}/refused-1`]);

    // A duplicate of a registered dog, with consent and no request id: kept under a UUID.
    const first = await client.call("RegisterPet", { photos: [bytes(photo(2, 0)), bytes(photo(2, 1))], training_consent: true });
    assert.equal(first.success, true, first.error_message);
    const dup = await client.call("RegisterPet", { photos: [bytes(photo(2, 2)), bytes(photo(2, 3))], training_consent: true });
    assert.equal(dup.success, false);
    assert.equal(dup.duplicate_pet_did, first.pet_did, dup.error_message);
    // The registered dog's own photos sent again (the same template): refused, nothing new to keep.
    const again = await client.call("RegisterPet", { photos: [bytes(photo(2, 0)), bytes(photo(2, 1))], training_consent: true });
    assert.equal(again.duplicate_pet_did, first.pet_did, again.error_message);
    const all = kept();
    assert.equal(all.length, 2, JSON.stringify(all));
    duplicateFolder = all.find((k) => k !== `${today()}/refused-1`)!;
    assert.match(duplicateFolder, /^\d{4}-\d{2}-\d{2}\/[0-9a-f-]{36}$/);
    const dupMeta = JSON.parse(readFileSync(path.join(refusedDir, duplicateFolder, "meta.json"), "utf8"));
    assert.equal(dupMeta.refusal, "duplicate_pet");
    assert.equal(dupMeta.requestId, undefined);
    // Nothing of a refusal lies under a pet DID: the photo area holds the registered dog only.
    assert.deepEqual(readdirSync(path.join(dataDir, "objects", "nose-print-photo")), [first.pet_did]);
  });

  test("--with-refused exports them as extra dogs flagged refused, within the retention; the sweep deletes older ones", async () => {
    await server!.stop();
    server = undefined;
    client!.close();
    client = undefined;
    // A refusal from before the retention (30 days here), as the sweep would find it.
    const old = path.join(refusedDir, daysAgo(31), "old-1");
    cpSync(path.join(refusedDir, today(), "refused-1"), old, { recursive: true });

    const plain = path.join(work, "plain");
    const r0 = await runTool("registry-export.ts", [plain], env);
    assert.equal(r0.code, 0, r0.stderr);
    const m0 = JSON.parse(readFileSync(path.join(plain, "manifest.json"), "utf8")) as Manifest;
    assert.deepEqual(m0.refused, []);
    assert.equal(m0.pets.length, 1);

    const out = path.join(work, "with-refused");
    const r = await runTool("registry-export.ts", [out, "--with-refused"], env);
    assert.equal(r.code, 0, r.stderr);
    const m = JSON.parse(readFileSync(path.join(out, "manifest.json"), "utf8")) as Manifest;
    assert.equal(m.options.withRefused, true);
    assert.equal(m.totals.refused, 2);
    assert.equal(m.pets.length, 1, "the registered, consenting dog");
    const refusedEntry = m.refused.find((e) => e.key === `refused-registrations/${today()}/refused-1/`)!;
    assert.equal(refusedEntry.refused, true);
    assert.equal(refusedEntry.folder, `refused_${today()}_refused-1`);
    assert.equal(refusedEntry.refusal, "inconsistent_photos");
    assert.equal(refusedEntry.trainingConsent, true);
    assert.deepEqual(
      refusedEntry.photos.map((p) => p.file),
      ["image_1.jpg", "image_2.jpg"],
    );
    assert.ok(readFileSync(path.join(out, refusedEntry.folder, "image_2.jpg")).equals(photo(1, 0)));
    assert.deepEqual(m.refused.map((e) => e.refusal).sort(), ["duplicate_pet", "inconsistent_photos"]);
    assert.ok(!m.refused.some((e) => e.key.includes("old-1")), "past the retention: not exported");
    assert.match(r.stdout, /2 refused registration\(s\)/);
    assert.deepEqual(
      readdirSync(out, { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => e.name)
        .sort(),
      [m.pets[0].folder, ...m.refused.map((e) => e.folder)].sort(),
      "one folder per dog, as training reads them",
    );

    // The server's sweep runs at start: the old refusal is deleted for good, today's stay.
    server = await startServer(env);
    const purged = await server.waitForLog((l) => l.msg === "refused registration photos purged");
    assert.equal(purged.objects, 3);
    assert.equal(purged.folders, 1);
    assert.deepEqual(filesUnder(old), [], "the old refusal's files are gone");
    assert.deepEqual(kept().sort(), [`${today()}/refused-1`, duplicateFolder].sort());
  });
});
