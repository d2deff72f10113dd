import { createHash } from "node:crypto";

/**
 * A unit vector drawn from a standard normal distribution, seeded by a
 * string: the same seed always gives the same vector, so test dogs, photos
 * and noise are named rather than stored. xorshift32 seeded from SHA-256,
 * Box-Muller for the normal samples.
 */
export function seededUnit(seed: string, dim = 512): Float32Array {
  const h = createHash("sha256").update(seed).digest();
  let s = h.readUInt32LE(0) || 1;
  const next = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return ((s >>> 0) + 0.5) / 4294967296;
  };
  const v = new Float32Array(dim);
  let n = 0;
  for (let i = 0; i < dim; i++) {
    v[i] = Math.sqrt(-2 * Math.log(next())) * Math.cos(2 * Math.PI * next());
    n += v[i] * v[i];
  }
  return v.map((x) => x / Math.sqrt(n));
}

/**
 * Bytes that pass the registry's JPEG signature check and carry `text`
 * (e.g. `dog=A;shot=1`), which the tests' fake models read instead of pixels.
 */
export function taggedPhoto(text: string): Uint8Array {
  const body = new TextEncoder().encode(text);
  const out = new Uint8Array(4 + body.length);
  out.set([0xff, 0xd8, 0xff, 0xe0]);
  out.set(body, 4);
  return out;
}
