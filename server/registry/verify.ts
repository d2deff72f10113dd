import { randomUUID } from "node:crypto";
import { decideVerdict, type NoseFeatures } from "../../shared/geometry/index.js";
import { EMBEDDING_DIM } from "../db/migrations.js";
import { invalidRequest } from "../errors.js";
import { throwIfCancelled } from "../observe/request-context.js";
import { validateImageKey, verifyImageKey } from "../storage/keys.js";
import { clientAgreement, type ClientVector } from "./client-parity.js";
import { bestOf, clientDetail, clientVectors, contentTypeOf, embedPhoto, geometryDetail, loadPhoto, type FlowContext } from "./context.js";
import { checkDid, MAX_GUARDIAN_LENGTH, optionalText } from "./input.js";
import { referencesOf } from "./references.js";
import type { EnrolledKeypoints } from "./geometric-check.js";
import type { CompareResult, MatchScores, PhotoInput, VerifyRequest, VerifyResult } from "./types.js";

/**
 * The match's verdict with keypoint geometry behind it: SAME needs the
 * policy's inliers against one of the pet's enrolled photos. Without a
 * geometric check the verdict stays the similarity's.
 */
export async function withGeometry(
  ctx: FlowContext,
  match: MatchScores,
  probe: NoseFeatures | undefined,
  enrolled: Promise<EnrolledKeypoints> | undefined,
): Promise<MatchScores> {
  const geometric = ctx.geometry;
  if (!geometric || !enrolled) return match;
  const evidence = await geometric.compare(probe, await enrolled, geometric.policy.sameInliers);
  return { ...match, geometry: evidence, verdict: decideVerdict(match.similarity, evidence, geometric.policy) };
}

/** verify_{ms}.jpg, unique: monotonic within this process, probed against the store across processes. */
async function storeVerifyShot(ctx: FlowContext, petDid: string, bytes: Uint8Array): Promise<string> {
  let ts = Math.max(ctx.now().getTime(), ctx.shots.lastMs + 1);
  for (let attempt = 0; ; attempt++) {
    const key = verifyImageKey(petDid, ts);
    if (attempt >= 8 || !(await ctx.store.exists(key))) {
      ctx.shots.lastMs = ts;
      throwIfCancelled();
      await ctx.store.put(key, bytes, contentTypeOf(bytes));
      return key;
    }
    ts++;
  }
}

/** Verification shared by verifyPet and approveTransfer; a client vector is checked before the shot is stored. */
export async function matchPet(ctx: FlowContext, petDid: string, photo: PhotoInput, client: ClientVector[] = []) {
  const refs = await referencesOf(ctx, petDid);
  const { bytes, key } = await loadPhoto(ctx, photo, "photo", petDid);
  // The enrolled keypoints load while the photo is embedded and its keypoints found.
  const enrolled = ctx.geometry?.enrolledOf(refs.imageKeys);
  enrolled?.catch(() => {}); // awaited below; a failure is reported there, not as unhandled
  const [probe, features] = await Promise.all([embedPhoto(ctx, bytes, "photo"), ctx.geometry?.photo(bytes)]);
  const agreement = client.length > 0 ? clientAgreement(client, [probe], ["photo"], ctx.parityBound) : undefined;
  const match = await withGeometry(ctx, bestOf(ctx, probe, refs.vectors), features, enrolled);
  const storedImageKey = key === undefined ? await storeVerifyShot(ctx, petDid, bytes) : "";
  return { match, imageKey: key, storedImageKey, agreement };
}

/** 1:1: a new photo against a registered pet, audited as kind 'verify'; a photo given as bytes is stored as a verify shot. */
export async function verifyPet(ctx: FlowContext, req: VerifyRequest): Promise<VerifyResult> {
  const petDid = checkDid(req?.petDid);
  const requestedBy = optionalText(req?.requestedBy, "requested by", MAX_GUARDIAN_LENGTH);
  const client = clientVectors(ctx, req?.clientEmbedding ? [req.clientEmbedding] : [], [""]);
  const { match, imageKey: key, storedImageKey, agreement } = await matchPet(ctx, petDid, req?.photo, client);
  const verificationId = randomUUID();
  await ctx.registry.addAudit({
    kind: "verify",
    petDid,
    requestedBy,
    similarity: match.similarity,
    cosine: match.cosine,
    verdict: match.verdict,
    modelVersion: ctx.modelVersion,
    detail: { verificationId, imageKey: key ?? storedImageKey, ...geometryDetail(match.geometry), ...clientDetail(agreement) },
  });
  return {
    ...match,
    storedImageKey,
    verificationId,
    modelVersion: ctx.modelVersion,
    vectorSize: EMBEDDING_DIM,
    ...(agreement ? { clientAgreement: agreement.agreement } : {}),
  };
}

/** An image already in the store against a registered pet: scores only, nothing audited or stored. */
export async function compareWithStoredImage(ctx: FlowContext, req: { imageKey: string; petDid: string }): Promise<CompareResult> {
  const petDid = checkDid(req?.petDid);
  const key = validateImageKey(req?.imageKey, petDid);
  const refs = await referencesOf(ctx, petDid);
  const bytes = await ctx.store.get(key);
  if (bytes === undefined) throw invalidRequest(`image not found: ${key}`);
  // The stored image against the other enrolled photos: against itself it would match every keypoint.
  const enrolled = ctx.geometry?.enrolledOf(refs.imageKeys.filter((k) => k !== key));
  enrolled?.catch(() => {}); // awaited below
  const [probe, features] = await Promise.all([embedPhoto(ctx, bytes, "image"), ctx.geometry?.photo(bytes)]);
  return { ...(await withGeometry(ctx, bestOf(ctx, probe, refs.vectors), features, enrolled)), vectorSize: probe.length };
}
