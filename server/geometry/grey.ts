import sharp from "sharp";
import type { GreyImage } from "../../shared/geometry/features.js";
import { checkEncoded, DECODE_TIMEOUT_S, type DecodeLimits } from "../image/decode.js";

/**
 * A photo as the geometric check sees it: oriented by its EXIF tag, grey,
 * and squeezed to `side` x `side`, the same square framing the model gets
 * (its input is a 224 x 224 resize of the whole photo). Large JPEGs shrink
 * while they decode. The bytes pass the embedding's own checks before any
 * decoder sees them (the two run side by side on the same untrusted photo),
 * and the decode has the same limits. Throws MLError for what the checks
 * refuse, sharp's error otherwise.
 */
export async function greyForGeometry(bytes: Uint8Array, side: number, limits: DecodeLimits): Promise<GreyImage> {
  checkEncoded(bytes, limits);
  const { data, info } = await sharp(bytes, {
    failOn: "error",
    limitInputPixels: Math.max(1, Math.floor(limits.maxPixels)),
    autoOrient: true,
  })
    .timeout({ seconds: DECODE_TIMEOUT_S })
    .greyscale()
    .resize(side, side, { fit: "fill", kernel: "lanczos3", fastShrinkOnLoad: true })
    .raw()
    .toBuffer({ resolveWithObject: true });
  if (info.channels !== 1) throw new Error(`expected one grey channel, got ${info.channels}`);
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height };
}
