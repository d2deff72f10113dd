import sharp from "sharp";

import { prng } from "../../shared/prng.js";

export { prng };

/** n seeded pseudo-random bytes. */
export function randomBytes(n: number, seed: number): Buffer {
  const rnd = prng(seed);
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor(rnd() * 256);
  return out;
}

/** A textured RGB test picture: smooth blobs plus grain, different per seed. */
export function rawPicture(width: number, height: number, seed: number): Buffer {
  const rnd = prng(seed);
  const blobs = Array.from({ length: 12 }, () => ({
    x: rnd() * width,
    y: rnd() * height,
    r: 5 + rnd() * width * 0.3,
    c: [rnd(), rnd(), rnd()],
  }));
  const out = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) {
      const o = (y * width + x) * 3;
      for (let c = 0; c < 3; c++) {
        let v = 40;
        for (const b of blobs) {
          const d = Math.hypot(x - b.x, y - b.y) / b.r;
          if (d < 1) v += 120 * b.c[c] * (1 - d);
        }
        out[o + c] = Math.max(0, Math.min(255, v + (rnd() - 0.5) * 30));
      }
    }
  return out;
}

export async function jpeg(width: number, height: number, seed: number, quality = 90): Promise<Buffer> {
  return sharp(rawPicture(width, height, seed), { raw: { width, height, channels: 3 } })
    .jpeg({ quality })
    .toBuffer();
}

export async function png(width: number, height: number, seed: number): Promise<Buffer> {
  return sharp(rawPicture(width, height, seed), { raw: { width, height, channels: 3 } })
    .png()
    .toBuffer();
}

/** A valid PNG signature and IHDR that declare width x height, then nothing. */
export function pngHeaderOnly(width: number, height: number): Buffer {
  const sig = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const ihdr = Buffer.alloc(25);
  ihdr.writeUInt32BE(13, 0);
  ihdr.write("IHDR", 4, "ascii");
  ihdr.writeUInt32BE(width, 8);
  ihdr.writeUInt32BE(height, 12);
  ihdr[16] = 8; // bit depth
  ihdr[17] = 2; // RGB
  ihdr.writeUInt32BE(crc32(ihdr.subarray(4, 21)), 21);
  return Buffer.concat([sig, ihdr]);
}

function crc32(buf: Uint8Array): number {
  let c = ~0;
  for (const b of buf) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
  }
  return ~c >>> 0;
}

/**
 * Pixel blend alpha * a + (1 - alpha) * b of two JPEGs, as a JPEG (b resized to a's size). The pattern test model is
 * a linear image summary, so a blend scores between the two photos' noses: scores in a chosen band without a
 * trained model.
 */
export async function blend(a: Buffer, b: Buffer, alpha: number): Promise<Buffer> {
  const ra = await sharp(a).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const rb = await sharp(b).resize(ra.info.width, ra.info.height).removeAlpha().raw().toBuffer();
  const out = Buffer.alloc(ra.data.length);
  for (let i = 0; i < out.length; i++) out[i] = Math.round(alpha * ra.data[i] + (1 - alpha) * rb[i]);
  return sharp(out, { raw: { width: ra.info.width, height: ra.info.height, channels: 3 } })
    .jpeg({ quality: 95 })
    .toBuffer();
}
