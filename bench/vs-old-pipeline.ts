/**
 * Ours against the old Python pipeline, one client, one photo at a time,
 * per photo size; and where our server's time goes (the nosepaw:rpc
 * channel's stages) next to Pillow's preprocessing time.
 */
import * as grpc from "@grpc/grpc-js";
import { subscribe, unsubscribe } from "node:diagnostics_channel";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import * as ort from "onnxruntime-node";
import { sessionConfig } from "../server/model/embedder.js";
import { startApp } from "../server/app.js";
import { loadConfig } from "../server/config.js";
import { createLogger } from "../server/log.js";
import { STAGES, type RpcRecord, type Stage } from "../server/observe/request-context.js";
import { gatewayClient } from "../test/support/grpc-client.js";
import { extractNoseVector, waitServing } from "./grpc-call.js";
import { oldPipelineUnavailable, startOldPipeline } from "./old-pipeline/start.js";
import type { PhotoSet } from "./photos.js";
import { median, summarize, type Summary } from "./stats.js";

/** Goals for ours/old at p50, by photo label. */
export const RATIO_GOALS: Record<string, number> = { "224x224": 1.0, "1080x1080": 0.7, "4032x3024": 0.5 };

export interface SizeResult {
  label: string;
  jpegBytes: number[];
  ours: Summary;
  /** Old pipeline end to end: its gRPC round trip plus the same engine's inference on its tensor, call by call. */
  old?: Summary;
  oldGrpc?: Summary;
  oldInference?: Summary;
  /** Pillow's decode..CHW copy, perf_counter inside the Python server. */
  pillowPreprocess?: Summary;
  ratioP50?: number;
  ratioP95?: number;
  ratioGoal: number;
  /** record.path of our server's calls, counted; empty when the server does not report one. */
  paths: Record<string, number>;
  /** Medians over the calls, ms, from nosepaw:rpc. */
  stagesMedian: Partial<Record<Stage, number>>;
  serverMsMedian: number;
  outsideInferenceMedian: number;
  outsideGoalMs: number | undefined;
  outsideGoalText: string;
}

export interface VsOldResult {
  calls: number;
  intraOpThreads: number;
  preprocessWorkers: number;
  maxBatch: number;
  oldPipeline: string;
  sizes: SizeResult[];
}

type OurRecord = RpcRecord & { path?: string };

export async function vsOldPipeline(photos: PhotoSet[], calls: number): Promise<VsOldResult> {
  const dataDir = mkdtempSync(path.join(tmpdir(), "nosepaw-bench-"));
  const config = loadConfig({ GRPC_PORT: "0", GRPC_HOST: "127.0.0.1", DATA_DIR: dataDir, LOG_LEVEL: "error" });
  const app = await startApp(config, createLogger("error"));
  const ours = gatewayClient(`127.0.0.1:${app.port}`);
  const records = new Map<string, OurRecord>();
  const onRecord = (m: unknown) => {
    const r = m as OurRecord;
    if (r.method === "ExtractNoseVector") records.set(r.id, r);
  };
  subscribe("nosepaw:rpc", onRecord);

  const unavailable = oldPipelineUnavailable();
  const old = unavailable ? undefined : await startOldPipeline();
  const oldClient = old && gatewayClient(old.address);
  // The old server ran this model in ONNX Runtime; Debian has no Python
  // build of it, so the same engine runs here, as our server configures it.
  const session = await ort.InferenceSession.create(config.modelPath, {
    graphOptimizationLevel: "all",
    executionProviders: ["cpu"],
    ...(config.intraOpThreads > 0 ? { intraOpNumThreads: config.intraOpThreads } : {}),
    // Configured as our server configures its session.
    extra: sessionConfig(config.modelThreadSpinning),
  });
  const inputName = session.inputNames[0];
  try {
    await waitServing(ours);
    const sizes: SizeResult[] = [];
    for (const set of photos) {
      // The old pipeline's own tensor of each photo, for its inference time.
      const tensors: Float32Array[] = [];
      if (oldClient) {
        const asTensor = new grpc.Metadata();
        asTensor.set("x-return-tensor", "1");
        for (const jpeg of set.jpegs) {
          const { res } = await extractNoseVector(oldClient, jpeg, asTensor);
          if (!res.success || res.vector.length !== 3 * 224 * 224)
            throw new Error(`old pipeline failed on ${set.label}: ${res.error_message}`);
          tensors.push(Float32Array.from(res.vector));
        }
      }
      const oursMs: number[] = [];
      const oldGrpc: number[] = [];
      const oldInfer: number[] = [];
      const pillow: number[] = [];
      const ids: string[] = [];
      const warmup = 2;
      for (let i = -warmup; i < calls; i++) {
        const k = (i + warmup) % set.jpegs.length;
        const jpeg = set.jpegs[k];
        // Interleaved call by call, so both pipelines see the same moments of a busy machine.
        if (oldClient) {
          const a = await extractNoseVector(oldClient, jpeg);
          if (!a.res.success) throw new Error(`old pipeline failed on ${set.label}: ${a.res.error_message}`);
          const t = performance.now();
          await session.run({ [inputName]: new ort.Tensor("float32", tensors[k], [1, 3, 224, 224]) });
          const inferMs = performance.now() - t;
          if (i >= 0) {
            oldGrpc.push(a.ms);
            oldInfer.push(inferMs);
            pillow.push(Number(a.trailers.get("x-preprocess-ms")[0]));
          }
        }
        const id = `bench-${set.label}-${i}`;
        const meta = new grpc.Metadata();
        meta.set("x-request-id", id);
        const b = await extractNoseVector(ours, jpeg, meta);
        if (!b.res.success || b.res.vector_size !== 512) throw new Error(`our server failed on ${set.label}: ${b.res.error_message}`);
        if (i >= 0) {
          oursMs.push(b.ms);
          ids.push(id);
        }
      }
      await new Promise((r) => setImmediate(r));
      const recs = ids.map((id) => records.get(id)).filter((r): r is OurRecord => r !== undefined);
      const stagesMedian: Partial<Record<Stage, number>> = {};
      for (const s of STAGES) {
        const v = recs.map((r) => r.stages[s]).filter((x): x is number => x !== undefined);
        if (v.length) stagesMedian[s] = median(v);
      }
      const paths: Record<string, number> = {};
      for (const r of recs) if (r.path !== undefined) paths[r.path] = (paths[r.path] ?? 0) + 1;
      const outside = median(recs.map((r) => r.ms - (r.stages.inference ?? 0)));
      const oursS = summarize(oursMs);
      const oldTotal = oldGrpc.map((v, i) => v + oldInfer[i]);
      const oldS = oldClient ? summarize(oldTotal) : undefined;
      const pillowS = oldClient ? summarize(pillow) : undefined;
      const small = set.width * set.height <= 224 * 224;
      sizes.push({
        label: set.label,
        jpegBytes: set.jpegs.map((j) => j.length),
        ours: oursS,
        old: oldS,
        oldGrpc: oldClient ? summarize(oldGrpc) : undefined,
        oldInference: oldClient ? summarize(oldInfer) : undefined,
        pillowPreprocess: pillowS,
        ratioP50: oldS && oursS.p50 / oldS.p50,
        ratioP95: oldS && oursS.p95 / oldS.p95,
        ratioGoal: RATIO_GOALS[set.label] ?? 1,
        paths,
        stagesMedian,
        serverMsMedian: median(recs.map((r) => r.ms)),
        outsideInferenceMedian: outside,
        outsideGoalMs: small ? 1 : pillowS && pillowS.p50 / 2,
        outsideGoalText: small ? "<= 1 ms" : "<= half of Pillow's preprocessing (p50)",
      });
    }
    return {
      calls,
      intraOpThreads: config.intraOpThreads,
      preprocessWorkers: config.preprocessWorkers,
      maxBatch: config.maxBatch,
      oldPipeline: unavailable ? `skipped: ${unavailable}` : "bench/old-pipeline/server.py under /usr/bin/python3 (grpcio, Pillow, numpy)",
      sizes,
    };
  } finally {
    unsubscribe("nosepaw:rpc", onRecord);
    ours.close();
    oldClient?.close();
    await old?.stop();
    await session.release();
    await app.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}
