/**
 * The training pipeline runs end to end in its tiny configuration: render a few synthetic
 * identities, train a few steps, export ONNX, evaluate held-out identities, write a card.
 * Needs Debian's python3-torch (scripts/install-train-deps.sh); skipped without it, failed without it under CI.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as ort from "onnxruntime-node";
import { INSTALL, requireSystem } from "./support/require-system.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const PY = "/usr/bin/python3";
const hasTorch = spawnSync(PY, ["-c", "import torch, onnx, cv2"], { encoding: "utf8" }).status === 0;

function python(args: string[]): string {
  const r = spawnSync(PY, args, { cwd: root, encoding: "utf8", timeout: 240_000, env: { ...process.env, OMP_NUM_THREADS: "1" } });
  assert.equal(r.status, 0, `${args.join(" ")} failed:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

test(
  "tiny run renders, trains, exports a loadable ONNX and evaluates it",
  { skip: requireSystem("torch, onnx and cv2 under /usr/bin/python3", !hasTorch && "import torch, onnx, cv2 failed", INSTALL.python), timeout: 300_000 },
  async () => {
    const dir = mkdtempSync(join(tmpdir(), "nosepaw-model-"));
    try {
      const onnxPath = join(dir, "tiny.onnx");
      const cardPath = join(dir, "tiny.json");
      const trainLog = python([
        "models/train/train.py", "--tiny", "--threads", "1",
        "--work", dir, "--onnx", onnxPath, "--card", cardPath,
      ]);
      assert.match(trainLog, /max \|torch - onnxruntime-node\| = /);

      const session = await ort.InferenceSession.create(onnxPath);
      assert.deepEqual(session.inputNames, ["input"]);
      assert.deepEqual(session.outputNames, ["embedding"]);
      for (const n of [1, 2]) {
        const x = new ort.Tensor("float32", new Float32Array(n * 3 * 224 * 224).fill(0.5), [n, 3, 224, 224]);
        const y = (await session.run({ input: x })).embedding;
        assert.deepEqual(y.dims, [n, 512]);
      }

      const card = JSON.parse(readFileSync(cardPath, "utf8"));
      assert.deepEqual(card.output.shape, [null, 512]);
      assert.equal(card.training.data, "synthetic only");
      assert.ok(card.calibration.cosine.length === card.calibration.similarity.length);

      const evalLog = python([
        "models/train/evaluate.py", `synth:${join(dir, "synth")}`, "--model", onnxPath, "--out", join(dir, "eval"),
      ]);
      assert.match(evalLog, /AUC \d\.\d+ {2}EER \d\.\d+ {2}TAR@FAR=1e-2 \d\.\d+ {2}TAR@FAR=1e-3 \d\.\d+ {2}TAR@FAR=1e-4 \d\.\d+ {2}rank-1 \d\.\d+/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
