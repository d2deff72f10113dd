import sharp from "sharp";
import type { GreyImage } from "../../shared/geometry/features.js";

/**
 * A photo as the geometric check sees it: oriented by its EXIF tag, grey,
 * and squeezed to `side` x `side`, the same square framing the model gets
 * (its input is a 224 x 224 resize of the whole photo). Large JPEGs shrink
 * while they decode. The embedding path has already applied (or is
 * applying) the full decode limits to these bytes; `maxPixels` keeps this
 * decode bounded on its own all the same.
 */
export async function greyForGeometry(bytes: Uint8Array, side: number, maxPixels: number): Promise<GreyImage> {
  const { data, info } = await sharp(bytes, { limitInputPixels: maxPixels })
    .rotate()
    .greyscale()
    .resize(side, side, { fit: "fill", kernel: "lanczos3", fastShrinkOnLoad: true })
    .raw()
    .toBuffer({ resolveWithObject: true });
  if (info.channels !== 1) throw new Error(`expected one grey channel, got ${info.channels}`);
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height };
}
