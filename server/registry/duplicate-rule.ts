import type { GeometryEvidence, NoseFeatures } from "../../shared/geometry/index.js";
import { SAME_THRESHOLD } from "../../shared/similarity.js";
import { scored, type FlowContext } from "./context.js";
import { DuplicatePetError } from "./errors.js";
import type { RegistryReader } from "./registry.js";
import type { DuplicateReview, PhotoMatch } from "./types.js";

/** The best geometric support any new photo has against an enrolled pet (undefined without geometry). */
async function duplicateGeometry(
  ctx: FlowContext,
  petDid: string,
  features: Array<NoseFeatures | undefined>,
  memo: Map<string, GeometryEvidence>,
) {
  const geometric = ctx.geometry;
  if (!geometric) return undefined;
  const known = memo.get(petDid);
  if (known) return known;
  if (features.every((f) => f === undefined)) {
    // Nothing to compare: the similarity decides, as without geometry.
    return { checked: false as const, reason: "no keypoints could be found in the new photos" };
  }
  // The pet's enrolled keypoints are loaded once and every new photo is matched against them.
  const enrolled = await geometric.enrolledOf((await ctx.registry.embeddingsOf(petDid)).map((r) => r.imageKey));
  let best: GeometryEvidence = { checked: false, reason: "reason" in enrolled ? enrolled.reason : "no keypoints" };
  for (const f of features) {
    const e = await geometric.compare(f, enrolled, geometric.policy.duplicateInliers);
    if (!e.checked) break; // the pet's photos cannot back a decision: the same for every new photo
    if (!best.checked || e.inliers > best.inliers) best = e;
  }
  memo.set(petDid, best);
  return best;
}

/**
 * The 1:N duplicate rule. Throws DuplicatePetError when every new photo's
 * best match is the same enrolled pet at >= the duplicate similarity and,
 * with geometry, some new photo shares the policy's duplicate inliers with
 * that pet's enrolled photos; otherwise returns the review to record when
 * some photo's best match reaches SAME. `evidence` keeps the geometry found
 * per pet, so the check repeated under the registration lock does not redo it.
 */
export async function checkNotRegistered(
  ctx: FlowContext,
  reader: RegistryReader,
  embeddings: Float32Array[],
  ownDid: string,
  features: Array<NoseFeatures | undefined> = [],
  evidence = new Map<string, GeometryEvidence>(),
): Promise<DuplicateReview | undefined> {
  // The DID hashes the template; an existing row for it is the same nose even if the search missed it.
  if (await reader.findPet(ownDid)) throw new DuplicatePetError(ownDid, 1);
  const matches: PhotoMatch[] = [];
  for (let i = 0; i < embeddings.length; i++) {
    let best: { petDid: string; similarity: number; cosine: number } | undefined;
    for (const n of await reader.nearestPets(embeddings[i], 3, ctx.modelVersion)) {
      const s = scored(ctx, embeddings[i], n.embedding);
      if (!best || s.cosine > best.cosine) best = { petDid: n.petDid, similarity: s.similarity, cosine: s.cosine };
    }
    if (best) matches.push({ photo: i + 1, petDid: best.petDid, similarity: best.similarity });
  }
  if (matches.length === 0) return undefined;
  const lowest = Math.min(...matches.map((m) => m.similarity));
  if (matches.length === embeddings.length && matches.every((m) => m.petDid === matches[0].petDid) && lowest >= ctx.duplicateAt) {
    const geometry = await duplicateGeometry(ctx, matches[0].petDid, features, evidence);
    if (!geometry?.checked || geometry.supported) throw new DuplicatePetError(matches[0].petDid, lowest, ctx.duplicateAt);
    // The embedding says duplicate, the keypoints do not: registered, and recorded for review below.
    ctx.log("register.duplicate_without_geometry", {
      candidatePetDid: matches[0].petDid,
      similarity: lowest,
      inliers: geometry.inliers,
      required: geometry.required,
    });
  }
  const top = matches.reduce((a, b) => (b.similarity > a.similarity ? b : a));
  if (top.similarity < SAME_THRESHOLD) return undefined;
  return { petDid: top.petDid, similarity: top.similarity, matches };
}
