/**
 * Worker side of the preprocessing pool: bytes in, CHW tensor out. The
 * Pillow-exact resize is CPU-bound JavaScript; running it here keeps the
 * event loop free for the network and lets every core resize at once.
 */
import { parentPort } from "node:worker_threads";
import { fitToModel, toChw } from "../../shared/preprocess.js";
import { MLError } from "../errors.js";
import { decodeImage, type DecodeLimits, type DecodePath } from "./decode.js";

export interface PreprocessTask {
  id: number;
  bytes: Uint8Array;
  size: number;
  limits: DecodeLimits;
  /** Allow shrink-on-load for large JPEGs (see decode.ts); false keeps every photo on the Pillow-exact path. */
  shrink: boolean;
}

/** Milliseconds spent in the worker, per stage. */
export interface WorkerTimings {
  decode: number;
  resize: number;
  tensor: number;
}

export type PreprocessReply =
  | { id: number; ok: true; tensor: Float32Array; ms: WorkerTimings; path: DecodePath }
  | { id: number; ok: false; code?: number; message: string };

parentPort!.on("message", async (task: PreprocessTask) => {
  let reply: PreprocessReply;
  try {
    const t0 = performance.now();
    const { image, path } = await decodeImage(task.bytes, task.limits, task.shrink ? { shrinkFor: task.size } : {});
    const t1 = performance.now();
    const fitted = fitToModel(image, task.size);
    const t2 = performance.now();
    const tensor = toChw(fitted);
    const t3 = performance.now();
    reply = { id: task.id, ok: true, tensor, ms: { decode: t1 - t0, resize: t2 - t1, tensor: t3 - t2 }, path };
  } catch (e) {
    reply = e instanceof MLError ? { id: task.id, ok: false, code: e.code, message: e.message } : { id: task.id, ok: false, message: String((e as Error)?.message ?? e) };
  }
  parentPort!.postMessage(reply, reply.ok ? [reply.tensor.buffer as ArrayBuffer] : []);
});

parentPort!.postMessage("ready");
