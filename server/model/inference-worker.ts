/**
 * Worker side of the embedder: owns the ONNX Runtime session. onnxruntime-node
 * runs a model synchronously on the calling thread; here that thread is this
 * worker's, so the server's event loop keeps answering, reading requests and
 * collecting the next batch while the model runs.
 */
import { parentPort, workerData } from "node:worker_threads";
import * as ort from "onnxruntime-node";

export interface InferenceWorkerData {
  bytes: Uint8Array;
  options: ort.InferenceSession.SessionOptions;
}

export interface TensorInfo {
  name: string;
  type?: string;
  shape?: (number | string)[];
}

export type InferenceWorkerReady =
  | { kind: "ready"; inputNames: string[]; outputNames: string[]; input: TensorInfo; output: TensorInfo }
  | { kind: "failed"; message: string };

export type InferenceRequest =
  { kind: "run"; id: number; input: string; output: string; data: Float32Array; dims: number[] } | { kind: "close" };

/** `input` is the request's buffer, handed back for the next run. */
export type InferenceReply =
  | { kind: "result"; id: number; ok: true; type: string; dims: number[]; data: Float32Array; input: Float32Array }
  | { kind: "result"; id: number; ok: false; message: string; input: Float32Array };

const port = parentPort!;
const { bytes, options } = workerData as InferenceWorkerData;
const info = (m: ort.InferenceSession.ValueMetadata): TensorInfo =>
  m.isTensor ? { name: m.name, type: m.type, shape: [...m.shape] } : { name: m.name, type: "non-tensor" };

let session: ort.InferenceSession | undefined;
try {
  session = await ort.InferenceSession.create(bytes, options);
  port.postMessage({
    kind: "ready",
    inputNames: [...session.inputNames],
    outputNames: [...session.outputNames],
    input: info(session.inputMetadata[0]),
    output: info(session.outputMetadata[0]),
  } satisfies InferenceWorkerReady);
} catch (e) {
  port.postMessage({ kind: "failed", message: (e as Error).message } satisfies InferenceWorkerReady);
}

port.on("message", async (req: InferenceRequest) => {
  if (req.kind === "close") {
    await session?.release();
    port.close();
    return;
  }
  let reply: InferenceReply;
  try {
    const res = await session!.run({ [req.input]: new ort.Tensor("float32", req.data, req.dims) });
    const out = res[req.output];
    // A copy the worker owns, so it can be handed over without copying again.
    const data = out.type === "float32" ? new Float32Array(out.data as Float32Array) : new Float32Array(0);
    reply = { kind: "result", id: req.id, ok: true, type: out.type, dims: [...out.dims], data, input: req.data };
  } catch (e) {
    reply = { kind: "result", id: req.id, ok: false, message: (e as Error).message, input: req.data };
  }
  const transfer = [req.data.buffer as ArrayBuffer];
  if (reply.ok) transfer.push(reply.data.buffer as ArrayBuffer);
  port.postMessage(reply, transfer);
});
