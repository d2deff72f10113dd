/**
 * Worker side of the geometric check: photo bytes in, keypoints out; a
 * probe's keypoints against references in, inlier counts out. OpenCV's
 * WebAssembly build runs synchronously for tens of milliseconds per photo,
 * so it lives here, off the event loop, loaded once.
 */
import { parentPort } from "node:worker_threads";
import {
  extractFeatures,
  loadOpenCv,
  matchFeatures,
  type GeometricMatch,
  type GeometryParams,
  type NoseFeatures,
} from "../../shared/geometry/index.js";
import { greyForGeometry } from "./grey.js";
import type { DecodeLimits } from "../image/decode.js";

export type GeometryTask =
  | { id: number; op: "features"; bytes: Uint8Array; params: GeometryParams; limits: DecodeLimits }
  | { id: number; op: "match"; probe: NoseFeatures; references: NoseFeatures[]; params: GeometryParams };

export type GeometryReply =
  | { id: number; ok: true; features: NoseFeatures; ms: number }
  | { id: number; ok: true; matches: GeometricMatch[]; ms: number }
  | { id: number; ok: false; message: string; decode: boolean };

const cv = await loadOpenCv();

parentPort!.on("message", async (task: GeometryTask) => {
  const t0 = performance.now();
  let reply: GeometryReply;
  try {
    if (task.op === "features") {
      let grey;
      try {
        grey = await greyForGeometry(task.bytes, task.params.side, task.limits);
      } catch (e) {
        reply = { id: task.id, ok: false, message: String((e as Error)?.message ?? e), decode: true };
        parentPort!.postMessage(reply);
        return;
      }
      reply = { id: task.id, ok: true, features: extractFeatures(cv, grey, task.params), ms: performance.now() - t0 };
    } else {
      reply = {
        id: task.id,
        ok: true,
        matches: task.references.map((r) => matchFeatures(cv, task.probe, r, task.params)),
        ms: performance.now() - t0,
      };
    }
  } catch (e) {
    reply = { id: task.id, ok: false, message: String((e as Error)?.message ?? e), decode: false };
  }
  parentPort!.postMessage(reply);
});

parentPort!.postMessage("ready");
