/**
 * The training pipeline runs end to end in its tiny configuration: render a few synthetic
 * identities, train a few steps, export ONNX, evaluate held-out identities, write a card.
 * Everything is asserted on the JSON the pipeline writes (train-meta.json, metrics.json, the card),
 * never on its log text.
 * Needs Debian's python3-torch (scripts/install-train-deps.sh); skipped without it, failed without it under CI.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as ort from "onnxruntime-node";
import { INSTALL, requireSystem } from "./support/require-system.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const PY = "/usr/bin/python3";
const hasTorch = spawnSync(PY, ["-c", "import torch, onnx, cv2"], { encoding: "utf8" }).status === 0;

// What train.py --tiny makes: 12 training identities x 4 captures, 8 held-out identities x 3 captures,
// 6 steps of P6 x K2 batches.
const TRAIN_IDS = 12,
  TRAIN_SHOTS = 4;
const HELD_IDS = 8,
  HELD_SHOTS = 3;
const STEPS = 6,
  BATCH = 6 * 2;
const pairs = (n: number) => (n * (n - 1)) / 2;
const HELD_IMAGES = HELD_IDS * HELD_SHOTS; // 24
const GENUINE = HELD_IDS * pairs(HELD_SHOTS); // 24
const IMPOSTOR = pairs(HELD_IMAGES) - GENUINE; // 252
const DEFAULT_PARITY_BOUND = 1e-4;

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

// Asynchronous so that the two runs after training share the machine's cores.
function python(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const p = spawn(PY, args, { cwd: root, timeout: 240_000, env: { ...process.env, OMP_NUM_THREADS: "1" } });
    let stdout = "",
      stderr = "";
    p.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    p.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    p.on("error", reject);
    p.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

function succeeded(r: Run, what: string): void {
  assert.equal(r.status, 0, `${what} failed:\n${r.stdout}\n${r.stderr}`);
}

const readJson = (path: string) => JSON.parse(readFileSync(path, "utf8"));

test(
  "tiny run renders, trains, exports a loadable ONNX and evaluates it",
  {
    skip: requireSystem("torch, onnx and cv2 under /usr/bin/python3", !hasTorch && "import torch, onnx, cv2 failed", INSTALL.python),
    timeout: 300_000,
  },
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "nosepaw-model-"));
    try {
      const onnxPath = join(dir, "tiny.onnx");
      const cardPath = join(dir, "tiny.json");
      succeeded(
        await python(["models/train/train.py", "--tiny", "--threads", "1", "--work", dir, "--onnx", onnxPath, "--card", cardPath]),
        "train.py --tiny",
      );

      // The same checkpoint exported again under a bound no float32 export meets.
      const failDir = join(dir, "impossible");
      const failOnnx = join(failDir, "never.onnx");
      const [evalRun, failRun] = await Promise.all([
        python(["models/train/evaluate.py", `synth:${join(dir, "synth")}`, "--model", onnxPath, "--out", join(dir, "eval")]),
        python([
          "models/train/train.py",
          "--init",
          join(dir, "model.pt"),
          "--steps",
          "0",
          "--no-eval",
          "--threads",
          "1",
          "--max-parity-diff",
          "1e-12",
          "--work",
          failDir,
          "--onnx",
          failOnnx,
          "--card",
          join(failDir, "never.json"),
        ]),
      ]);
      succeeded(evalRun, "evaluate.py");
      const meta = readJson(join(dir, "train-meta.json"));
      const metrics = readJson(join(dir, "eval", "metrics.json"));
      const card = readJson(cardPath);

      await t.test("the ONNX export matches PyTorch within the default --max-parity-diff", () => {
        const diff = meta.onnx_vs_pytorch_max_abs_diff;
        assert.equal(typeof diff, "number");
        assert.ok(diff >= 0 && diff < DEFAULT_PARITY_BOUND, `max abs diff ${diff}`);
        assert.equal(meta.max_parity_diff, DEFAULT_PARITY_BOUND);
        assert.equal(meta.parity_ok, true);
        assert.equal(card.export.onnx_vs_pytorch_max_abs_diff, diff);
        assert.ok(!existsSync(`${onnxPath}.unchecked`), "a checked export is moved into place");
      });

      await t.test("training and evaluation count exactly the tiny run's identities, images and pairs", () => {
        assert.equal(meta.training.identities, TRAIN_IDS);
        assert.equal(meta.training.images, TRAIN_IDS * TRAIN_SHOTS);
        assert.equal(meta.training.steps, STEPS);
        assert.equal(meta.training.images_seen, STEPS * BATCH);
        assert.equal(metrics.identities, HELD_IDS);
        assert.equal(metrics.images, HELD_IMAGES);
        assert.equal(metrics.genuine_pairs, GENUINE);
        assert.equal(metrics.impostor_pairs, IMPOSTOR);
        // the card is written from train.py's own evaluation of the same split
        assert.equal(card.evaluation.identities, HELD_IDS);
        assert.equal(card.evaluation.images, HELD_IMAGES);
        assert.deepEqual(card.evaluation.pairs, { genuine: GENUINE, impostor: IMPOSTOR });
        // re-capture proxy: each dog's first capture against one later photo of every dog
        assert.deepEqual(card.evaluation.recapture.pairs, { genuine: HELD_IDS, impostor: HELD_IDS * (HELD_IDS - 1) });
      });

      await t.test("metrics are rates in [0, 1] and TAR does not rise as the FAR target tightens", () => {
        for (const k of ["auc", "eer", "rank1", "tar_at_far_1e-2", "tar_at_far_1e-3", "tar_at_far_1e-4"]) {
          assert.ok(Number.isFinite(metrics[k]) && metrics[k] >= 0 && metrics[k] <= 1, `${k} = ${metrics[k]}`);
        }
        assert.ok(metrics["tar_at_far_1e-2"] >= metrics["tar_at_far_1e-3"], JSON.stringify(metrics));
        assert.ok(metrics["tar_at_far_1e-3"] >= metrics["tar_at_far_1e-4"], JSON.stringify(metrics));
        // the CLI and the card measure the same model on the same split (the card rounds to 5 places)
        assert.ok(Math.abs(card.evaluation.auc - metrics.auc) <= 5e-6, `card ${card.evaluation.auc} vs ${metrics.auc}`);
        assert.deepEqual(card.output.shape, [null, 512]);
        assert.equal(card.training.data, "synthetic only");
        assert.equal(card.calibration.cosine.length, card.calibration.similarity.length);
      });

      await t.test("the ONNX loads in onnxruntime-node with a dynamic batch of 512-d embeddings", async () => {
        const session = await ort.InferenceSession.create(onnxPath);
        assert.deepEqual(session.inputNames, ["input"]);
        assert.deepEqual(session.outputNames, ["embedding"]);
        for (const n of [1, 2]) {
          const x = new ort.Tensor("float32", new Float32Array(n * 3 * 224 * 224).fill(0.5), [n, 3, 224, 224]);
          const y = (await session.run({ input: x })).embedding;
          assert.deepEqual(y.dims, [n, 512]);
        }
      });

      await t.test("an export over --max-parity-diff exits non-zero, says why and leaves --onnx unwritten", () => {
        assert.notEqual(failRun.status, 0, `exited ${failRun.status}:\n${failRun.stdout}\n${failRun.stderr}`);
        assert.match(failRun.stderr, /max abs difference \S+ exceeds --max-parity-diff 1e-12/);
        const failMeta = readJson(join(failDir, "train-meta.json"));
        assert.equal(failMeta.max_parity_diff, 1e-12);
        assert.equal(failMeta.parity_ok, false);
        assert.ok(failMeta.onnx_vs_pytorch_max_abs_diff > 1e-12, `max abs diff ${failMeta.onnx_vs_pytorch_max_abs_diff}`);
        assert.ok(!existsSync(failOnnx), "the failed export must not take the model's place");
        assert.ok(existsSync(`${failOnnx}.unchecked`), "kept for inspection");
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
