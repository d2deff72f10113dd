import type { IdentifyRun } from "./identification.js";

export interface Extrapolation {
  engine: string;
  fromPets: [number, number];
  toPets: number;
  photosPerPet: number;
  rows: number;
  /** float32 x 512, what one enrolled photo's vector is. */
  rawBytesPerVector: number;
  indexBytesPerRow: number;
  tableBytesPerRow: number;
  indexGiB: number;
  tableGiB: number;
  /** t = a * n^exponent through the two measured builds. */
  buildExponent: number;
  buildHours: number;
  /** p = a + b * ln(n) through the two measured p50s and p95s. */
  queryMsPerLnN: { p50: number; p95: number };
  queryP50Ms: number;
  queryP95Ms: number;
}

/**
 * From the two largest runs of one engine to `toPets`: storage grows
 * linearly, the build as the measured power law, an HNSW query as log n
 * (while the index stays in memory).
 */
export function extrapolate(runs: IdentifyRun[], toPets: number): Extrapolation | undefined {
  const sorted = [...runs].sort((a, b) => a.pets - b.pets);
  if (sorted.length < 2) return undefined;
  const [a, b] = sorted.slice(-2);
  const k = toPets / b.pets;
  const rows = b.rows * k;
  const lnRatio = Math.log(b.rows / a.rows);
  const slope = (x: number, y: number) => (y - x) / lnRatio;
  const exponent = Math.log(b.indexBuildSeconds / a.indexBuildSeconds) / lnRatio;
  const s50 = slope(a.query.p50, b.query.p50);
  const s95 = slope(a.query.p95, b.query.p95);
  return {
    engine: b.engine,
    fromPets: [a.pets, b.pets],
    toPets,
    photosPerPet: b.rows / b.pets,
    rows,
    rawBytesPerVector: 512 * 4,
    indexBytesPerRow: b.indexBytesPerRow,
    tableBytesPerRow: (b.tableMiB * 2 ** 20) / b.rows,
    indexGiB: (b.indexBytesPerRow * rows) / 2 ** 30,
    tableGiB: (b.tableMiB * 2 ** 20 * k) / 2 ** 30,
    buildExponent: exponent,
    buildHours: (b.indexBuildSeconds * k ** exponent) / 3600,
    queryMsPerLnN: { p50: s50, p95: s95 },
    queryP50Ms: b.query.p50 + s50 * Math.log(k),
    queryP95Ms: b.query.p95 + s95 * Math.log(k),
  };
}
