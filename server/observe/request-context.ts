/**
 * Per-call context: the request id and where the call's time went, carried
 * through async code without threading a parameter through every layer.
 *
 * Stages are recorded where the work happens (the preprocessing worker, the
 * micro-batcher, the stores) and published once per call on the
 * `nosepaw:rpc` diagnostics channel, which metrics, benchmarks and tests
 * subscribe to; with no subscriber the publication costs nothing.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { channel } from "node:diagnostics_channel";
import { serviceUnavailable, type MLError } from "../errors.js";

/**
 * Where a call spends its time, in the order a photo flows:
 * - queue: waiting for a free preprocessing worker;
 * - handoff: posting the bytes to the worker and the tensor back;
 * - decode: header checks, JPEG/PNG decode and EXIF orientation (one libvips pipeline);
 * - resize: the LANCZOS resize to the model's size;
 * - tensor: 8-bit RGB to the CHW float tensor;
 * - batch_wait: waiting for the micro-batch to close or for the previous batch;
 * - inference: the model's run, shared by the batch;
 * - keypoints, geometry_match: the geometric check (keypoints of a photo, then matching them
 *   against enrolled photos), in its own worker;
 * - storage, database: object-store and PostgreSQL calls.
 */
export type Stage =
  | "queue"
  | "handoff"
  | "decode"
  | "resize"
  | "tensor"
  | "batch_wait"
  | "inference"
  | "keypoints"
  | "geometry_match"
  | "storage"
  | "database";

export const STAGES: readonly Stage[] = [
  "queue",
  "handoff",
  "decode",
  "resize",
  "tensor",
  "batch_wait",
  "inference",
  "keypoints",
  "geometry_match",
  "storage",
  "database",
];

export interface RequestContext {
  readonly id: string;
  readonly method: string;
  /** performance.now() when the call reached the handler chain. */
  readonly started: number;
  /** Milliseconds per stage, summed when a stage runs more than once. */
  readonly stages: Partial<Record<Stage, number>>;
  /** Aborted when the client cancels or the call's deadline passes. */
  readonly signal: AbortSignal | undefined;
  /** Model inference batch size the call's photo ran in (the last one, if several). */
  batchSize?: number;
  /** How the call's photo was decoded: "exact" or "jpeg-shrink" (the last one, if several). */
  path?: string;
}

/** What `nosepaw:rpc` carries when a call ends. */
export interface RpcRecord {
  id: string;
  method: string;
  /** ML_xxxx for in-band failures, "OK", or the Connect code name for transport failures. */
  result: string;
  ms: number;
  stages: Partial<Record<Stage, number>>;
  batchSize?: number;
  /** How the call's photo was decoded: "exact" or "jpeg-shrink". */
  path?: string;
  /** The service's full name, e.g. "nose_embedder.NoseEmbedderService". */
  service?: string;
  /**
   * The server instance that answered: observers of one instance (its
   * metrics, its tracer) skip the calls of others running in the same process.
   */
  origin?: object;
  /** The caller's W3C `traceparent` header, so a trace can continue the caller's. */
  traceparent?: string;
}

export const rpcChannel = channel("nosepaw:rpc");

const storage = new AsyncLocalStorage<RequestContext>();

export function runWithContext<T>(ctx: RequestContext, fn: () => T): T {
  return storage.run(ctx, fn);
}

export function currentContext(): RequestContext | undefined {
  return storage.getStore();
}

export function addStage(stage: Stage, ms: number, ctx = storage.getStore()): void {
  if (ctx && ms >= 0) ctx.stages[stage] = (ctx.stages[stage] ?? 0) + ms;
}

/** Runs `fn` and books its duration to `stage` of the current call (if any). */
export async function timed<T>(stage: Stage, fn: () => Promise<T>): Promise<T> {
  const ctx = storage.getStore();
  if (!ctx) return fn();
  const t = performance.now();
  try {
    return await fn();
  } finally {
    addStage(stage, performance.now() - t, ctx);
  }
}

export function publishRpc(record: RpcRecord): void {
  if (rpcChannel.hasSubscribers) rpcChannel.publish(record);
}

/**
 * Throws when the current call was cancelled or its deadline passed: work
 * that nobody will receive is not started (decoding, inference, writes).
 */
export function throwIfCancelled(ctx = storage.getStore()): void {
  if (ctx?.signal?.aborted) throw cancelledError(ctx.signal);
}

/** The error a call's abandoned work ends with; retryable, as the caller may try again with more time. */
export function cancelledError(signal: AbortSignal): MLError {
  const reason = signal.reason as { name?: string; message?: string } | undefined;
  const why = reason?.message ? `: ${reason.message}` : "";
  return serviceUnavailable(`call cancelled or past its deadline${why}; no further work was done for it`);
}
