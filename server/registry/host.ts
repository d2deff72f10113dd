import type { Config } from "../config.js";
import { openDatabase, type Database } from "../db/database.js";
import { migrate } from "../db/migrations.js";
import { observeDatabase, type DatabaseOperation } from "../db/observed-database.js";
import { databaseConfig } from "../db/open.js";
import type { EmbedImage } from "../embed-image.js";
import { serviceUnavailable } from "../errors.js";
import { createGeometryService, type GeometryService } from "../geometry/geometry-service.js";
import type { Logger } from "../log.js";
import type { LoadedModel, ModelHolder } from "../model/model-holder.js";
import { observeStore, type StoreOperation } from "../storage/observed-store.js";
import { openObjectStore } from "../storage/open.js";
import { createFlows } from "./flows.js";
import type { Flows } from "./types.js";
import { createGeometricCheck, type GeometricCheck } from "./geometric-check.js";
import { createRegistry, type Registry } from "./registry.js";
import { startRollout } from "./rollout.js";
import { startRefusedPhotoSweep } from "./refused-retention.js";

/** How long a readiness answer is reused, and how long its round trip may take. */
const READINESS_TTL_MS = 1000;
const READINESS_TIMEOUT_MS = 1000;

type ReadinessAnswer = { ready: boolean; detail: string };

/** The registry as the server holds it: a database that may come and go, and the use cases on the running model. */
export interface RegistryHost {
  /** The use cases on the running model: MODEL_NOT_LOADED without one, SERVICE_UNAVAILABLE while the database is. */
  flows(): Flows;
  /** The registry database for what needs no model (consent): SERVICE_UNAVAILABLE while it is unavailable. */
  registry(): Registry;
  /** The running model's version, "" while none is loaded. */
  modelVersion(): string;
  /** One line for health messages: the registry database's state as last seen. */
  status(): string;
  /**
   * Whether the registry RPCs can be served now: the database open, migrated
   * and answering a bounded round trip (checked at most once a second), and
   * this server's model version not superseded by a rollout.
   */
  readiness(): Promise<ReadinessAnswer>;
  /** Called when the database becomes ready. */
  onChange(listener: () => void): () => void;
  /** Pets per status and embeddings per model version; SERVICE_UNAVAILABLE while the database is. */
  counts(): Promise<{ pets: Record<string, number>; embeddings: Record<string, number> }>;
  close(): Promise<void>;
}

/** Told of every failed object-store operation and database query (for metrics). */
export interface RegistryFailureHooks {
  storageError?(op: StoreOperation, err: unknown): void;
  databaseError?(op: DatabaseOperation, err: unknown): void;
}

/**
 * Opens the object store and the database and holds the registry on them.
 * The database may be down when the server starts: it is then retried in the
 * background while the registry RPCs answer SERVICE_UNAVAILABLE (retryable),
 * and ExtractNoseVector keeps working.
 */
export function openRegistry(
  config: Config,
  model: ModelHolder,
  embed: EmbedImage,
  log: Logger,
  hooks: RegistryFailureHooks = {},
): RegistryHost {
  // Observed: time booked to the calls' storage / database stages, failures to the hooks.
  const store = observeStore(openObjectStore(config), hooks.storageError);

  let db: Database | undefined;
  let registry: Registry | undefined;
  let lastError = "connecting";
  let closed = false;
  let retryTimer: ReturnType<typeof setTimeout> | undefined;
  const listeners = new Set<() => void>();
  const unavailable = () => serviceUnavailable(`registry database is not available: ${lastError}`);

  const connect = async (attempt: number): Promise<void> => {
    try {
      const opened = await openDatabase(databaseConfig(config, (e) => log.warn("database connection dropped", { err: e })));
      try {
        const applied = await migrate(opened);
        if (closed) return void (await opened.close());
        db = opened;
        registry = createRegistry(observeDatabase(opened, hooks.databaseError), { efSearch: config.hnswEfSearch });
        log.info("database ready", { kind: opened.kind, migrationsApplied: applied });
        listeners.forEach((l) => l());
        rollout.adopt();
      } catch (e) {
        await opened.close().catch(() => undefined);
        throw e;
      }
    } catch (e) {
      lastError = (e as Error).message;
      const delay = Math.min(30_000, 500 * 2 ** Math.min(attempt, 6));
      log.error("database not ready, retrying", { err: e, retryInMs: delay });
      if (!closed) retryTimer = setTimeout(() => void connect(attempt + 1), delay);
    }
  };
  const rollout = startRollout({ model, log, registry: () => registry, flows: () => flows(), closed: () => closed });

  const ready = connect(0);
  // Photos of refused registrations past their retention are deleted here, at start and hourly.
  const refusedSweep = startRefusedPhotoSweep({ store, retentionDays: config.refusedPhotoRetentionDays, log });

  // One geometry worker per detector setting (models normally share one),
  // and one geometric check per model, which keeps its enrolled keypoints.
  const geometryServices = new Map<string, GeometryService>();
  const geometricCheckFor = (m: LoadedModel): GeometricCheck => {
    const key = JSON.stringify(m.geometry.params);
    let service = geometryServices.get(key);
    if (!service) {
      service = createGeometryService(m.geometry.params, { maxBytes: config.maxImageBytes, maxPixels: config.maxImagePixels });
      geometryServices.set(key, service);
    }
    return createGeometricCheck({ geometry: service, policy: m.geometry.policy, store, log: (event, fields) => log.info(event, fields) });
  };

  // One Flows per loaded model: it keeps per-process state (the last
  // verify_{ms} timestamp handed out), so it must outlive a request.
  let cached: { model: LoadedModel; flows: Flows } | undefined;
  const flows = (): Flows => {
    const m = model.require();
    if (!registry) throw unavailable();
    if (cached?.model !== m) {
      cached = {
        model: m,
        flows: createFlows({
          store,
          registry,
          embed,
          calibration: m.calibration,
          registerPairThreshold: m.registerPairThreshold,
          modelVersion: m.version,
          ...(config.geometry ? { geometry: geometricCheckFor(m) } : {}),
          clientParityMinCosine: config.clientParityMinCosine,
          log: (event, fields) => log.info(event, fields),
        }),
      };
    }
    return cached.flows;
  };

  // Readiness: one bounded round trip at a time, its answer reused for a
  // second, so probes and tight health polling cost the database little.
  let probe: { at: number; key: string; answer: Promise<ReadinessAnswer> } | undefined;
  let probing = false;
  const check = async (reg: Registry, version: string | undefined): Promise<ReadinessAnswer> => {
    probing = true;
    const query = (version === undefined ? reg.ping().then(() => undefined) : reg.supersededBy(version)).finally(() => (probing = false));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${READINESS_TIMEOUT_MS} ms`)), READINESS_TIMEOUT_MS);
    });
    try {
      const later = await Promise.race([query, timeout]);
      if (later !== undefined)
        return { ready: false, detail: `the registry has moved to model version ${later}; this server runs ${version}` };
      return { ready: true, detail: `registry on ${db!.kind}` };
    } catch (e) {
      return { ready: false, detail: `registry database not answering: ${(e as Error).message}` };
    } finally {
      clearTimeout(timer);
    }
  };
  const readiness = () => {
    const reg = registry;
    if (!reg) return Promise.resolve({ ready: false, detail: `registry database unavailable (${lastError})` });
    const state = model.state();
    const key = state.status === "ready" ? state.model.version : "";
    const now = performance.now();
    if (probe && probe.key === key && now - probe.at < READINESS_TTL_MS) return probe.answer;
    // A round trip still waiting past its time: the database is not answering; do not pile up more.
    if (probing) return Promise.resolve({ ready: false, detail: "registry database not answering (a check is still waiting)" });
    probe = { at: now, key, answer: check(reg, key || undefined) };
    return probe.answer;
  };

  return {
    flows,
    registry() {
      if (!registry) throw unavailable();
      return registry;
    },
    modelVersion() {
      const state = model.state();
      return state.status === "ready" ? state.model.version : "";
    },
    status: () => (registry ? `registry on ${db!.kind}` : `registry database unavailable (${lastError})`),
    readiness,
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },

    counts() {
      if (!registry) return Promise.reject(unavailable());
      return registry.counts();
    },

    async close() {
      closed = true;
      if (retryTimer) clearTimeout(retryTimer);
      rollout.close();
      refusedSweep.close();
      await ready;
      await db?.close();
      await Promise.all([...geometryServices.values()].map((g) => g.close()));
    },
  };
}
