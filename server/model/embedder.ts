import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { inferenceError } from "../errors.js";
import { openInferenceSession, type InferenceSession } from "./inference-session.js";
import { createMicroBatcher } from "./micro-batcher.js";

export const EMBEDDING_SIZE = 512;

export interface EmbedderOptions {
  modelPath: string;
  inputSize: number;
  intraOpThreads: number;
  /** Intra-op threads spin while waiting for work (ONNX Runtime's default) instead of sleeping; default true. */
  spinning?: boolean;
  batchWindowMs: number;
  maxBatch: number;
}

export interface Embedder {
  readonly inputSize: number;
  readonly dynamicBatch: boolean;
  /** First 12 hex of the model file's SHA-256: names the exact weights in logs and audit rows. */
  readonly fingerprint: string;
  /** The model file's SHA-256, hex. */
  readonly sha256: string;
  /** The model file's bytes as loaded: what the server runs, served to clients that embed on their device. */
  readonly modelBytes: Uint8Array;
  /** One CHW float32 tensor (3*size*size) in, one raw model output (512) out. */
  embed(chw: Float32Array): Promise<Float32Array>;
  close(): Promise<void>;
}

type Dim = number | string;

/**
 * Checks the model against the service's tensor contract and says exactly
 * what differs: (N,3,S,S) float32 in, (N,512) float32 out.
 */
export function checkContract(
  input: { name: string; type?: string; shape?: readonly Dim[] },
  output: { name: string; type?: string; shape?: readonly Dim[] },
  inputSize: number,
): { dynamicBatch: boolean } {
  const problems: string[] = [];
  const fmt = (s: readonly Dim[]) => `(${s.map(String).join(",")})`;
  const want = [3, inputSize, inputSize];
  if (input.type && input.type !== "float32") problems.push(`input '${input.name}' has type ${input.type}, expected float32`);
  if (input.shape && input.shape.length > 0) {
    if (input.shape.length !== 4)
      problems.push(`input '${input.name}' has shape ${fmt(input.shape)}, expected (N,3,${inputSize},${inputSize})`);
    else
      want.forEach((w, i) => {
        const got = input.shape![i + 1];
        if (typeof got === "number" && got !== w) {
          problems.push(
            `input '${input.name}' has shape ${fmt(input.shape!)}, expected (N,3,${inputSize},${inputSize})` +
              (i > 0 ? ` (MODEL_INPUT_SIZE=${inputSize}; set it to the model's size ${got})` : ""),
          );
        }
      });
  }
  if (output.type && output.type !== "float32") problems.push(`output '${output.name}' has type ${output.type}, expected float32`);
  if (output.shape && output.shape.length > 0) {
    const last = output.shape[output.shape.length - 1];
    if (output.shape.length !== 2 || (typeof last === "number" && last !== EMBEDDING_SIZE)) {
      problems.push(`output '${output.name}' has shape ${fmt(output.shape)}, expected (N,${EMBEDDING_SIZE})`);
    }
  }
  if (problems.length) throw new Error(`model does not fit the service contract: ${[...new Set(problems)].join("; ")}`);
  const batch = input.shape?.[0];
  return { dynamicBatch: input.shape === undefined || input.shape.length === 0 || typeof batch !== "number" };
}

/**
 * The ONNX Runtime settings the server runs a model with, beyond the level and the threads.
 *
 * - Whether the intra-op threads spin while they wait for the next operator's
 *   work or sleep. Spinning is ONNX Runtime's default, and what a lone call
 *   wants: on a quiet 2-core machine, with 15 ms between runs as a server
 *   has, batch-1 runs took 5.5 instead of 7.0 ms (int8) and 8.9 instead of
 *   11.5 ms (fp32) p50, the price of waking sleeping threads at every
 *   operator. Where the cores are shared with other work that cannot wait,
 *   MODEL_THREAD_SPINNING=false gives the CPU back between operators.
 * - No QDQ propagation. The int8 variant (models/train/quantize.py) already
 *   quantizes every Conv and Add input where it is needed; the one thing the
 *   propagation does there is lift the first QuantizeLinear above the
 *   MaxPool after the float stem, which turns that MaxPool into a uint8 one
 *   in NCHW, a generic kernel: 0.9 ms of a 6 ms run, where the float MaxPool
 *   in ONNX Runtime's blocked layout takes 0.04 ms. A MaxPool commutes with
 *   quantization (both are monotone), so the embeddings are the same bits
 *   either way (session-config.test.ts); batch-1 p50 went from 6.8-7.8 to
 *   4.7-6.9 ms in separate processes on the 2-core machine. A model without
 *   QuantizeLinear/DequantizeLinear nodes has nothing to propagate.
 */
export function sessionConfig(spinning = true): {
  session: { intra_op: { allow_spinning: "0" | "1" } };
  optimization: { disable_specified_optimizers: string };
} {
  return {
    session: { intra_op: { allow_spinning: spinning ? "1" : "0" } },
    optimization: { disable_specified_optimizers: "QDQPropagationTransformer" },
  };
}

export async function loadEmbedder(opts: EmbedderOptions): Promise<Embedder> {
  const bytes = await readFile(opts.modelPath).catch((e: NodeJS.ErrnoException) => {
    throw new Error(
      e.code === "ENOENT"
        ? `model file not found: ${opts.modelPath} (set MODEL_PATH)`
        : `cannot read model ${opts.modelPath}: ${e.message}`,
    );
  });
  const sha256 = createHash("sha256").update(bytes).digest("hex");
  const fingerprint = sha256.slice(0, 12);
  let session: InferenceSession;
  try {
    session = await openInferenceSession(bytes, {
      graphOptimizationLevel: "all",
      executionProviders: ["cpu"],
      ...(opts.intraOpThreads > 0 ? { intraOpNumThreads: opts.intraOpThreads } : {}),
      extra: sessionConfig(opts.spinning),
    });
  } catch (e) {
    throw new Error(`cannot load ONNX model ${path.basename(opts.modelPath)}: ${(e as Error).message}`);
  }
  if (session.inputNames.length !== 1 || session.outputNames.length < 1) {
    await session.close();
    throw new Error(
      `model must have exactly one input and at least one output, has inputs [${session.inputNames}] outputs [${session.outputNames}]`,
    );
  }
  let dynamicBatch: boolean;
  try {
    ({ dynamicBatch } = checkContract(session.input, session.output, opts.inputSize));
  } catch (e) {
    await session.close();
    throw e;
  }
  const inputName = session.inputNames[0];
  const outputName = session.outputNames[0];
  const per = 3 * opts.inputSize * opts.inputSize;

  const runBatch = async (items: Float32Array[]): Promise<Float32Array[]> => {
    const n = items.length;
    let out: { type: string; dims: number[]; data: Float32Array };
    try {
      out = await session.run(inputName, outputName, items, [n, 3, opts.inputSize, opts.inputSize]);
    } catch (e) {
      throw inferenceError(`model inference failed: ${(e as Error).message}`, e);
    }
    const flat = out.data as Float32Array;
    if (out.type !== "float32" || flat.length !== n * EMBEDDING_SIZE) {
      throw inferenceError(`model returned ${out.type} tensor of shape (${out.dims.join(",")}), expected (${n},${EMBEDDING_SIZE}) float32`);
    }
    const result: Float32Array[] = [];
    for (let i = 0; i < n; i++) {
      const v = flat.slice(i * EMBEDDING_SIZE, (i + 1) * EMBEDDING_SIZE);
      if (!v.every(Number.isFinite)) throw inferenceError("model returned a non-finite embedding");
      result.push(v);
    }
    return result;
  };

  const batched = createMicroBatcher<Float32Array, Float32Array>({
    windowMs: opts.batchWindowMs,
    maxBatch: dynamicBatch ? opts.maxBatch : 1,
    run: runBatch,
  });

  return {
    inputSize: opts.inputSize,
    dynamicBatch,
    fingerprint,
    sha256,
    modelBytes: bytes,
    embed: (chw) => {
      if (chw.length !== per) return Promise.reject(inferenceError(`input tensor has ${chw.length} values, expected ${per}`));
      return batched(chw);
    },
    close: () => session.close(),
  };
}
