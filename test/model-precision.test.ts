import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { loadConfig } from "../server/config.js";
import { createLogger } from "../server/log.js";
import { preprocessPhoto } from "../server/image/preprocess-photo.js";
import { modelHolderFromConfig, type ModelHolder } from "../server/model/model-holder.js";
import { cosine } from "../shared/similarity.js";
import { nosePhotos } from "./support/nose-photos.js";
import { ROOT } from "./support/server.js";

const MODELS = path.join(ROOT, "models");
const RECORDED = existsSync(path.join(MODELS, "nose-embedder.variants.json"))
  ? Object.keys(JSON.parse(readFileSync(path.join(MODELS, "nose-embedder.variants.json"), "utf8")).variants ?? {})
  : [];
/** The variant model:quantize recorded for the bundled model (int8 only when it met the bar on renders). */
const VARIANT = RECORDED.includes("int8") ? "int8" : "fp16";
const VARIANT_FILE = path.join(MODELS, `nose-embedder.${VARIANT}.onnx`);
const RECORD = path.join(MODELS, "nose-embedder.variants.json");
const sha = (p: string) => createHash("sha256").update(readFileSync(p)).digest("hex");
// The shipped variants must be the bundled model's: a model retrained without rerunning model:quantize fails here.
const stale =
  !existsSync(VARIANT_FILE) || !RECORDED.includes(VARIANT)
    ? `${VARIANT_FILE} not present or not recorded (npm run model:quantize writes it)`
    : JSON.parse(readFileSync(RECORD, "utf8")).source_sha256 !== sha(path.join(MODELS, "nose-embedder.onnx"))
      ? `${VARIANT_FILE} was made from an earlier model: run npm run model:quantize`
      : undefined;
const quiet = createLogger("error", () => {});

async function loaded(env: Record<string, string>): Promise<ModelHolder> {
  const holder = modelHolderFromConfig(loadConfig(env), quiet);
  await holder.load();
  return holder;
}

test("MODEL_PRECISION runs the recorded variant under the card's version, close to fp32", async () => {
  assert.equal(stale, undefined, stale);
  const fp32 = await loaded({ MODEL_PRECISION: "fp32" });
  const int8 = await loaded({ MODEL_PRECISION: VARIANT });
  try {
    const a = fp32.require();
    const b = int8.require();
    assert.notEqual(a.embedder.sha256, b.embedder.sha256);
    assert.equal(b.version, `${a.version}+${VARIANT}`);
    assert.deepEqual(b.calibration, a.calibration);
    const photo = nosePhotos(2);
    for (const [dog, shot] of [
      [0, 0],
      [1, 2],
    ]) {
      const { tensor } = await preprocessPhoto(photo(dog, shot), 224, { maxBytes: 1e7, maxPixels: 1e8 }, true);
      const c = cosine(await a.embedder.embed(tensor), await b.embedder.embed(tensor));
      assert.ok(c >= 0.998, `cosine ${VARIANT} vs fp32 ${c}`);
    }
  } finally {
    await Promise.all([fp32.close(), int8.close()]);
  }
});

test("a variant made from another model than MODEL_PATH's file is refused", async () => {
  assert.equal(stale, undefined, stale);
  const dir = mkdtempSync(path.join(tmpdir(), "nosepaw-variant-"));
  try {
    for (const f of ["nose-embedder.onnx", `nose-embedder.${VARIANT}.onnx`, "nose-embedder.json"])
      copyFileSync(path.join(MODELS, f), path.join(dir, f));
    const record = JSON.parse(readFileSync(path.join(MODELS, "nose-embedder.variants.json"), "utf8"));
    writeFileSync(path.join(dir, "nose-embedder.variants.json"), JSON.stringify({ ...record, source_sha256: "0".repeat(64) }));
    const holder = await loaded({ MODEL_PATH: path.join(dir, "nose-embedder.onnx"), MODEL_PRECISION: VARIANT });
    try {
      const s = holder.state();
      assert.equal(s.status, "failed");
      assert.match(s.status === "failed" ? s.reason : "", /made from another model .*npm run model:quantize/);
    } finally {
      await holder.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a variant model:quantize did not record (below the bar) is refused, with the command to run", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "nosepaw-variant-"));
  try {
    for (const f of ["nose-embedder.onnx", "nose-embedder.json"]) copyFileSync(path.join(MODELS, f), path.join(dir, f));
    // A stray int8 file beside the model, as a run whose int8 missed the bar leaves it: the record does not name it.
    copyFileSync(path.join(MODELS, "nose-embedder.onnx"), path.join(dir, "nose-embedder.int8.onnx"));
    const record = JSON.parse(readFileSync(RECORD, "utf8"));
    const { int8: _dropped, ...variants } = record.variants ?? {};
    writeFileSync(path.join(dir, "nose-embedder.variants.json"), JSON.stringify({ ...record, variants }));
    const holder = await loaded({ MODEL_PATH: path.join(dir, "nose-embedder.onnx"), MODEL_PRECISION: "int8" });
    try {
      const s = holder.state();
      assert.equal(s.status, "failed");
      assert.match(s.status === "failed" ? s.reason : "", /MODEL_PRECISION=int8: .*npm run model:quantize/);
    } finally {
      await holder.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** A copy of the bundled model, its card and its variants in a temporary folder; `edit` changes the copy's record. */
function modelCopy(edit: (record: { source_sha256?: string; variants?: Record<string, unknown> }) => object = (r) => r): string {
  const dir = mkdtempSync(path.join(tmpdir(), "nosepaw-variant-"));
  for (const f of ["nose-embedder.onnx", "nose-embedder.json", "nose-embedder.int8.onnx"])
    if (existsSync(path.join(MODELS, f))) copyFileSync(path.join(MODELS, f), path.join(dir, f));
  writeFileSync(path.join(dir, "nose-embedder.variants.json"), JSON.stringify(edit(JSON.parse(readFileSync(RECORD, "utf8")))));
  return dir;
}

test("by default (MODEL_PRECISION=auto) the bundled model runs as its recorded int8 variant", async () => {
  assert.ok(RECORDED.includes("int8"), "the bundled model ships an int8 variant that met the bar (npm run model:quantize)");
  const holder = await loaded({});
  const fp32 = await loaded({ MODEL_PRECISION: "fp32" });
  try {
    const m = holder.require();
    assert.equal(m.embedder.sha256, sha(path.join(MODELS, "nose-embedder.int8.onnx")));
    assert.equal(m.version, `${fp32.require().version}+int8`);
  } finally {
    await Promise.all([holder.close(), fp32.close()]);
  }
});

test("auto runs fp32 where the int8 record does not match the model file in place", async () => {
  // The model was replaced (or retrained) without rerunning model:quantize: the old int8 file must not run under its card.
  for (const edit of [
    (r: object) => ({ ...r, source_sha256: "0".repeat(64) }),
    (r: { variants?: Record<string, unknown> }) => ({ ...r, variants: { ...r.variants, int8: undefined } }),
  ]) {
    const dir = modelCopy(edit);
    try {
      const holder = await loaded({ MODEL_PATH: path.join(dir, "nose-embedder.onnx") });
      try {
        const m = holder.require();
        assert.equal(m.embedder.sha256, sha(path.join(MODELS, "nose-embedder.onnx")));
        assert.doesNotMatch(m.version, /\+int8$/);
      } finally {
        await holder.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
});
