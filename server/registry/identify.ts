import { decideVerdict, type NoseFeatures } from "../../shared/geometry/index.js";
import { invalidRequest } from "../errors.js";
import { clientAgreement } from "./client-parity.js";
import { clientDetail, clientVectors, embedPhoto, loadPhoto, refuseIfSuperseded, scored, type FlowContext } from "./context.js";
import { DEFAULT_TOP_K, MAX_TOP_K, shown } from "./input.js";
import type { IdentifyRequest, IdentifyResult, PetMatch } from "./types.js";

/** 1:N: the shortlist's first candidates by cosine whose geometry is checked (two matches per candidate). */
export const IDENTIFY_GEOMETRY_CANDIDATES = 10;

/**
 * 1:N with geometry: the first candidates by cosine are checked against
 * their enrolled photos and take the verdict it gives; those with
 * geometric support come first. A 1:N SAME is never the cosine's alone.
 */
async function rerankWithGeometry(ctx: FlowContext, shortlist: PetMatch[], probe: NoseFeatures | undefined): Promise<PetMatch[]> {
  const geometric = ctx.geometry;
  if (!geometric) return shortlist;
  // The candidates' enrolled photos are looked up in one query, not one per
  // candidate at once: a call then holds at most one database connection at a
  // time, so a load of N calls needs at most N pooled connections.
  const keysOf = await ctx.registry.imageKeysOf(shortlist.slice(0, IDENTIFY_GEOMETRY_CANDIDATES).map((m) => m.petDid));
  const checked = await Promise.all(
    shortlist.map(async (m, i) => {
      if (i >= IDENTIFY_GEOMETRY_CANDIDATES) {
        // Not checked: no SAME on the cosine alone.
        return { ...m, verdict: m.verdict === "SAME" ? ("REVIEW" as const) : m.verdict };
      }
      const keys = keysOf.get(m.petDid) ?? [];
      const evidence = await geometric.againstEnrolled(probe, keys, geometric.policy.sameInliers);
      return { ...m, geometry: evidence, verdict: decideVerdict(m.similarity, evidence, geometric.policy) };
    }),
  );
  const supported = (m: PetMatch) => (m.geometry?.checked && m.geometry.supported ? 1 : 0);
  return checked.sort((a, b) => supported(b) - supported(a) || b.cosine - a.cosine || (a.petDid < b.petDid ? -1 : 1));
}

/** 1:N: the registered pets nearest a new photo, best first, audited as kind 'identify'. */
export async function identifyPet(ctx: FlowContext, req: IdentifyRequest): Promise<IdentifyResult> {
  const { registry, modelVersion } = ctx;
  const topK = req?.topK === undefined || req.topK === 0 ? DEFAULT_TOP_K : req.topK;
  if (!Number.isInteger(topK) || topK < 1 || topK > MAX_TOP_K) {
    throw invalidRequest(`topK must be an integer from 1 to ${MAX_TOP_K}, got ${shown(req?.topK)}`);
  }
  const minSimilarity = req?.minSimilarity ?? 0;
  if (!Number.isFinite(minSimilarity) || minSimilarity < 0 || minSimilarity > 1) {
    throw invalidRequest(`minSimilarity must lie in [0, 1], got ${shown(req?.minSimilarity)}`);
  }
  const client = clientVectors(ctx, req?.clientEmbedding ? [req.clientEmbedding] : [], [""]);
  await refuseIfSuperseded(ctx, registry);
  const { bytes } = await loadPhoto(ctx, req?.photo, "photo");
  const [probe, features] = await Promise.all([embedPhoto(ctx, bytes, "photo"), ctx.geometry?.photo(bytes)]);
  const agreement = client.length > 0 ? clientAgreement(client, [probe], ["photo"], ctx.parityBound) : undefined;
  // The index picks candidates in float32; scores come from the one shared formula.
  const shortlist: PetMatch[] = (await registry.nearestPets(probe, topK, modelVersion))
    .map((n) => ({ petDid: n.petDid, ...scored(ctx, probe, n.embedding) }))
    .filter((m) => m.similarity >= minSimilarity)
    .sort((a, b) => b.cosine - a.cosine || (a.petDid < b.petDid ? -1 : 1));
  const matches = await rerankWithGeometry(ctx, shortlist, features);
  await registry.addAudit({
    kind: "identify",
    petDid: matches[0]?.petDid,
    similarity: matches[0]?.similarity,
    cosine: matches[0]?.cosine,
    verdict: matches[0]?.verdict,
    modelVersion,
    detail: {
      topK,
      minSimilarity,
      matches: matches.map((m) => ({
        petDid: m.petDid,
        similarity: m.similarity,
        ...(m.geometry?.checked ? { inliers: m.geometry.inliers } : {}),
      })),
      ...clientDetail(agreement),
    },
  });
  return { matches, modelVersion, ...(agreement ? { clientAgreement: agreement.agreement } : {}) };
}
