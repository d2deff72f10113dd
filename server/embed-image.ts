import { toModelInput } from "../shared/preprocess.js";
import { l2normalize } from "../shared/similarity.js";
import { decodeImage, type DecodeLimits } from "./image/decode.js";
import type { ModelHolder } from "./model/model-holder.js";

export type EmbedImage = (bytes: Uint8Array) => Promise<Float32Array>;

/**
 * The data path of every RPC that takes a photo: decode -> PIL-exact
 * preprocessing -> model -> L2-normalised 512-d vector. Normalising here makes
 * the vector (and so the pet DID) independent of whether a user model
 * normalises its own output.
 */
export function createImageEmbedder(model: ModelHolder, limits: DecodeLimits): EmbedImage {
  return async (bytes) => {
    // Fail before decoding: no work is spent while the model is not there.
    const { embedder } = model.require();
    const { image } = await decodeImage(bytes, limits);
    const raw = await embedder.embed(toModelInput(image, embedder.inputSize));
    return l2normalize(raw);
  };
}
