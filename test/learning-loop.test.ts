import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { openPglite } from "../server/db/database.js";
import type { Manifest } from "../server/tools/registry-export.js";
import { gatewayClient } from "./support/grpc-client.js";
import { ROOT, startServer, type RunningServer } from "./support/server.js";
import { runCommand } from "./support/run-command.js";

/**
 * The operator's loop on generated noses, with the bundled model and its
 * checkpoint: register with and without consent, export the consenting pets,
 * calibrate a card on them, fine-tune a few steps into a new model version,
 * restart on it, and check that every enrolment moved to the new version,
 * that a registered dog still verifies, and that the audit log tells it.
 */

const DOGS = 10;
const bytes = (b: Buffer) => ({ image_data: b, image_format: "jpeg" });

describe("the registry learns from its own dogs", () => {
  const work = mkdtempSync(path.join(tmpdir(), "nosepaw-loop-"));
  const dataDir = path.join(work, "data");
  const photosDir = path.join(work, "photos");
  execFileSync("/usr/bin/python3", [path.join(ROOT, "test/support/nose_photos.py"), photosDir, String(DOGS)], { stdio: "pipe" });
  const photo = (dog: number, shot: number) => readFileSync(path.join(photosDir, `dog${dog}_${shot}.jpg`));
  const shippedVersion = JSON.parse(readFileSync(path.join(ROOT, "models/nose-embedder.json"), "utf8")).version as string;
  let server: RunningServer | undefined;
  after(async () => {
    await server?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  test("consent -> export -> calibrate -> fine-tune -> restart: enrolments migrate, verification holds, the audit log records it", async () => {
    // 1. Registration on the bundled model; dogs 8 and 9 give no consent, dog 7 withdraws it later.
    server = await startServer({ DATA_DIR: dataDir });
    let client = gatewayClient(server.address);
    await server.waitForLog((l) => l.msg === "database ready");
    // The version the enrolments are stored under: the bundled model's, with "+int8" when it runs its int8 variant (the default).
    const runningVersion = String((await server.waitForLog((l) => l.msg === "model loaded")).version);
    assert.ok(runningVersion.startsWith(shippedVersion), runningVersion);
    const did: string[] = [];
    for (let d = 0; d < DOGS; d++) {
      const consent = d < 8 ? { training_consent: true } : {};
      const res = await client.call("RegisterPet", {
        photos: [bytes(photo(d, 0)), bytes(photo(d, 1))],
        request_id: `loop-${d}`,
        ...consent,
      });
      assert.equal(res.success, true, `dog ${d}: ${res.error_message}`);
      did.push(res.pet_did);
    }
    const withdrawn = await client.call("SetTrainingConsent", { pet_did: did[7], training_consent: false, requested_by: "0xowner7" });
    assert.equal(withdrawn.success, true, withdrawn.error_message);
    client.close();
    await server.stop(); // the embedded registry is single-process: export with the server stopped
    server = undefined;

    // 2. Export: only the consenting pets, as one folder per pet.
    const out = path.join(work, "export");
    const exp = await runCommand(process.execPath, ["--import", "tsx", "server/tools/registry-export.ts", out], { DATA_DIR: dataDir });
    assert.equal(exp.code, 0, exp.stderr);
    const manifest = JSON.parse(readFileSync(path.join(out, "manifest.json"), "utf8")) as Manifest;
    const exportedDids = manifest.pets.map((p) => p.petDid).sort();
    assert.deepEqual(exportedDids, did.slice(0, 7).sort(), "dogs 0-6 consented; 7 withdrew; 8 and 9 never consented");
    const folders = readdirSync(out, { withFileTypes: true }).filter((e) => e.isDirectory());
    assert.equal(folders.length, 7);
    for (const f of folders) assert.equal(readdirSync(path.join(out, f.name)).length, 2);

    // 3. Calibrate the running model on the export: same version, a full calibration block.
    const calCard = path.join(work, "calibrated.json");
    const cal = await runCommand("/usr/bin/python3", ["models/train/calibrate.py", out, "--card", calCard]);
    assert.equal(cal.code, 0, cal.stderr);
    const calibrated = JSON.parse(readFileSync(calCard, "utf8"));
    assert.equal(calibrated.version, shippedVersion, "calibration keeps the vectors, so it keeps the version");
    assert.ok(calibrated.calibration.duplicate_similarity >= 0.85 && calibrated.calibration.duplicate_similarity <= 1);
    assert.equal(calibrated.calibration.fitted_on.dogs, 7);

    // 4. Fine-tune a few steps from the shipped checkpoint into a new version, compared with the shipped model.
    const ft = path.join(work, "ft");
    const newVersion = "loop-test-2";
    const train = await runCommand("/usr/bin/python3", [
      "models/train/train.py",
      "--data",
      out,
      "--init",
      "models/nose-embedder.pt",
      "--steps",
      "2",
      "--P",
      "4",
      "--K",
      "2",
      "--res",
      "224",
      "--full-res-frac",
      "1",
      "--val-frac",
      "0.3",
      "--version",
      newVersion,
      "--work",
      ft,
      "--onnx",
      path.join(ft, "model.onnx"),
      "--card",
      path.join(ft, "model.json"),
    ]);
    assert.equal(train.code, 0, train.stderr.slice(-3000));
    const card = JSON.parse(readFileSync(path.join(ft, "model.json"), "utf8"));
    assert.equal(card.version, newVersion);
    assert.ok(card.evaluation.compared_with, "the card compares the new model with the shipped one on the same held-out dogs");

    // 5. Roll out: the server restarts on the new model and card; the sweep moves every enrolment.
    server = await startServer({
      DATA_DIR: dataDir,
      MODEL_PATH: path.join(ft, "model.onnx"),
      MODEL_CARD_PATH: path.join(ft, "model.json"),
    });
    const swept = await server.waitForLog((l) => l.msg === "embeddings re-embedded", 120_000);
    assert.equal(swept.modelVersion, newVersion);
    assert.equal(swept.count, 2 * DOGS, "every enrolled photo of every pet, consenting or not");
    client = gatewayClient(server.address);
    await server.waitForLog((l) => l.msg === "database ready");
    const verified = await client.call("VerifyPet", { pet_did: did[0], photo: bytes(photo(0, 2)) });
    assert.equal(verified.success, true, verified.error_message);
    assert.equal(verified.verdict, "SAME", `a later shot of dog 0 scores ${verified.similarity}`);
    assert.equal(verified.model_version, newVersion);
    client.close();
    await server.stop();
    server = undefined;

    // 6. The audit log: consent at registration and its withdrawal, and each pet's move to the new model.
    const db = await openPglite({ dataDir: path.join(dataDir, "pg") });
    try {
      const { rows: stale } = await db.query<{ n: number }>("SELECT count(*)::int AS n FROM pet_embeddings WHERE model_version <> $1", [
        newVersion,
      ]);
      assert.equal(stale[0].n, 0);
      const reg = await db.query<{ pet_did: string; detail: { trainingConsent: boolean } }>(
        "SELECT pet_did, detail FROM audit_log WHERE kind = 'register' ORDER BY id",
      );
      assert.deepEqual(
        reg.rows.map((r) => r.detail.trainingConsent),
        did.map((_, d) => d < 8),
      );
      const consent = await db.query<{ pet_did: string; detail: Record<string, unknown> }>(
        "SELECT pet_did, detail FROM audit_log WHERE kind = 'consent'",
      );
      assert.deepEqual(
        consent.rows.map((r) => r.pet_did),
        [did[7]],
      );
      const moved = await db.query<{ pet_did: string; model_version: string; detail: { images: number; fromModelVersions: string[] } }>(
        "SELECT pet_did, model_version, detail FROM audit_log WHERE kind = 'reembed' ORDER BY pet_did",
      );
      assert.deepEqual(
        moved.rows.map((r) => r.pet_did),
        [...did].sort(),
      );
      for (const r of moved.rows) {
        assert.equal(r.model_version, newVersion);
        assert.deepEqual(r.detail.fromModelVersions, [runningVersion]);
        assert.equal(r.detail.images, 2);
      }
    } finally {
      await db.close();
    }
  });
});
