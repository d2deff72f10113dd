import { prng } from "../test/support/images.js";

export const DIM = 512;

/** Standard normal deviates from a seeded uniform source (Box-Muller). */
function gaussian(rnd: () => number): () => number {
  let spare: number | undefined;
  return () => {
    if (spare !== undefined) {
      const s = spare;
      spare = undefined;
      return s;
    }
    const u = rnd() || 1e-12;
    const v = rnd();
    const r = Math.sqrt(-2 * Math.log(u));
    spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  };
}

export function normalize(v: Float32Array): Float32Array {
  let s = 0;
  for (const x of v) s += x * x;
  const n = Math.sqrt(s) || 1;
  for (let i = 0; i < v.length; i++) v[i] /= n;
  return v;
}

export const cosine = (a: Float32Array, b: Float32Array) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
};

/** Seeded unit vectors, uniformly spread over the sphere, and noisy views of them. */
export function vectorSource(seed: number) {
  const g = gaussian(prng(seed));
  const unit = () => normalize(Float32Array.from({ length: DIM }, g));
  return {
    unit,
    /**
     * A unit vector at cosine about 1/sqrt(1 + spread^2) from `v`: another
     * photo of the same nose (spread 0.33: cosine 0.95 to the nose, 0.9 between two photos).
     */
    near(v: Float32Array, spread: number): Float32Array {
      const u = unit();
      return normalize(Float32Array.from(v, (x, i) => x + spread * u[i]));
    },
  };
}

/** pgvector's text form, 7 significant digits (float4 holds about 7). */
export const vectorText = (v: Float32Array) => `[${Array.from(v, (x) => x.toPrecision(7)).join(",")}]`;
