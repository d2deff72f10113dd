/**
 * The shipped model: its card's accuracy figures next to what one image
 * costs to embed (batch 1, onnxruntime-node as the server configures it,
 * on 1 and 2 intra-op threads).
 */
import { readFileSync, statSync } from "node:fs";
import * as ort from "onnxruntime-node";
import { loadConfig } from "../server/config.js";
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
  };
}
