/**
 * Worker side of the preprocessing pool: bytes in, CHW tensor out. The
 * Pillow-exact resize is CPU-bound JavaScript; running it here keeps the
 * event loop free for the network and lets every core resize at once.
 */
import { parentPort } from "node:worker_threads";
import { MLError } from "../errors.js";
import type { DecodeLimits, DecodePath } from "./decode.js";
import { preprocessPhoto, type PhotoTimings } from "./preprocess-photo.js";

export interface PreprocessTask {
  id: number;
  bytes: Uint8Array;
  size: number;
  limits: DecodeLimits;
  /** Allow shrink-on-load for large JPEGs (see decode.ts); false keeps every photo on the Pillow-exact path. */
  shrink: boolean;
}

export type PreprocessReply =
  | { id: number; ok: true; tensor: Float32Array; ms: PhotoTimings; path: DecodePath }
  | { id: number; ok: false; code?: number; message: string };

parentPort!.on("message", async (task: PreprocessTask) => {
  let reply: PreprocessReply;
  try {
    reply = { id: task.id, ok: true, ...(await preprocessPhoto(task.bytes, task.size, task.limits, task.shrink)) };
  } catch (e) {
    reply =
      e instanceof MLError
        ? { id: task.id, ok: false, code: e.code, message: e.message }
        : { id: task.id, ok: false, message: String((e as Error)?.message ?? e) };
  }
  parentPort!.postMessage(reply, reply.ok ? [reply.tensor.buffer as ArrayBuffer] : []);
});

parentPort!.postMessage("ready");
