import { startWorker } from "../start-worker.js";
import type * as ort from "onnxruntime-node";
import type { InferenceReply, InferenceRequest, InferenceWorkerData, InferenceWorkerReady, TensorInfo } from "./inference-worker.js";

/** An ONNX Runtime session living in its own worker thread (see inference-worker.ts). */
export interface InferenceSession {
  inputNames: string[];
  outputNames: string[];
  input: TensorInfo;
  output: TensorInfo;
  /** `data` is handed over to the worker (its buffer is detached here): pass a buffer made for this run. */
  run(input: string, output: string, data: Float32Array, dims: number[]): Promise<{ type: string; dims: number[]; data: Float32Array }>;
  close(): Promise<void>;
}

/** Creates the session in a new worker; rejects with ONNX Runtime's message when the model cannot be loaded. */
export function openInferenceSession(bytes: Uint8Array, options: ort.InferenceSession.SessionOptions): Promise<InferenceSession> {
  // The worker gets its own copy: the caller keeps the model's bytes (served to browsers).
  const workerData: InferenceWorkerData = { bytes: new Uint8Array(bytes), options };
  const worker = startWorker(import.meta.url, "inference-worker", { workerData });
  const pending = new Map<
    number,
    { resolve: (r: { type: string; dims: number[]; data: Float32Array }) => void; reject: (e: Error) => void }
  >();
  let nextId = 1;
  let stopped: Error | undefined;
  const failAll = (e: Error) => {
    stopped ??= e;
    for (const p of pending.values()) p.reject(e);
    pending.clear();
  };

  return new Promise((resolve, reject) => {
    worker.on("error", (e) => {
      failAll(new Error(`inference worker crashed: ${e.message}`));
      reject(e);
    });
    worker.on("exit", () => {
      failAll(new Error("inference worker stopped"));
      reject(new Error("inference worker stopped before the model was loaded"));
    });
    worker.on("message", (m: InferenceWorkerReady | InferenceReply) => {
      if (m.kind === "failed") {
        reject(new Error(m.message));
        void worker.terminate();
        return;
      }
      if (m.kind === "result") {
        const p = pending.get(m.id);
        pending.delete(m.id);
        if (!p) return;
        if (m.ok) p.resolve({ type: m.type, dims: m.dims, data: m.data });
        else p.reject(new Error(m.message));
        return;
      }
      resolve({
        inputNames: m.inputNames,
        outputNames: m.outputNames,
        input: m.input,
        output: m.output,
        run(input, output, data, dims) {
          if (stopped) return Promise.reject(stopped);
          return new Promise((res, rej) => {
            const id = nextId++;
            pending.set(id, { resolve: res, reject: rej });
            // The caller's buffer is built for this run alone: hand it over.
            worker.postMessage({ kind: "run", id, input, output, data, dims } satisfies InferenceRequest, [data.buffer as ArrayBuffer]);
          });
        },
        async close() {
          if (stopped) return;
          const exited = new Promise<void>((r) => worker.once("exit", () => r()));
          worker.postMessage({ kind: "close" } satisfies InferenceRequest);
          await Promise.race([exited, new Promise((r) => setTimeout(r, 5000).unref())]);
          await worker.terminate();
        },
      });
    });
  });
}
