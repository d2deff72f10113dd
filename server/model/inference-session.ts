import { startWorker } from "../start-worker.js";
import type * as ort from "onnxruntime-node";
import type { InferenceReply, InferenceRequest, InferenceWorkerData, InferenceWorkerReady, TensorInfo } from "./inference-worker.js";

/** An ONNX Runtime session living in its own worker thread (see inference-worker.ts). */
export interface InferenceSession {
  inputNames: string[];
  outputNames: string[];
  input: TensorInfo;
  output: TensorInfo;
  /**
   * Runs the model on `items` laid end to end as one (n, ...) tensor of
   * shape `dims`. The items are copied into an input buffer that travels to
   * the worker and back and is used again by the next run of that size:
   * a run allocates no tensor-sized memory on either side (a fresh 600 KB
   * buffer per call, in two isolates, kept their garbage collectors busy).
   * The caller keeps its items.
   */
  run(
    input: string,
    output: string,
    items: readonly Float32Array[],
    dims: number[],
  ): Promise<{ type: string; dims: number[]; data: Float32Array }>;
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
  // Input buffers back from the worker, by length in floats, for the next run of that size.
  const spare = new Map<number, Float32Array[]>();
  const take = (length: number) => spare.get(length)?.pop() ?? new Float32Array(length);
  const giveBack = (buf: Float32Array) => {
    const list = spare.get(buf.length) ?? [];
    // Runs never overlap (the micro-batcher), so a couple per size is plenty.
    if (list.length < 2) list.push(buf);
    spare.set(buf.length, list);
  };
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
        if (m.input) giveBack(m.input);
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
        run(input, output, items, dims) {
          if (stopped) return Promise.reject(stopped);
          let length = 0;
          for (const t of items) length += t.length;
          const data = take(length);
          let at = 0;
          for (const t of items) {
            data.set(t, at);
            at += t.length;
          }
          return new Promise((res, rej) => {
            const id = nextId++;
            pending.set(id, { resolve: res, reject: rej });
            // Transferred, not cloned; the worker sends it back with the result.
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
