import type { Logger } from "../log.js";
import type { LoadedModel, ModelHolder } from "../model/model-holder.js";
import type { Registry } from "./registry.js";
import type { Flows, ReembedReport } from "./types.js";

/** When another replica holds the re-embedding lock, look again after this long (it may die halfway). */
const SWEEP_RETRY_MS = 5000;

export interface RolloutDeps {
  model: ModelHolder;
  log: Logger;
  /** The registry once its database is ready, else undefined. */
  registry(): Registry | undefined;
  /** The use cases on the running model. */
  flows(): Flows;
  /** True once the host is closing: nothing new is started. */
  closed(): boolean;
}

export interface Rollout {
  /** Adopts the running model's version if not done yet (called when the database becomes ready). */
  adopt(): void;
  /** Stops a pending retry. */
  close(): void;
}

/**
 * A model version is adopted by the registry when a server first runs it
 * (a rollout); then enrolled embeddings of other versions are re-embedded
 * from their stored images in the background, one replica at a time
 * (verification re-embeds a pet's rows on demand meanwhile). A model from
 * a promoted release (server/learn/) is made the registry's current version
 * even when it ran before: the pointer going back is a rollback.
 */
export function startRollout(deps: RolloutDeps): Rollout {
  const { model, log } = deps;
  let adoptedFor: LoadedModel | undefined;
  let sweepTimer: ReturnType<typeof setTimeout> | undefined;

  const adopt = () => {
    const state = model.state();
    const registry = deps.registry();
    if (deps.closed() || !registry || state.status !== "ready" || adoptedFor === state.model) return;
    const m = state.model;
    adoptedFor = m;
    clearTimeout(sweepTimer);
    registry.adoptModelVersion(m.version, m.promoted === true).then(
      () => sweep(m),
      (e) => {
        adoptedFor = undefined;
        log.warn("adopting the model version failed; will retry", { err: e, modelVersion: m.version, retryInMs: SWEEP_RETRY_MS });
        if (!deps.closed()) sweepTimer = setTimeout(adopt, SWEEP_RETRY_MS);
      },
    );
  };
  model.onChange(adopt);

  const isCurrent = (m: LoadedModel) => {
    const state = model.state();
    return !deps.closed() && state.status === "ready" && state.model === m;
  };
  const sweep = (m: LoadedModel) => {
    const reg = deps.registry();
    if (!reg || !isCurrent(m)) return;
    const retry = () => {
      if (isCurrent(m)) sweepTimer = setTimeout(() => sweep(m), SWEEP_RETRY_MS);
    };
    model
      .pinned(async () => {
        const later = await reg.supersededBy(m.version);
        if (later !== undefined) {
          log.warn("the registry has moved to a later model version; this server does not re-embed", {
            modelVersion: m.version,
            registryModelVersion: later,
          });
          return;
        }
        const outcome = await reg.withSweepLock(() => deps.flows().migrateStale({ keepGoing: () => isCurrent(m) }));
        if (!outcome.ran) {
          log.info("re-embedding sweep is running on another replica", { modelVersion: m.version, retryInMs: SWEEP_RETRY_MS });
          return retry();
        }
        logSweep(log, outcome.result, m.version);
      })
      .catch((e) => {
        log.warn("re-embedding stale embeddings failed; will retry", { err: e, retryInMs: SWEEP_RETRY_MS });
        retry();
      });
  };

  return { adopt, close: () => clearTimeout(sweepTimer) };
}

function logSweep(log: Logger, r: ReembedReport, version: string): void {
  if (r.embeddings > 0) log.info("embeddings re-embedded", { count: r.embeddings, pets: r.pets, from: r.from, modelVersion: version });
  if (r.missing.length > 0) {
    log.warn("enrolled photos missing or unreadable; their embeddings stay on the earlier model", {
      count: r.missing.length,
      missing: r.missing.slice(0, 20),
    });
  }
}
