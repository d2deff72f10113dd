import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import type { LearnState } from "../server/learn/state.js";
import { checkpointKey, parsePointer, POINTER_KEY, PointerError, releaseKeys, type Pointer } from "../server/learn/model-release.js";
import { publishRelease } from "../server/learn/release-publish.js";

const modelKey = (v: string) => releaseKeys(v).model_key;
const cardKey = (v: string) => releaseKeys(v).card_key;
/** The pointer on disk, parsed strictly as replicas read it. */
function pointerAt(file: string): Pointer {
  const p = parsePointer(readFileSync(file));
  if (p instanceof PointerError) throw p;
  return p;
}
import { createFolderStore } from "../server/storage/folder-store.js";
import { gatewayClient } from "./support/grpc-client.js";
import { INSTALL, requireSystem } from "./support/require-system.js";
import { ROOT, startServer } from "./support/server.js";
import { runTool } from "./support/run-command.js";

/**
 * `npm run registry:learn` end to end on a small registry of renders, on the
 * CPU in a minute or two per run: the gate refuses a candidate that is worse
 * than the running model and promotes one that is better, the promotion
 * writes the objects and then the pointer, and --rollback points back.
 *
 * The renders are easy for the shipped model, so a fine-tune cannot beat it
 * by a margin 22 held-out dogs certify. The two directions come from a copy
 * of the shipped checkpoint damaged on purpose (test/support/damage_model.py,
 * noise of 5x each weight tensor's spread):
 *   - refused: the shipped model is running; the candidate is fine-tuned from
 *     the damaged weights, and is worse;
 *   - promoted: the damaged model is the running release (pointer in the
 *     store); the candidate is fine-tuned from the shipped weights (--init),
 *     and is better.
 */

const hasTorch = spawnSync("/usr/bin/python3", ["-c", "import torch, onnx, cv2, scipy"], { encoding: "utf8" }).status === 0;
const skip = requireSystem(
  "torch, onnx, cv2 and scipy under /usr/bin/python3",
  !hasTorch && "import torch, onnx, cv2, scipy failed",
  INSTALL.python,
);

const DOGS = 64; // 35% held out: 22 dogs x 4 photos, 3,696 impostor pairs (2,995 certify FAR 1e-3 with none above)
const bytes = (b: Buffer) => ({ image_data: b, image_format: "jpeg" });

/** The learning run as an operator starts it; its stages take minutes on renders. */
const learn = (args: string[], env: Record<string, string>) => runTool("registry-learn.ts", args, env, 600_000);

/** The report's gate checks, for the test log. */
const gateLines = (report: string) =>
  report
    .split("\n")
    .filter((l) => /^- (passed|FAILED): /.test(l))
    .join("\n");

const SMALL = ["--minutes", "1", "--holdout", "0.35", "--synthetic-ids", "8", "--bootstrap", "300"];

describe("registry:learn: export, fine-tune, evaluate, gate, promote, roll back", { skip }, () => {
  const work = mkdtempSync(path.join(tmpdir(), "nosepaw-learn-"));
  const dataDir = path.join(work, "data");
  const damaged = path.join(work, "damaged");
  const shippedVersion = JSON.parse(readFileSync(path.join(ROOT, "models/nose-embedder.json"), "utf8")).version as string;

  before(async () => {
    const photosDir = path.join(work, "photos");
    execFileSync("/usr/bin/python3", [path.join(ROOT, "test/support/nose_photos.py"), photosDir, String(DOGS)], { stdio: "pipe" });
    execFileSync(
      "/usr/bin/python3",
      [path.join(ROOT, "test/support/damage_model.py"), "models/nose-embedder.pt", damaged, "5", "damaged-1"],
      {
        cwd: ROOT,
        stdio: "pipe",
      },
    );
    const server = await startServer({ DATA_DIR: dataDir });
    try {
      const client = gatewayClient(server.address);
      for (let d = 0; d < DOGS; d++) {
        const photos = [0, 1, 2, 3].map((k) => bytes(readFileSync(path.join(photosDir, `dog${d}_${k}.jpg`))));
        const res = await client.call("RegisterPet", { photos, request_id: `learn-${d}`, training_consent: d < DOGS - 1 });
        assert.equal(res.success, true, `dog ${d}: ${res.error_message}`);
      }
      client.close();
    } finally {
      await server.stop(); // the embedded registry is single-process: the loop exports with the server stopped
    }
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  test("a candidate worse than the running model is refused; nothing is promoted", async () => {
    const releases = path.join(work, "releases-refused");
    const w = path.join(work, "learn-refused");
    const t0 = Date.now();
    const r = await learn(["--work", w, "--promote-to", releases, "--init", `${damaged}.pt`, "--version", "refused-1", ...SMALL], {
      DATA_DIR: dataDir,
    });
    assert.equal(r.code, 0, r.stderr.slice(-4000));
    for (const f of ["model.onnx", "model.pt", "card.json", "eval.json", "report.md", "roc.svg", "calibration.svg", "registration.svg"]) {
      assert.ok(existsSync(path.join(w, "candidate", f)), `candidate/${f}`);
    }
    const report = readFileSync(path.join(w, "candidate", "report.md"), "utf8");
    assert.match(report, /## Gate: REFUSED/);
    assert.match(report, /FAILED: beats the running model at FAR 1e-3\. TAR@FAR1e-3 [\d.]+% \(candidate refused-1\) vs [\d.]+% \(running /);
    assert.match(report, /Not promoted: the gate refused it/);
    const ev = JSON.parse(readFileSync(path.join(w, "candidate", "eval.json"), "utf8"));
    assert.equal(ev.old.version, shippedVersion);
    assert.equal(ev.heldout.dogs, 22, "35% of the 63 consenting dogs");
    assert.ok(ev.bootstrap.lower_95 <= 0, `lower bound ${ev.bootstrap.lower_95}`);
    assert.ok(!existsSync(path.join(releases, POINTER_KEY)), "no pointer without the gate");
    const state = JSON.parse(readFileSync(path.join(w, "state.json"), "utf8")) as LearnState;
    assert.deepEqual(Object.keys(state.stages), ["running", "export", "split", "renders", "train", "evaluate", "report", "promote"]);
    assert.equal(state.stages.export!.result.pets, DOGS - 1, "only the consenting pets");
    assert.match(r.stderr, /\[learn\] stage 5\/8 train/);
    assert.match(r.stderr, /training on CPU|training on CUDA/);
    // A run stopped after the evaluation continues there: nothing is exported or trained again.
    delete state.stages.report;
    delete state.stages.promote;
    writeFileSync(path.join(w, "state.json"), JSON.stringify(state));
    const resumed = await learn(["--work", w, "--promote-to", releases, ...SMALL], { DATA_DIR: dataDir });
    assert.equal(resumed.code, 0, resumed.stderr.slice(-4000));
    assert.match(resumed.stderr, /resuming refused-1 in .* after evaluate/);
    assert.doesNotMatch(resumed.stderr, /stage \d\/8 (export|train)/);
    assert.match(resumed.stderr, /stage 7\/8 report/);
    assert.match(readFileSync(path.join(w, "candidate", "report.md"), "utf8"), /## Gate: REFUSED/);
    // A finished work folder is not run again by accident.
    const again = await learn(["--work", w, "--promote-to", releases, ...SMALL], { DATA_DIR: dataDir });
    assert.equal(again.code, 1);
    assert.match(again.stderr, /holds a finished run \(refused-1\)/);
    process.stderr.write(
      `refused run, ${((Date.now() - t0) / 1000).toFixed(0)} s with the resumption: ${r.stdout.trim()}\n${gateLines(report)}\n`,
    );
  });

  test("a candidate better than the running release is promoted: objects, then the pointer; --rollback points back", async () => {
    const releases = path.join(work, "releases");
    const store = createFolderStore({ root: releases });
    // The running release: the damaged model, promoted earlier.
    await publishRelease(store, {
      version: "damaged-1",
      model: readFileSync(`${damaged}.onnx`),
      card: readFileSync(`${damaged}.json`),
      checkpoint: readFileSync(`${damaged}.pt`),
    });
    const w = path.join(work, "learn-promoted");
    const r = await learn(["--work", w, "--promote-to", releases, "--init", "models/nose-embedder.pt", "--version", "better-1", ...SMALL], {
      DATA_DIR: dataDir,
    });
    assert.equal(r.code, 0, r.stderr.slice(-4000));
    const report = readFileSync(path.join(w, "candidate", "report.md"), "utf8");
    process.stderr.write(`promoted run: ${r.stdout.trim()}\n${gateLines(report)}\n`);
    assert.match(report, /## Gate: PROMOTED/, report.slice(0, 3000));
    assert.match(report, /passed: beats the running model at FAR 1e-3/);
    assert.match(
      report,
      /passed: the card's false-accept promises hold\. similarity 0\.70: .* similarity 0\.85: \d+ of 3,696 impostor pairs/,
    );
    const ev = JSON.parse(readFileSync(path.join(w, "candidate", "eval.json"), "utf8"));
    assert.equal(ev.old.version, "damaged-1", "the running model is the release the pointer names");
    assert.ok(ev.bootstrap.lower_95 > 0);

    const pointer = pointerAt(path.join(releases, POINTER_KEY));
    assert.equal(pointer.version, "better-1");
    assert.equal(pointer.model_key, "models/nose-embedder/better-1/model.onnx");
    assert.equal(pointer.card_key, "models/nose-embedder/better-1/card.json");
    assert.deepEqual(pointer.previous, { version: "damaged-1", model_key: modelKey("damaged-1"), card_key: cardKey("damaged-1") });
    assert.ok(Date.now() - Date.parse(pointer.promoted_at) < 600_000);
    assert.deepEqual(readFileSync(path.join(releases, pointer.model_key)), readFileSync(path.join(w, "candidate", "model.onnx")));
    assert.ok(existsSync(path.join(releases, checkpointKey("better-1"))));
    const card = JSON.parse(readFileSync(path.join(releases, pointer.card_key), "utf8"));
    assert.equal(card.version, "better-1");
    assert.equal(card.evaluation.compared_with.version, "damaged-1");
    assert.ok(card.registration.pair_threshold >= 0.3 && card.registration.pair_threshold <= 0.95);
    assert.ok(card.calibration.fitted_on.confidence["0.85"].certified);

    // A running replica watching the releases takes the promoted model up, and the rollback after it.
    const replica = await startServer({
      DATA_DIR: path.join(work, "replica"),
      MODEL_RELEASES: releases,
      MODEL_RELEASE_POLL_SECONDS: "0.3",
      MODEL_RELEASE_CACHE_DIR: path.join(work, "replica-cache"),
    });
    const health = gatewayClient(replica.address);
    const serving = async (version: string) => {
      const deadline = Date.now() + 60_000;
      let last: any;
      while (Date.now() < deadline) {
        last = await health.call("HealthCheck", { service: "" });
        if (last.status === "SERVING" && last.message.includes(`version ${version}`)) return;
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.fail(`the replica is not SERVING ${version}: ${JSON.stringify(last)}`);
    };
    try {
      await serving("better-1");
      const back = await learn(["--rollback", "--promote-to", releases], { DATA_DIR: dataDir });
      assert.equal(back.code, 0, back.stderr);
      assert.match(back.stdout, /better-1 -> damaged-1/);
      await serving("damaged-1");
    } finally {
      health.close();
      await replica.stop();
    }
    const rolled = pointerAt(path.join(releases, POINTER_KEY));
    assert.equal(rolled.version, "damaged-1");
    assert.equal(rolled.model_key, modelKey("damaged-1"));
    assert.equal(rolled.rolled_back_from?.version, "better-1");
    assert.equal(rolled.previous, null);
    const none = await learn(["--rollback", "--promote-to", releases], { DATA_DIR: dataDir });
    assert.equal(none.code, 1);
    assert.match(none.stderr, /nothing to roll back to/);
  });
});
