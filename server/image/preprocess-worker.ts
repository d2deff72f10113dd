/**
 * Worker side of the preprocessing pool: bytes in, CHW tensor out. The
 * Pillow-exact resize is CPU-bound JavaScript; running it here keeps the
 * event loop free for the network and lets every core resize at once.
 */
import { parentPort } from "node:worker_threads";
import { toModelInput } from "../../shared/preprocess.js";
import { MLError } from "../errors.js";
import { decodeImage, type DecodeLimits } from "./decode.js";

export interface PreprocessTask {
  id: number;
  bytes: Uint8Array;
  size: number;
  limits: DecodeLimits;
}

export type PreprocessReply =
  | { id: number; ok: true; tensor: Float32Array }
  | { id: number; ok: false; code?: number; message: string };

parentPort!.on("message", async (task: PreprocessTask) => {
  let reply: PreprocessReply;
  try {
    const { image } = await decodeImage(task.bytes, task.limits);
    reply = { id: task.id, ok: true, tensor: toModelInput(image, task.size) };
  } catch (e) {
    reply = e instanceof MLError ? { id: task.id, ok: false, code: e.code, message: e.message } : { id: task.id, ok: false, message: String((e as Error)?.message ?? e) };
  }
  parentPort!.postMessage(reply, reply.ok ? [reply.tensor.buffer as ArrayBuffer] : []);
});

parentPort!.postMessage("ready");
