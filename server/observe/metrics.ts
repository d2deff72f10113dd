/**
 * Prometheus metrics of one server instance, served at GET /metrics.
 *
 * prom-client does the exposition format, the histograms and the process and
 * runtime metrics. Everything lives in a registry of this instance (not
 * prom-client's global one), so several servers in one process (tests, the
 * benchmark) each count their own calls.
 *
 * Sources: the `nosepaw:rpc` record of every call (requests, latency, time
 * per stage), the `nosepaw:batch` record of every model run (batch sizes),
 * and, read when scraped, the preprocessing pool, the model's state and the
 * registry's counts. The object-store and database decorators report their
 * failures through `storageError` / `databaseError`.
 */
import { subscribe, unsubscribe } from "node:diagnostics_channel";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import { MLError, mlCodeName } from "../errors.js";
import type { ModelState } from "../model/model-holder.js";
import type { BatchRecord } from "../model/micro-batcher.js";
import type { RpcRecord } from "./request-context.js";

/** Pets per status and enrolled embeddings per model version. */
export interface RegistryCounts {
  pets: Record<string, number>;
  embeddings: Record<string, number>;
}

export interface MetricsSources {
  /** Only calls of this server instance are counted. */
  origin: object;
  pool: { stats(): { workers: number; busy: number; queued: number; refused: number } };
  model: { state(): ModelState };
  /** Throws when the registry database cannot answer. */
  registryCounts(): Promise<RegistryCounts>;
  /** How long registry counts are reused between scrapes. Default 10 s. */
  registryCountsTtlMs?: number;
  /** How long a scrape waits for the counts before reporting an error. Default 2 s. */
  registryCountsTimeoutMs?: number;
}

export interface Metrics {
  readonly contentType: string;
  /** The exposition text; never fails because a source does. */
  scrape(): Promise<string>;
  storageError(op: string, err: unknown): void;
  databaseError(op: string, err: unknown): void;
  close(): void;
}

const SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const STAGE_SECONDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
const BATCH_SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256];

/** The gRPC status a call ended with: in-band failures travel in an OK response. */
export function grpcCode(result: string): string {
  if (result === "OK" || result.startsWith("ML_")) return "OK";
  // Connect's Code names (NotFound) in gRPC's spelling (NOT_FOUND).
  return result.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** A failure's code for an error counter: ML_xxxx, a SQLSTATE, or "unexpected". */
function errorCode(e: unknown): string {
  if (e instanceof MLError) return mlCodeName(e.code);
  const code = (e as { code?: unknown })?.code;
  return typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) ? code : "unexpected";
}

export function createMetrics(src: MetricsSources): Metrics {
  const registry = new Registry();
  const registers = [registry];
  collectDefaultMetrics({ register: registry });

  const requests = new Counter({
    name: "nosepaw_rpc_requests_total",
    help: "Finished calls per method, result (OK, an ML_xxxx in-band failure, or the Connect code of a transport failure) and gRPC status.",
    labelNames: ["method", "result", "grpc_code"] as const,
    registers,
  });
  const latency = new Histogram({
    name: "nosepaw_rpc_duration_seconds",
    help: "Time from a call reaching the handler chain to its answer, per method.",
    labelNames: ["method"] as const,
    buckets: SECONDS,
    registers,
  });
  const stages = new Histogram({
    name: "nosepaw_rpc_stage_duration_seconds",
    help: "Time a call spent in a stage (queue, handoff, decode, resize, tensor, batch_wait, inference, storage, database), summed over its photos; observed once per call that had the stage.",
    labelNames: ["method", "stage"] as const,
    buckets: STAGE_SECONDS,
    registers,
  });
  const batchSize = new Histogram({
    name: "nosepaw_inference_batch_size",
    help: "Photos per model run.",
    buckets: BATCH_SIZES,
    registers,
  });
  const batchSeconds = new Histogram({
    name: "nosepaw_inference_duration_seconds",
    help: "Time per model run (one batch).",
    buckets: STAGE_SECONDS,
    registers,
  });
  const storageErrors = new Counter({
    name: "nosepaw_storage_errors_total",
    help: "Object-store operations that failed, per operation and error code.",
    labelNames: ["op", "code"] as const,
    registers,
  });
  const databaseErrors = new Counter({
    name: "nosepaw_database_errors_total",
    help: "Database queries and transactions that failed, per operation and error code (ML_5005 when unreachable, else the SQLSTATE).",
    labelNames: ["op", "code"] as const,
    registers,
  });

  const poolStats = () => src.pool.stats();
  new Gauge({
    name: "nosepaw_preprocess_queue_depth",
    help: "Photos waiting for a preprocessing worker.",
    registers,
    collect() {
      this.set(poolStats().queued);
    },
  });
  new Gauge({
    name: "nosepaw_preprocess_workers",
    help: "Preprocessing workers alive, per state.",
    labelNames: ["state"] as const,
    registers,
    collect() {
      const s = poolStats();
      this.set({ state: "busy" }, s.busy);
      this.set({ state: "idle" }, s.workers - s.busy);
    },
  });
  let refusedSeen = 0;
  new Counter({
    name: "nosepaw_preprocess_refused_total",
    help: "Photos refused (SERVICE_UNAVAILABLE) because the preprocessing queue was full.",
    registers,
    collect() {
      const refused = poolStats().refused;
      if (refused > refusedSeen) this.inc(refused - refusedSeen);
      refusedSeen = refused;
    },
  });

  new Gauge({
    name: "nosepaw_model_state",
    help: "1 for the model's current load state (loading, ready, failed), 0 for the others; version is the loaded model's, empty until one is.",
    labelNames: ["state", "version"] as const,
    registers,
    collect() {
      const s = src.model.state();
      const version = s.status === "ready" ? s.model.version : "";
      this.reset();
      for (const state of ["loading", "ready", "failed"] as const) this.set({ state, version }, state === s.status ? 1 : 0);
    },
  });

  // Registry counts cost a query: reused for a while, bounded in time, and a
  // failure shows as nosepaw_registry_count_error 1 (the last counts stay).
  // The three gauges are collected concurrently and share one refresh.
  const ttl = src.registryCountsTtlMs ?? 10_000;
  const timeout = src.registryCountsTimeoutMs ?? 2_000;
  let counted: { at: number; counts: RegistryCounts } | undefined;
  let countError = 0;
  let query: Promise<RegistryCounts> | undefined;
  let refreshing: Promise<void> | undefined;
  const refresh = async () => {
    if (counted && performance.now() - counted.at < ttl) return;
    // A query still running from an earlier, timed-out scrape is waited for, not repeated.
    query ??= src.registryCounts().finally(() => (query = undefined));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error("registry counts timed out")), timeout)));
    try {
      counted = { at: performance.now(), counts: await Promise.race([query, late]) };
      countError = 0;
    } catch {
      countError = 1;
    } finally {
      clearTimeout(timer);
    }
  };
  const counts = async () => {
    await (refreshing ??= refresh().finally(() => (refreshing = undefined)));
    return counted?.counts;
  };
  new Gauge({
    name: "nosepaw_registry_pets",
    help: "Registered pets per status.",
    labelNames: ["status"] as const,
    registers,
    async collect() {
      const c = await counts();
      if (!c) return;
      this.reset();
      for (const [status, n] of Object.entries({ active: 0, retired: 0, ...c.pets })) this.set({ status }, n);
    },
  });
  new Gauge({
    name: "nosepaw_registry_embeddings",
    help: "Enrolled embeddings per model version that made them.",
    labelNames: ["model_version"] as const,
    registers,
    async collect() {
      const c = await counts();
      if (!c) return;
      this.reset();
      // The running model's version is always shown, at 0 before anything is enrolled with it.
      const s = src.model.state();
      if (s.status === "ready") this.set({ model_version: s.model.version }, 0);
      for (const [model_version, n] of Object.entries(c.embeddings)) this.set({ model_version }, n);
    },
  });
  new Gauge({
    name: "nosepaw_registry_count_error",
    help: "1 when the registry could not be counted at the last scrape (database down or slow), else 0.",
    registers,
    async collect() {
      await counts();
      this.set(countError);
    },
  });

  const onRpc = (message: unknown) => {
    const r = message as RpcRecord;
    if (r.origin !== src.origin) return;
    requests.inc({ method: r.method, result: r.result, grpc_code: grpcCode(r.result) });
    latency.observe({ method: r.method }, r.ms / 1000);
    for (const [stage, ms] of Object.entries(r.stages)) stages.observe({ method: r.method, stage }, ms / 1000);
  };
  // A batch record does not say which server ran it; with one server per
  // process (as deployed) every model run is this one's.
  const onBatch = (message: unknown) => {
    const b = message as BatchRecord;
    batchSize.observe(b.size);
    batchSeconds.observe(b.ms / 1000);
  };
  subscribe("nosepaw:rpc", onRpc);
  subscribe("nosepaw:batch", onBatch);

  return {
    contentType: registry.contentType,
    scrape: () => registry.metrics(),
    storageError: (op, err) => storageErrors.inc({ op, code: errorCode(err) }),
    databaseError: (op, err) => databaseErrors.inc({ op, code: errorCode(err) }),
    close() {
      unsubscribe("nosepaw:rpc", onRpc);
      unsubscribe("nosepaw:batch", onBatch);
    },
  };
}
