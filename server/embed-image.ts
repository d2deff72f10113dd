import { l2normalize } from "../shared/similarity.js";
import type { PreprocessPool } from "./image/preprocess-pool.js";
import type { ModelHolder } from "./model/model-holder.js";
import { throwIfCancelled } from "./observe/request-context.js";

export type EmbedImage = (bytes: Uint8Array) => Promise<Float32Array>;

/**
 * The data path of every RPC that takes a photo: decode -> PIL-exact
 * preprocessing (in the worker pool) -> model -> L2-normalised 512-d vector.
 * Normalising here makes the vector (and so the pet DID) independent of
 * whether a user model normalises its own output.
 */
export function createImageEmbedder(model: ModelHolder, pool: PreprocessPool): EmbedImage {
  return async (bytes) => {
    // Fail before decoding: no work is spent while the model is not there.
    const { embedder } = model.require();
    const chw = await pool.preprocess(bytes, embedder.inputSize);
    // The pool and the batcher drop a call that ended while it waited; this
    // covers the moment between the two.
    throwIfCancelled();
    return l2normalize(await embedder.embed(chw));
  };
}
