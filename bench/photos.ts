import sharp from "sharp";
import { nosePhotos } from "../test/support/nose-photos.js";

export interface PhotoSet {
  label: string;
  width: number;
  height: number;
  /** Different photos of the same size, sent in turn. */
  jpegs: Buffer[];
}

export const SIZES = [
  { label: "224x224", width: 224, height: 224 },
  { label: "1080x1080", width: 1080, height: 1080 },
  { label: "4032x3024", width: 4032, height: 3024 },
] as const;

/**
 * Camera-like JPEGs of dog noses: a rendered nose (the training renderer,
 * through test/support) scaled to the size, a soft light falloff, and sensor
 * grain that grows with the pixel count as on a phone, encoded at quality 90
 * with 4:2:0 chroma as phone cameras do. Grain matters: it sets the JPEG's
 * size and its decoding cost, which smooth synthetic pictures understate.
 */
export async function benchPhotos(count: number): Promise<PhotoSet[]> {
  const nose = nosePhotos(count);
  const sets: PhotoSet[] = [];
  for (const s of SIZES) {
    const jpegs: Buffer[] = [];
    for (let i = 0; i < count; i++) jpegs.push(await cameraLike(nose(i, 0), s.width, s.height, i));
    sets.push({ ...s, jpegs });
  }
  return sets;
}

/** One photo at the given size; `seed` varies the grain. */
export async function cameraLike(nose: Buffer, width: number, height: number, seed: number): Promise<Buffer> {
  const sigma = width * height > 4e6 ? 7 : width * height > 1e6 ? 5 : 3;
  const grain = await sharp({
    create: { width, height, channels: 3, background: "#808080", noise: { type: "gaussian", mean: 128 + (seed % 3), sigma } },
  })
    .png({ compressionLevel: 0 })
    .toBuffer();
  const falloff = Buffer.from(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}"><defs><radialGradient id="g" cx="${45 + seed * 3}%" cy="45%" r="75%">` +
      `<stop offset="0.55" stop-color="#000" stop-opacity="0"/><stop offset="1" stop-color="#000" stop-opacity="0.35"/></radialGradient></defs>` +
      `<rect width="100%" height="100%" fill="url(#g)"/></svg>`,
  );
  return sharp(nose)
    .resize(width, height, { fit: "cover", kernel: "lanczos3" })
    .composite([
      { input: grain, blend: "overlay" },
      { input: falloff, blend: "over" },
    ])
    .jpeg({ quality: 90, chromaSubsampling: "4:2:0" })
    .toBuffer();
}
