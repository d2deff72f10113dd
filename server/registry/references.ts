import { NpyError, readNpy } from "../../shared/npy.js";
import { EMBEDDING_DIM } from "../db/migrations.js";
import { internalError, vectorDimensionMismatch, vectorNotFound } from "../errors.js";
import { imageKey, vectorKey } from "../storage/keys.js";
import { readLegacyVector } from "../storage/legacy-vector.js";
import { errorMessage, type FlowContext } from "./context.js";
import { current } from "./reembed.js";

/** A pet's reference embeddings and the enrolled photos behind them. */
export interface References {
  vectors: Float32Array[];
  imageKeys: string[];
}

/**
 * The pet's reference vectors: its enrolled embeddings; for pets the
 * previous server registered, vector.npy and then the legacy JSON template.
 * With them, the enrolled photos their keypoints come from.
 */
export async function referencesOf(ctx: FlowContext, petDid: string): Promise<References> {
  const { registry, store, modelVersion } = ctx;
  const rows = await registry.embeddingsOf(petDid);
  const refs = await current(ctx, petDid, rows);
  if (refs.length > 0) return { vectors: refs, imageKeys: rows.map((r) => r.imageKey) };
  const pet = await registry.findPet(petDid);
  if (pet) {
    // The template is a mean of embeddings by the registering model: no score against another version's probe.
    if (pet.modelVersion === modelVersion) return { vectors: [pet.template], imageKeys: pet.imageKeys };
    throw vectorNotFound(
      `no nose print of pet ${petDid} by model version ${modelVersion}: it was enrolled by ${pet.modelVersion} and its photos cannot be read to re-embed them; register it again`,
    );
  }

  // Pets of the previous server: its photos, where they are, under the platform's names.
  const platformPhotos = [imageKey(petDid, 1), imageKey(petDid, 2)];
  const key = vectorKey(petDid);
  const npy = await store.get(key);
  if (npy !== undefined) {
    try {
      return { vectors: readNpy(npy, EMBEDDING_DIM).rows, imageKeys: platformPhotos };
    } catch (e) {
      if (e instanceof NpyError && e.reason === "dimension") throw vectorDimensionMismatch(`${key}: ${e.message}`);
      throw internalError(`stored vector ${key} is unreadable: ${errorMessage(e)}`, e);
    }
  }
  const legacy = await readLegacyVector(store, petDid, EMBEDDING_DIM);
  if (legacy) return { vectors: [legacy.vector], imageKeys: platformPhotos };
  throw vectorNotFound(`no enrolled nose print for pet ${petDid}`);
}
