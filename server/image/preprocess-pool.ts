import { availableParallelism } from "node:os";
import type { Config } from "../config.js";
import type { Worker } from "node:worker_threads";
import { startWorker } from "../start-worker.js";
import { internalError, MLError, serviceUnavailable } from "../errors.js";
import type { DecodeLimits } from "./decode.js";
import type { PreprocessReply, PreprocessTask } from "./preprocess-worker.js";
import { isModelSized, preprocessPhoto } from "./preprocess-photo.js";
import { addStage, cancelledError, currentContext, type RequestContext } from "../observe/request-context.js";

export interface PreprocessPool {
  /** Decode + Pillow-exact preprocessing in a worker; rejects with the decoder's MLError. */
  preprocess(bytes: Uint8Array, size: number): Promise<Float32Array>;
  /**
   * Now: workers alive, busy, photos waiting. Since start: photos refused
   * because the queue was full, dropped from the queue because their call
   * ended, handed to a worker, and preprocessed on the calling thread
   * because they were already the model's size.
   */
  stats(): { workers: number; busy: number; queued: number; refused: number; abandoned: number; started: number; inline: number };
  close(): Promise<void>;
}

/**
 * A fixed set of workers, one task each at a time, so concurrent requests
 * use every core and at most `size` full-resolution images are decoded at
 * once (bounding memory under bursts). A worker that dies is replaced and its
 * task fails with a retryable error instead of hanging.
 */
export function createPreprocessPool(
  limits: DecodeLimits,
  size = Math.max(1, availableParallelism()),
  /** Photos allowed to wait for a worker; past it requests are refused (retryable) instead of piling up in memory. */
  maxQueue = 64,
  /** Let large JPEGs shrink while they are decoded (decode.ts); false keeps every photo Pillow-exact. */
  shrink = true,
): PreprocessPool {
  type Job = {
    task: PreprocessTask;
    resolve: (t: Float32Array) => void;
    reject: (e: unknown) => void;
    ctx: RequestContext | undefined;
    /** performance.now() when queued, then when posted to the worker. */
    at: number;
  };
  const queue: Job[] = [];
  const idle: Worker[] = [];
  const busy = new Map<Worker, Job>();
  const workers: Worker[] = [];
  const ready = new WeakSet<Worker>();
  let broken = false;
  let nextId = 1;
  let closed = false;
  let refused = 0;
  let abandoned = 0;
  let inline = 0;
  let started = 0;

  const spawn = () => {
    const w = startWorker(import.meta.url, "preprocess-worker");
    workers.push(w);
    w.unref();
    w.on("message", (reply: PreprocessReply | "ready") => {
      if (reply === "ready") {
        ready.add(w);
        idle.push(w);
        return pump();
      }
      const job = busy.get(w);
      busy.delete(w);
      if (job) {
        if (reply.ok) {
          const { decode, resize, tensor } = reply.ms;
          addStage("handoff", performance.now() - job.at - decode - resize - tensor, job.ctx);
          addStage("decode", decode, job.ctx);
          addStage("resize", resize, job.ctx);
          addStage("tensor", tensor, job.ctx);
          if (job.ctx) job.ctx.path = reply.path;
          job.resolve(reply.tensor);
        } else
          job.reject(
            reply.code === undefined ? internalError(`preprocessing failed: ${reply.message}`) : new MLError(reply.code, reply.message),
          );
      }
      idle.push(w);
      pump();
    });
    w.on("error", (e) => {
      const job = busy.get(w);
      busy.delete(w);
      job?.reject(internalError(`preprocessing worker crashed: ${e.message}`, e));
    });
    w.on("exit", () => {
      const job = busy.get(w);
      busy.delete(w);
      job?.reject(internalError("preprocessing worker exited"));
      for (const list of [idle, workers]) {
        const i = list.indexOf(w);
        if (i >= 0) list.splice(i, 1);
      }
      // A worker that never came up would fail the same way again: stop
      // replacing it and fail the waiting jobs rather than loop.
      if (!ready.has(w)) {
        broken = true;
        for (const j of queue.splice(0)) j.reject(internalError("preprocessing workers cannot start"));
      }
      if (!closed && !broken) spawn();
    });
  };

  const pump = () => {
    while (idle.length > 0 && queue.length > 0) {
      const w = idle.pop()!;
      const job = queue.shift()!;
      busy.set(w, job);
      const now = performance.now();
      addStage("queue", now - job.at, job.ctx);
      job.at = now;
      started++;
      w.postMessage(job.task);
    }
  };

  for (let i = 0; i < size; i++) spawn();

  const preprocessHere = async (bytes: Uint8Array, inputSize: number, ctx: RequestContext | undefined) => {
    inline++;
    const { tensor, ms, path } = await preprocessPhoto(bytes, inputSize, limits, shrink);
    addStage("decode", ms.decode, ctx);
    addStage("resize", ms.resize, ctx);
    addStage("tensor", ms.tensor, ctx);
    if (ctx) ctx.path = path;
    return tensor;
  };

  return {
    preprocess(bytes, inputSize) {
      if (closed || broken)
        return Promise.reject(internalError(closed ? "preprocessing pool is closed" : "preprocessing workers cannot start"));
      if (queue.length >= maxQueue) {
        refused++;
        return Promise.reject(serviceUnavailable(`server busy: ${queue.length} photos already wait for preprocessing, retry shortly`));
      }
      const ctx = currentContext();
      const signal = ctx?.signal;
      if (signal?.aborted) return Promise.reject(cancelledError(signal));
      if (isModelSized(bytes, inputSize)) return preprocessHere(bytes, inputSize, ctx);
      return new Promise((resolve, reject) => {
        const job: Job = { task: { id: nextId++, bytes, size: inputSize, limits, shrink }, resolve, reject, ctx, at: performance.now() };
        if (signal) {
          // A call that ends while its photo still waits gives up its place:
          // nobody would receive the result. Once a worker has the photo it
          // finishes (stopping a worker mid-decode costs more than the decode).
          const onAbort = () => {
            const i = queue.indexOf(job);
            if (i >= 0) {
              queue.splice(i, 1);
              abandoned++;
              reject(cancelledError(signal));
            }
          };
          signal.addEventListener("abort", onAbort, { once: true });
          job.resolve = (t) => (signal.removeEventListener("abort", onAbort), resolve(t));
          job.reject = (e) => (signal.removeEventListener("abort", onAbort), reject(e));
        }
        queue.push(job);
        pump();
      });
    },
    stats: () => ({ workers: workers.length, busy: busy.size, queued: queue.length, refused, abandoned, started, inline }),
    async close() {
      closed = true;
      await Promise.all(workers.map((w) => w.terminate()));
    },
  };
}

/** The preprocessing pool the server and its tools open, from the settings. */
export function preprocessPoolFromConfig(config: Config): PreprocessPool {
  return createPreprocessPool(
    { maxBytes: config.maxImageBytes, maxPixels: config.maxImagePixels },
    config.preprocessWorkers,
    config.maxPending,
    !config.exactPreprocess,
  );
}
