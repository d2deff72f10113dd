import { duplicateThreshold, type Calibration } from "../../shared/similarity.js";
import { modelNotLoaded } from "../errors.js";
import type { Logger } from "../log.js";
import { loadEmbedder, type Embedder, type EmbedderOptions } from "./embedder.js";
import { readModelCard } from "./model-card.js";

export interface LoadedModel {
  embedder: Embedder;
  version: string;
  calibration: Calibration | undefined;
  /** The card the model was loaded with, as read; undefined when it has none. */
  card: Record<string, unknown> | undefined;
}

export type ModelState =
  | { status: "loading" }
  | { status: "ready"; model: LoadedModel }
  | { status: "failed"; reason: string };

/**
 * Owns the model's life cycle. The server listens before the model is loaded
 * so probes can see it; until then requests get MODEL_NOT_LOADED (retryable)
 * and health says NOT_SERVING.
 */
export interface ModelHolder {
  readonly path: string;
  state(): ModelState;
  /** The loaded model, or a MODEL_NOT_LOADED error. */
  require(): LoadedModel;
  onChange(listener: () => void): () => void;
  load(): Promise<void>;
  close(): Promise<void>;
}

export function createModelHolder(opts: EmbedderOptions & { cardPath: string | undefined; log: Logger }): ModelHolder {
  let current: ModelState = { status: "loading" };
  const listeners = new Set<() => void>();
  const set = (s: ModelState) => {
    current = s;
    for (const l of listeners) l();
  };
  return {
    path: opts.modelPath,
    state: () => current,
    require() {
      if (current.status === "ready") return current.model;
      throw modelNotLoaded(current.status === "loading" ? "model is still loading" : `model could not be loaded: ${current.reason}`);
    },
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    async load() {
      set({ status: "loading" });
      const started = performance.now();
      try {
        const [embedder, card] = await Promise.all([loadEmbedder(opts), readModelCard(opts.cardPath)]);
        const version = card?.version ?? `sha256:${embedder.fingerprint}`;
        set({ status: "ready", model: { embedder, version, calibration: card?.calibration, card: card?.raw } });
        opts.log.info("model loaded", {
          modelPath: opts.modelPath,
          version,
          fingerprint: embedder.fingerprint,
          calibrated: card?.calibration !== undefined,
          duplicateSimilarity: duplicateThreshold(card?.calibration),
          dynamicBatch: embedder.dynamicBatch,
          ms: Math.round(performance.now() - started),
        });
      } catch (e) {
        const reason = (e as Error).message;
        set({ status: "failed", reason });
        opts.log.error("model not loaded", { modelPath: opts.modelPath, reason });
      }
    },
    async close() {
      if (current.status === "ready") await current.model.embedder.close();
    },
  };
}
