import type { Worker } from "node:worker_threads";
import { startWorker } from "../start-worker.js";
import { featureSetId, type GeometricMatch, type GeometryParams, type NoseFeatures } from "../../shared/geometry/index.js";
import { internalError, invalidImage } from "../errors.js";
import { addStage, currentContext, type Stage } from "../observe/request-context.js";
import type { GeometryReply, GeometryTask } from "./geometry-worker.js";
import type { DecodeLimits } from "../image/decode.js";

/** Keypoints and matching, in a worker thread of their own (see geometry-worker.ts). */
export interface GeometryService {
  readonly params: GeometryParams;
  /** Names what stored feature files hold; files of another id are recomputed. */
  readonly featureSetId: string;
  /** A photo's keypoints; rejects with INVALID_IMAGE when it cannot be decoded. */
  features(bytes: Uint8Array): Promise<NoseFeatures>;
  /** The probe against each reference, in order. */
  match(probe: NoseFeatures, references: NoseFeatures[]): Promise<GeometricMatch[]>;
  close(): Promise<void>;
}

type Task = GeometryTask extends infer T ? (T extends GeometryTask ? Omit<T, "id"> : never) : never;
type Pending = { resolve: (r: GeometryReply & { ok: true }) => void; reject: (e: Error) => void };

/**
 * One worker, started on first use, tasks in arrival order. A worker that
 * dies fails its tasks with an internal error and is replaced on the next
 * call; one that cannot start at all fails every call the same way.
 */
export function createGeometryService(params: GeometryParams, limits: DecodeLimits): GeometryService {
  let worker: Worker | undefined;
  let ready: Promise<Worker> | undefined;
  const pending = new Map<number, Pending>();
  let nextId = 1;
  let closed = false;

  const failAll = (e: Error) => {
    for (const p of pending.values()) p.reject(e);
    pending.clear();
  };

  const start = (): Promise<Worker> => {
    ready ??= new Promise<Worker>((resolve, reject) => {
      const w = startWorker(import.meta.url, "geometry-worker");
      worker = w;
      let up = false;
      w.on("message", (m: GeometryReply | "ready") => {
        if (m === "ready") {
          up = true;
          return resolve(w);
        }
        const p = pending.get(m.id);
        if (!p) return;
        pending.delete(m.id);
        if (m.ok) p.resolve(m);
        else
          p.reject(
            m.decode
              ? invalidImage(`image cannot be decoded for keypoints: ${m.message}`)
              : internalError(`keypoint geometry failed: ${m.message}`),
          );
      });
      w.on("error", (e) => {
        failAll(internalError(`geometry worker crashed: ${e.message}`, e));
        if (!up) reject(internalError(`geometry worker cannot start: ${e.message}`, e));
      });
      w.on("exit", () => {
        failAll(internalError("geometry worker exited"));
        if (!up) reject(internalError("geometry worker exited before it was ready"));
        if (worker === w) {
          worker = undefined;
          // Started again on the next call, unless it never came up.
          if (up) ready = undefined;
        }
      });
      // Idle, it must not keep the process alive; pending calls hold it (ref below).
      w.unref();
    });
    return ready;
  };

  const call = async <R extends GeometryReply & { ok: true }>(task: Task, stage: Stage): Promise<R> => {
    if (closed) throw internalError("geometry service is closed");
    const w = await start();
    const id = nextId++;
    const ctx = currentContext();
    const t0 = performance.now();
    w.ref();
    try {
      const reply = await new Promise<GeometryReply & { ok: true }>((resolve, reject) => {
        pending.set(id, { resolve, reject });
        w.postMessage({ ...task, id } as GeometryTask);
      });
      addStage(stage, performance.now() - t0, ctx);
      return reply as R;
    } finally {
      if (pending.size === 0) w.unref();
    }
  };

  return {
    params,
    featureSetId: featureSetId(params),
    async features(bytes) {
      const r = await call<GeometryReply & { ok: true; features: NoseFeatures }>({ op: "features", bytes, params, limits }, "keypoints");
      return r.features;
    },
    async match(probe, references) {
      if (references.length === 0) return [];
      const r = await call<GeometryReply & { ok: true; matches: GeometricMatch[] }>(
        { op: "match", probe, references, params },
        "geometry_match",
      );
      return r.matches;
    },
    async close() {
      closed = true;
      failAll(internalError("geometry service is closed"));
      await worker?.terminate();
    },
  };
}
