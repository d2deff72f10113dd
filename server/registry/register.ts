import { petDidFromVector } from "../../shared/did.js";
import type { GeometryEvidence, NoseFeatures } from "../../shared/geometry/index.js";
import { writeNpy } from "../../shared/npy.js";
import { template } from "../../shared/similarity.js";
import { invalidRequest, MLError } from "../errors.js";
import { throwIfCancelled } from "../observe/request-context.js";
import { imageKey, vectorKey } from "../storage/keys.js";
import { clientAgreement } from "./client-parity.js";
import {
  clientDetail,
  clientVectors,
  contentTypeOf,
  embedPhoto,
  errorMessage,
  loadPhoto,
  refuseIfSuperseded,
  scored,
  type FlowContext,
} from "./context.js";
import { checkNotRegistered } from "./duplicate-rule.js";
import { DuplicatePetError, InconsistentPhotosError } from "./errors.js";
import { keepRefusedPhotos } from "./refused-photos.js";
import {
  checkEnrolmentSize,
  consentValue,
  MAX_GUARDIAN_LENGTH,
  MAX_ID_LENGTH,
  MAX_REGISTER_PHOTOS,
  MIN_REGISTER_PHOTOS,
  optionalText,
} from "./input.js";
import type { AuditEntry, PetRecord } from "./registry.js";
import type { DuplicateReview, RegisterRequest, RegisterResult } from "./types.js";

/**
 * Registration write order (why a failure anywhere leaves no half pet):
 *   1. photos are embedded and checked; nothing is written before all pass;
 *   2. objects: image_1.jpg .. image_N.jpg, then vector.npy;
 *   3. the database rows (pet, embeddings, audit) in one transaction, last.
 * A pet exists only once step 3 commits: every lookup goes through the
 * registry first. If an object write fails, the objects this attempt already
 * wrote are deleted (best effort) and the error is returned, retryable. If
 * the database step fails, the objects are left in place, because the commit
 * may have happened with only its acknowledgement lost; a retry rewrites the
 * same keys with the same bytes (the DID is a hash of the template, so the
 * keys do not change) and then either inserts the rows or finds them.
 *
 * Idempotency: with a request id, a repeat of a registration that already
 * committed returns the stored result without re-embedding (the id is the
 * caller's promise that it is the same request). Without one, registering the
 * same nose again is refused as a duplicate that names the existing DID.
 *
 * Registration rules (see README, "Registration rules"):
 *   - consistency: every pair of the new photos must reach the running model
 *     card's `registration.pair_threshold` (0.70 without one, REGISTER_PAIR_THRESHOLD);
 *     the lowest pair score and the threshold applied are returned and audited;
 *   - duplicate: refused only when every new photo's best match among the
 *     enrolled pets is the same pet, each at >= the card's duplicate
 *     similarity (per-comparison impostor FAR 1e-5; 0.95 without one). A best
 *     match at >= SAME_THRESHOLD that does not meet this is registered and
 *     recorded for review (audit detail, log line, response);
 *   - a template identical to an enrolled one (same DID) is always refused.
 *
 * Photos are stored as the bytes received, under the platform's `.jpg` names
 * even when they are PNG: the file names are part of the layout the gateway
 * and older tools expect, the original bytes are the evidence (no re-encoding
 * loss), and the Content-Type records the real format.
 */
export async function registerPet(ctx: FlowContext, req: RegisterRequest): Promise<RegisterResult> {
  const { store, registry, modelVersion, log } = ctx;
  const requestId = optionalText(req?.requestId, "request id", MAX_ID_LENGTH);
  const requestedBy = optionalText(req?.requestedBy, "requested by", MAX_GUARDIAN_LENGTH);
  const trainingConsent = consentValue(req?.trainingConsent ?? false);
  const photoCount = Array.isArray(req?.photos) ? req.photos.length : 0;
  const givenClient = Array.isArray(req?.clientEmbeddings) ? req.clientEmbeddings : [];
  if (givenClient.length > 0 && givenClient.length !== photoCount) {
    throw invalidRequest(`give one client embedding per photo: ${photoCount} photos, ${givenClient.length} client embeddings`);
  }
  const client = clientVectors(
    ctx,
    givenClient,
    givenClient.map((_, i) => `photo ${i + 1}`),
  );
  if (requestId) {
    const done = await registry.findPetByRequestId(requestId);
    if (done) return registered(done);
  }
  await refuseIfSuperseded(ctx, registry);
  const photos = Array.isArray(req?.photos) ? req.photos : [];
  if (photos.length < MIN_REGISTER_PHOTOS) {
    throw invalidRequest(`registration needs at least ${MIN_REGISTER_PHOTOS} photos of the nose, got ${photos.length}`);
  }
  if (photos.length > MAX_REGISTER_PHOTOS) {
    throw invalidRequest(`registration takes at most ${MAX_REGISTER_PHOTOS} photos, got ${photos.length}`);
  }

  // 1. Load and embed every photo before writing anything.
  const loaded: Array<{ bytes: Uint8Array; key?: string }> = [];
  for (let i = 0; i < photos.length; i++) {
    const p = await loadPhoto(ctx, photos[i], `photo ${i + 1}`);
    checkEnrolmentSize(p.bytes, `photo ${i + 1}`);
    loaded.push(p);
  }
  // Embedded concurrently: the preprocessing pool and the micro-batcher take them together,
  // while the geometry worker finds their keypoints.
  const [embeddings, features] = await Promise.all([
    Promise.all(loaded.map((p, i) => embedPhoto(ctx, p.bytes, `photo ${i + 1}`))),
    Promise.all(loaded.map((p) => ctx.geometry?.photo(p.bytes))),
  ]);
  const agreement =
    client.length > 0
      ? clientAgreement(
          client,
          embeddings,
          client.map((_, i) => `photo ${i + 1}`),
          ctx.parityBound,
        )
      : undefined;
  const tpl = template(embeddings);
  const petDid = petDidFromVector(tpl);
  const duplicateEvidence = new Map<string, GeometryEvidence>();
  const { minPair, worst, minPairInliers } = await keepIfRefused(ctx, trainingConsent && petDid, requestId, loaded, async () => {
    const consistent = await checkConsistent(ctx, embeddings, features);
    await checkNotRegistered(ctx, registry, embeddings, petDid, features, duplicateEvidence);
    return consistent;
  });

  // 2. Objects: photos, then the template.
  const imageKeys = loaded.map((_, i) => imageKey(petDid, i + 1));
  const vKey = vectorKey(petDid);
  const written: string[] = [];
  try {
    for (let i = 0; i < loaded.length; i++) {
      if (loaded[i].key === imageKeys[i]) continue; // already in place (a retry given the stored keys)
      // A call that ended stops writing; what it wrote is removed below.
      // Once every object is in place the rows follow even so, so a
      // registration is never left half made.
      throwIfCancelled();
      await store.put(imageKeys[i], loaded[i].bytes, contentTypeOf(loaded[i].bytes));
      written.push(imageKeys[i]);
    }
    throwIfCancelled();
    await store.put(vKey, writeNpy(tpl), "application/octet-stream");
    written.push(vKey);
  } catch (e) {
    for (const key of written.reverse()) {
      await store.delete(key).catch((err) => log("register.cleanup_failed", { key, error: errorMessage(err) }));
    }
    throw e;
  }

  // 3. Rows, last and atomically.
  const audit: AuditEntry = {
    kind: "register",
    petDid,
    requestedBy,
    requestId,
    similarity: minPair,
    modelVersion,
    detail: {
      imageKeys,
      vectorKey: vKey,
      photos: photos.length,
      minPairSimilarity: minPair,
      pairThreshold: ctx.pairAt,
      lowestPair: worst,
      ...(minPairInliers === undefined ? {} : { minPairInliers }),
      trainingConsent,
      ...clientDetail(agreement),
    },
  };
  // Decided again under the registration lock; that answer is the one kept.
  let review: DuplicateReview | undefined;
  let outcome: "inserted" | "exists";
  try {
    outcome = await registry.insertPet(
      {
        petDid,
        template: tpl,
        modelVersion,
        requestId,
        requestedBy,
        imageKeys,
        vectorKey: vKey,
        minPairSimilarity: minPair,
        trainingConsent,
        embeddings: embeddings.map((embedding, i) => ({ imageKey: imageKeys[i], embedding })),
      },
      audit,
      async (tx) => {
        // Under the lock a rollout's adoption also takes: rows written here are either seen by its sweep or refused.
        await refuseIfSuperseded(ctx, tx);
        review = await checkNotRegistered(ctx, tx, embeddings, petDid, features, duplicateEvidence);
        if (review) audit.detail = { ...audit.detail, duplicateReview: { ...review, threshold: ctx.duplicateAt } };
      },
    );
  } catch (e) {
    // A duplicate found under the lock means nothing committed and the
    // objects under this new DID belong to no one: remove them.
    if (e instanceof DuplicatePetError && e.existingPetDid !== petDid) {
      for (const key of written) await store.delete(key).catch(() => {});
    }
    throw e;
  }
  if (outcome === "exists") {
    // Lost a race: the same request id, or the same nose, committed first.
    const byRequest = requestId ? await registry.findPetByRequestId(requestId) : undefined;
    if (byRequest) return registered(byRequest);
    throw new DuplicatePetError(petDid, 1);
  }
  if (review) {
    log("register.duplicate_review", {
      petDid,
      candidatePetDid: review.petDid,
      similarity: review.similarity,
      duplicateSimilarity: ctx.duplicateAt,
      matches: review.matches,
      requestId,
    });
  }
  await ctx.geometry?.enrol(imageKeys.map((key, i) => ({ imageKey: key, features: features[i] })));
  log("register.done", {
    petDid,
    photos: photos.length,
    idempotencyKey: requestId,
    minPairSimilarity: minPair,
    minPairInliers,
    clientAgreement: agreement?.agreement,
  });
  return {
    petDid,
    vector: tpl,
    vectorSize: tpl.length,
    imageKeys,
    vectorKey: vKey,
    minPairSimilarity: minPair,
    modelVersion,
    created: true,
    ...(review ? { review } : {}),
    ...(agreement ? { clientAgreement: agreement.agreement } : {}),
    ...(minPairInliers === undefined ? {} : { minPairInliers }),
  };
}

/**
 * Every pair of one registration's photos must reach `ctx.pairAt` (the card's
 * `registration.pair_threshold`, else REGISTER_PAIR_THRESHOLD),
 * or, with geometry, share the policy's consistency inliers: two photos of
 * one shoot share many keypoints even where the embedding falls short.
 * Returns the least similar pair, with its inliers when geometry is checked.
 */
async function checkConsistent(ctx: FlowContext, embeddings: Float32Array[], features: Array<NoseFeatures | undefined>) {
  let minPair = Infinity;
  let worst: [number, number] = [1, 2];
  const short: Array<{ pair: [number, number]; similarity: number }> = [];
  for (let i = 0; i < embeddings.length; i++) {
    for (let j = i + 1; j < embeddings.length; j++) {
      const s = scored(ctx, embeddings[i], embeddings[j]).similarity;
      if (s < minPair) {
        minPair = s;
        worst = [i + 1, j + 1];
      }
      if (s < ctx.pairAt) short.push({ pair: [i + 1, j + 1], similarity: s });
    }
  }
  const geometric = ctx.geometry;
  if (!geometric) {
    if (minPair < ctx.pairAt) throw new InconsistentPhotosError(worst, minPair, ctx.pairAt);
    return { minPair, worst, minPairInliers: undefined };
  }
  const required = geometric.policy.consistencyInliers;
  const inliersOf = ([a, b]: [number, number]) => geometric.pair(features[a - 1], features[b - 1]);
  let minPairInliers: number | undefined;
  for (const { pair, similarity } of short.sort((x, y) => x.similarity - y.similarity)) {
    const inliers = await inliersOf(pair);
    if (inliers < required) throw new InconsistentPhotosError(pair, similarity, ctx.pairAt, { inliers, required });
    if (pair === short[0].pair) minPairInliers = inliers;
  }
  minPairInliers ??= await inliersOf(worst);
  return { minPair, worst, minPairInliers };
}

/**
 * Runs the checks that refuse a registration; when one refuses it (photos
 * inconsistent, a duplicate) and the owner consented to training on this
 * request, its photos are kept as labelled material (refused-photos.ts)
 * before the refusal is returned; not for photos whose template is already
 * enrolled (`consentFor`, the new DID, equals the duplicate's): those are
 * that pet's photos sent again, nothing new. Keeping them is best effort: a
 * store failure is logged and the caller still gets the refusal.
 */
async function keepIfRefused<T>(
  ctx: FlowContext,
  /** The new template's DID when the owner consented, else false. */
  consentFor: string | false,
  requestId: string | undefined,
  photos: Array<{ bytes: Uint8Array }>,
  checks: () => Promise<T>,
): Promise<T> {
  try {
    return await checks();
  } catch (e) {
    const resent = e instanceof DuplicatePetError && e.existingPetDid === consentFor;
    if (consentFor && !resent && e instanceof MLError) {
      try {
        const folder = await keepRefusedPhotos(ctx.store, e, {
          photos: photos.map((p) => p.bytes),
          modelVersion: ctx.modelVersion,
          requestId,
          now: ctx.now(),
          contentType: contentTypeOf,
        });
        if (folder) ctx.log("register.refused_photos_kept", { folder, photos: photos.length, requestId });
      } catch (err) {
        ctx.log("register.refused_photos_failed", { error: errorMessage(err), requestId });
      }
    }
    throw e;
  }
}

/** The stored result of a registration already done (a retry by request id). */
function registered(pet: PetRecord): RegisterResult {
  return {
    petDid: pet.petDid,
    vector: pet.template,
    vectorSize: pet.template.length,
    imageKeys: pet.imageKeys,
    vectorKey: pet.vectorKey,
    minPairSimilarity: pet.minPairSimilarity,
    modelVersion: pet.modelVersion,
    created: false,
  };
}
