/**
 * The shipped model: its card's accuracy figures next to what one image
 * costs to embed (batch 1, onnxruntime-node as the server configures it,
 * on 1 and 2 intra-op threads).
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import * as ort from "onnxruntime-node";
import { loadConfig } from "../server/config.js";
import { sessionConfig } from "../server/model/embedder.js";
import { summarize, type Summary } from "./stats.js";

export interface CardFigures {
  set: string;
  data: string;
  auc?: number;
  eer?: number;
  tarAtFar1e3?: number;
  tarAtFar1e4?: number;
  rank1?: number;
}

export interface ModelResult {
  file: string;
  version: string;
  fileMB: number;
  parameters?: number;
  inference: Array<{ threads: number; ms: Summary }>;
  card: CardFigures[];
  /** The variants `npm run model:quantize` wrote, timed in turns with the float model (2 threads, batch 1). */
  variants?: VariantFigures[];
}

export interface VariantFigures {
  precision: string;
  file: string;
  mb: number;
  cosineMean: number;
  cosineP1: number;
  cosineMin: number;
  /** Nodes the tool left float in the int8 variant. */
  floatNodes?: string[];
  ms: Summary;
  fp32Ms: Summary;
}

/** Batch-1 runs of the float model and each variant in turns, so all see the same moments of a shared machine. */
async function variantCost(modelPath: string, reps: number): Promise<VariantFigures[] | undefined> {
  const recordPath = modelPath.replace(/\.onnx$/, ".variants.json");
  if (!existsSync(recordPath)) return undefined;
  const record = JSON.parse(readFileSync(recordPath, "utf8")) as {
    int8_float_nodes?: string[];
    variants: Record<string, { file: string; mb: number; cosine_mean: number; cosine_p1: number; cosine_min: number }>;
  };
  const dir = path.dirname(modelPath);
  const open = (file: string) =>
    ort.InferenceSession.create(file, {
      graphOptimizationLevel: "all",
      executionProviders: ["cpu"],
      intraOpNumThreads: 2,
      extra: sessionConfig(),
    });
  const names = Object.keys(record.variants).filter((k) => existsSync(path.join(dir, record.variants[k].file)));
  const sessions = [await open(modelPath), ...(await Promise.all(names.map((k) => open(path.join(dir, record.variants[k].file)))))];
  const input = new Float32Array(3 * 224 * 224).map((_, i) => ((i * 7919) % 256) / 255);
  const times = sessions.map(() => [] as number[]);
  for (let r = -3; r < reps; r++)
    for (const [i, s] of sessions.entries()) {
      const t = performance.now();
      await s.run({ [s.inputNames[0]]: new ort.Tensor("float32", input, [1, 3, 224, 224]) });
      if (r >= 0) times[i].push(performance.now() - t);
    }
  await Promise.all(sessions.map((s) => s.release()));
  return names.map((k, i) => {
    const v = record.variants[k];
    return {
      precision: k,
      file: v.file,
      mb: v.mb,
      cosineMean: v.cosine_mean,
      cosineP1: v.cosine_p1,
      cosineMin: v.cosine_min,
      floatNodes: k === "int8" ? record.int8_float_nodes : undefined,
      ms: summarize(times[i + 1]),
      fp32Ms: summarize(times[0]),
    };
  });
}

type Eval = { data?: string; auc?: number; eer?: number; rank1?: number; tar_at_far?: Record<string, number> };

/** Every evaluation block in the card: the main one and its named variants (re-capture, blurry, ...). */
function cardFigures(card: { evaluation?: Eval & Record<string, unknown> }): CardFigures[] {
  const ev = card.evaluation;
  if (!ev) return [];
  const one = (set: string, e: Eval): CardFigures => ({
    set,
    data: String(e.data ?? ""),
    auc: e.auc,
    eer: e.eer,
    tarAtFar1e3: e.tar_at_far?.["1e-3"],
    tarAtFar1e4: e.tar_at_far?.["1e-4"],
    rank1: e.rank1,
  });
  const out = [one("held-out", ev)];
  for (const [k, v] of Object.entries(ev)) if (v && typeof v === "object" && "auc" in (v as object)) out.push(one(k, v as Eval));
  return out;
}

export async function modelCost(reps: number): Promise<ModelResult> {
  const config = loadConfig({});
  const card = JSON.parse(readFileSync(config.modelCardPath!, "utf8"));
  const input = new Float32Array(3 * 224 * 224).map((_, i) => ((i * 7919) % 256) / 255);
  const inference: ModelResult["inference"] = [];
  for (const threads of [1, 2]) {
    const session = await ort.InferenceSession.create(config.modelPath, {
      graphOptimizationLevel: "all",
      executionProviders: ["cpu"],
      intraOpNumThreads: threads,
    });
    const feeds = { [session.inputNames[0]]: new ort.Tensor("float32", input, [1, 3, 224, 224]) };
    for (let i = 0; i < 3; i++) await session.run(feeds);
    const ms: number[] = [];
    for (let i = 0; i < reps; i++) {
      const t = performance.now();
      await session.run(feeds);
      ms.push(performance.now() - t);
    }
    await session.release();
    inference.push({ threads, ms: summarize(ms) });
  }
  return {
    file: "models/nose-embedder.onnx",
    version: String(card.version),
    fileMB: statSync(config.modelPath).size / 1e6,
    parameters: card.training?.parameters,
    inference,
    card: cardFigures(card),
    variants: await variantCost(config.modelPath, reps),
  };
}
