import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { AsyncLocalStorage } from "node:async_hooks";
import { duplicateThreshold, type Calibration } from "../../shared/similarity.js";
import { modelNotLoaded } from "../errors.js";
import { modelVariantPath, type Config } from "../config.js";
import type { Logger } from "../log.js";
import { loadEmbedder, type Embedder, type EmbedderOptions } from "./embedder.js";
import { readModelCard } from "./model-card.js";
import { REGISTER_PAIR_THRESHOLD } from "../registry/input.js";
import { DEFAULT_GEOMETRY_PARAMS, DEFAULT_GEOMETRY_POLICY, type GeometryParams, type GeometryPolicy } from "../../shared/geometry/index.js";

export interface LoadedModel {
  embedder: Embedder;
  version: string;
  calibration: Calibration | undefined;
  /** Keypoint detector settings and decision policy: the card's, or the defaults. */
  geometry: { params: GeometryParams; policy: GeometryPolicy };
  /** The similarity every pair of a registration's photos must reach: the card's `registration.pair_threshold`, else 0.70. */
  registerPairThreshold: number;
  /** The card the model was loaded with, as read; undefined when it has none. */
  card: Record<string, unknown> | undefined;
  /** Loaded from a promoted release: the registry takes its version as current even if it ran before (a rollback). */
  promoted?: boolean;
}

export type ModelState = { status: "loading" } | { status: "ready"; model: LoadedModel } | { status: "failed"; reason: string };

/** What a reload did: switched to another model, found the same one, or failed (the running model, if any, stays). */
export type ReloadOutcome =
  | { result: "switched"; version: string; previousVersion: string | undefined }
  | { result: "unchanged"; version: string }
  | { result: "failed"; reason: string };

/**
 * Owns the model's life cycle. The server listens before the model is loaded
 * so probes can see it; until then requests get MODEL_NOT_LOADED (retryable)
 * and health says NOT_SERVING. A missing or broken file leaves the server up
 * in that state; `reload()` (SIGHUP) reads the file again.
 *
 * A reload never drops a call: the new session is created while the old one
 * keeps serving, the switch is one assignment, and the old session is
 * released only when the last call pinned to it has finished. A call pins
 * the model it started with (`pinned`), so all its photos are embedded by
 * one model version even when a reload happens halfway through it.
 */
export interface ModelHolder {
  /** The model file running now (or being loaded first): MODEL_PATH until `switchTo` moves it. */
  readonly path: string;
  state(): ModelState;
  /** The model pinned by the running call, else the current one, else a MODEL_NOT_LOADED error. */
  require(): LoadedModel;
  /** Runs `fn` with the current model (if any) pinned: `require()` inside returns it, and it stays open until `fn` settles. */
  pinned<T>(fn: () => Promise<T>): Promise<T>;
  onChange(listener: () => void): () => void;
  /** The first load, at start-up. */
  load(): Promise<void>;
  /** Loads the file and card again; concurrent calls are queued, not run twice at once. */
  reload(): Promise<ReloadOutcome>;
  /**
   * Loads another model file and card (an adopted release) through the same
   * queue as `reload`, without dropping a call. The files become the ones a
   * later `reload` reads only if the switch succeeds; on failure the running
   * model and its paths stay.
   */
  switchTo(files: ModelFiles): Promise<ReloadOutcome>;
  close(): Promise<void>;
}

/** A model file and its (optional) card. */
export interface ModelFiles {
  modelPath: string;
  cardPath: string | undefined;
  /** A promoted release (see LoadedModel.promoted). */
  promoted?: boolean;
}

/** A loaded model and the calls using it; `retired` once another model took its place. */
interface Slot {
  model: LoadedModel;
  users: number;
  retired: boolean;
  released?: boolean;
}

export function createModelHolder(
  opts: EmbedderOptions & {
    cardPath: string | undefined;
    log: Logger;
    /** A quantised variant of the card's model: its version gets "+int8" or "+fp16", so audit rows tell them apart. */
    precision?: string;
  },
): ModelHolder {
  let current: ModelState = { status: "loading" };
  let slot: Slot | undefined;
  const pins = new AsyncLocalStorage<Slot>();
  const listeners = new Set<() => void>();
  let queue: Promise<unknown> = Promise.resolve();
  let closed = false;
  let files: ModelFiles = { modelPath: opts.modelPath, cardPath: opts.cardPath };

  const set = (s: ModelState) => {
    current = s;
    for (const l of listeners) l();
  };

  /** Closes a retired model's session once no call uses it. */
  const release = (s: Slot): Promise<void> => {
    if (!s.retired || s.users > 0 || s.released) return Promise.resolve();
    s.released = true;
    return s.model.embedder.close().then(
      () => opts.log.info("model released", { version: s.model.version, fingerprint: s.model.embedder.fingerprint }),
      (e: Error) => opts.log.warn("model release failed", { version: s.model.version, err: e }),
    );
  };

  const attempt = async (target: ModelFiles): Promise<ReloadOutcome> => {
    const started = performance.now();
    let model: LoadedModel;
    try {
      // MODEL_PRECISION names a variant beside the configured model; a promoted release runs as it was published.
      const configured = target.modelPath === opts.modelPath ? opts.precision : undefined;
      const { precision, modelPath } =
        configured === "auto" ? await autoVariant(target.modelPath, opts.log) : { precision: configured, modelPath: target.modelPath };
      if (configured !== "auto" && precision && precision !== "fp32") await checkVariant(modelPath, precision);
      const [embedder, card] = await Promise.all([loadEmbedder({ ...opts, modelPath }), readModelCard(target.cardPath)]);
      model = {
        embedder,
        version: card?.version
          ? precision && precision !== "fp32"
            ? `${card.version}+${precision}`
            : card.version
          : `sha256:${embedder.fingerprint}`,
        calibration: card?.calibration,
        geometry: card?.geometry ?? { params: DEFAULT_GEOMETRY_PARAMS, policy: DEFAULT_GEOMETRY_POLICY },
        registerPairThreshold: card?.registerPairThreshold ?? REGISTER_PAIR_THRESHOLD,
        card: card?.raw,
        ...(target.promoted ? { promoted: true } : {}),
      };
    } catch (e) {
      const reason = (e as Error).message;
      if (slot) {
        // The running model stays: a bad file put in place must not take the service down.
        opts.log.error("model reload failed; the running model stays", {
          modelPath: target.modelPath,
          reason,
          version: slot.model.version,
        });
      } else {
        set({ status: "failed", reason });
        opts.log.error("model not loaded", { modelPath: target.modelPath, reason });
      }
      return { result: "failed", reason };
    }
    if (closed) {
      await model.embedder.close();
      return { result: "failed", reason: "server is shutting down" };
    }
    const previous = slot;
    if (previous && previous.model.embedder.sha256 === model.embedder.sha256 && previous.model.version === model.version) {
      await model.embedder.close();
      files = target;
      opts.log.info("model unchanged", { modelPath: target.modelPath, version: model.version });
      return { result: "unchanged", version: model.version };
    }
    files = target;
    slot = { model, users: 0, retired: false };
    set({ status: "ready", model });
    if (previous) {
      previous.retired = true;
      void release(previous);
    }
    opts.log.info("model loaded", {
      modelPath: target.modelPath,
      version: model.version,
      previousVersion: previous?.model.version,
      fingerprint: model.embedder.fingerprint,
      calibrated: model.calibration !== undefined,
      duplicateSimilarity: duplicateThreshold(model.calibration),
      registerPairThreshold: model.registerPairThreshold,
      dynamicBatch: model.embedder.dynamicBatch,
      ms: Math.round(performance.now() - started),
    });
    return { result: "switched", version: model.version, previousVersion: previous?.model.version };
  };

  /** `target` is read when the turn comes: a reload queued behind a switch reads the switched-to files. */
  const enqueue = (target: () => ModelFiles = () => files) => {
    const run = queue.then(
      () => attempt(target()),
      () => attempt(target()),
    );
    queue = run.catch(() => undefined);
    return run;
  };

  return {
    get path() {
      return files.modelPath;
    },
    state: () => current,
    require() {
      const pinnedSlot = pins.getStore();
      if (pinnedSlot) return pinnedSlot.model;
      if (current.status === "ready") return current.model;
      throw modelNotLoaded(current.status === "loading" ? "model is still loading" : `model could not be loaded: ${current.reason}`);
    },
    async pinned(fn) {
      const s = slot;
      if (pins.getStore() || !s) return fn();
      s.users++;
      try {
        return await pins.run(s, fn);
      } finally {
        s.users--;
        void release(s);
      }
    },
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    async load() {
      await enqueue();
    },
    reload: () => enqueue(),
    switchTo: (target) => enqueue(() => target),
    async close() {
      closed = true;
      await queue;
      if (slot) {
        slot.retired = true;
        await release(slot);
      }
    },
  };
}

/**
 * A quantised variant (models/x.int8.onnx) runs only if models/x.variants.json,
 * written with it by `npm run model:quantize`, says it was made from the
 * models/x.onnx now in place and is the file it wrote: a variant left from
 * an earlier model would otherwise be served under the new model's card.
 */
export async function checkVariant(variantPath: string, precision: string): Promise<void> {
  const suffix = `.${precision}.onnx`;
  if (!variantPath.endsWith(suffix)) return;
  const stem = variantPath.slice(0, -suffix.length);
  const sha = async (p: string) =>
    createHash("sha256")
      .update(await readFile(p))
      .digest("hex");
  const rerun = `run \`npm run model:quantize -- --model ${stem}.onnx\``;
  let record: { source_sha256?: string; variants?: Record<string, { sha256?: string }> };
  try {
    record = JSON.parse(await readFile(`${stem}.variants.json`, "utf8"));
  } catch (e) {
    throw new Error(`MODEL_PRECISION=${precision}: cannot read ${stem}.variants.json (${(e as Error).message}); ${rerun}`);
  }
  if (record.source_sha256 !== (await sha(`${stem}.onnx`)))
    throw new Error(`MODEL_PRECISION=${precision}: ${variantPath} was made from another model than ${stem}.onnx; ${rerun}`);
  if (record.variants?.[precision]?.sha256 !== (await sha(variantPath)))
    throw new Error(`MODEL_PRECISION=${precision}: ${variantPath} is not the file model:quantize wrote; ${rerun}`);
}

/**
 * MODEL_PRECISION=auto: the int8 variant beside `modelPath` when model:quantize
 * recorded it for this very file (it met the agreement bar), else the file
 * itself. A model replaced without rerunning model:quantize runs in fp32
 * rather than failing: the stale variant is named in the log.
 */
export async function autoVariant(modelPath: string, log: Logger): Promise<{ precision: string; modelPath: string }> {
  const int8 = modelVariantPath(modelPath, "int8");
  if (!existsSync(int8)) return { precision: "fp32", modelPath };
  try {
    await checkVariant(int8, "int8");
    return { precision: "int8", modelPath: int8 };
  } catch (e) {
    log.warn("int8 variant not used; running fp32", { modelPath, reason: (e as Error).message });
    return { precision: "fp32", modelPath };
  }
}

/** The model holder the server and its tools open, from the settings. */
export function modelHolderFromConfig(config: Config, log: Logger): ModelHolder {
  return createModelHolder({
    modelPath: config.modelPath,
    cardPath: config.modelCardPath,
    precision: config.modelPrecision,
    inputSize: config.modelInputSize,
    intraOpThreads: config.intraOpThreads,
    spinning: config.modelThreadSpinning,
    batchWindowMs: config.batchWindowMs,
    maxBatch: config.maxBatch,
    log,
  });
}
