import { MLErrorCode } from "../../gen/nose_embedder_pb.js";
import { MLError } from "../errors.js";
import { embedPhoto, type FlowContext } from "./context.js";
import type { EmbeddingRecord } from "./registry.js";
import type { ReembedReport } from "./types.js";

/**
 * Embeddings of different model versions are not comparable: a row from an
 * earlier model is re-embedded from its stored image with the current one
 * (and saved) before use. Rows whose image is gone are left out.
 */
export async function current(ctx: FlowContext, petDid: string, rows: EmbeddingRecord[]): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  const from: string[] = [];
  for (const r of rows) {
    if (r.modelVersion === ctx.modelVersion) {
      out.push(r.embedding);
      continue;
    }
    const fresh = await reembedImage(ctx, petDid, r.imageKey);
    if (fresh) {
      out.push(fresh.embedding);
      if (fresh.written) from.push(r.modelVersion);
    }
  }
  await auditModelChange(ctx, petDid, from);
  return out;
}

/** One 'reembed' audit row per pet whose enrolled photos moved to the running model: the versions they left. */
async function auditModelChange(ctx: FlowContext, petDid: string, from: string[]): Promise<void> {
  if (from.length === 0) return;
  await ctx.registry.addAudit({
    kind: "reembed",
    petDid,
    modelVersion: ctx.modelVersion,
    detail: { images: from.length, fromModelVersions: [...new Set(from)].sort() },
  });
}

/** The image's embedding by the running model; `written` is false when the registry has moved past it (kept in memory only). */
async function reembedImage(
  ctx: FlowContext,
  petDid: string,
  imageKey: string,
): Promise<{ embedding: Float32Array; written: boolean } | undefined> {
  const bytes = await ctx.store.get(imageKey);
  if (bytes === undefined) {
    ctx.log("reembed.missing_image", { petDid, imageKey });
    return undefined;
  }
  const embedding = await embedPhoto(ctx, bytes, imageKey);
  return { embedding, written: await ctx.registry.replaceEmbedding(petDid, imageKey, embedding, ctx.modelVersion) };
}

/** Re-embeds enrolled images left by an earlier model version, with a report; `keepGoing` is asked before each batch (a model reload stops it). */
export async function migrateStale(
  ctx: FlowContext,
  { batch = 32, keepGoing = () => true }: { batch?: number; keepGoing?: () => boolean } = {},
): Promise<ReembedReport> {
  const report: ReembedReport = { embeddings: 0, pets: 0, from: {}, missing: [], superseded: 0 };
  const pets = new Set<string>();
  // Rows that cannot move (image missing, registry moved on) stay stale: skip them on later pages.
  const skipped = new Set<string>();
  while (keepGoing()) {
    const stale = (await ctx.registry.staleEmbeddings(ctx.modelVersion, batch + skipped.size)).filter(
      (s) => !skipped.has(`${s.petDid}\n${s.imageKey}`),
    );
    if (stale.length === 0) break;
    const moved = new Map<string, string[]>();
    for (const s of stale.slice(0, batch)) {
      let fresh: Awaited<ReturnType<typeof reembedImage>>;
      try {
        fresh = await reembedImage(ctx, s.petDid, s.imageKey);
      } catch (e) {
        // A stored photo the model cannot take (corrupt) must not stop the sweep; outages must.
        if (!(e instanceof MLError) || e.code > MLErrorCode.INVALID_REQUEST) throw e;
        ctx.log("reembed.unreadable_image", { petDid: s.petDid, imageKey: s.imageKey, error: e.message });
        fresh = undefined;
      }
      if (!fresh || !fresh.written) {
        skipped.add(`${s.petDid}\n${s.imageKey}`);
        if (!fresh) report.missing.push({ petDid: s.petDid, imageKey: s.imageKey });
        else report.superseded++;
        continue;
      }
      report.embeddings++;
      report.from[s.modelVersion] = (report.from[s.modelVersion] ?? 0) + 1;
      pets.add(s.petDid);
      moved.set(s.petDid, [...(moved.get(s.petDid) ?? []), s.modelVersion]);
    }
    for (const [petDid, from] of moved) await auditModelChange(ctx, petDid, from);
    // The registry moved to a later version: this sweep has nothing left to do.
    if (report.superseded > 0) break;
  }
  report.pets = pets.size;
  return report;
}

/** The same sweep; returns how many embeddings moved. */
export async function reembedStale(ctx: FlowContext, batch = 32): Promise<number> {
  return (await migrateStale(ctx, { batch })).embeddings;
}
