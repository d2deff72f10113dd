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
  /** How the query figures were reached, in words. */
  queryBasis: string;
  queryP50Ms: number;
  queryP95Ms: number;
}

/**
 * From the two largest runs of one engine to `toPets`: storage grows
 * linearly, the build as the measured power law, an HNSW query as log n
 * (while the index stays in memory). Only runs whose query used the index
 * count for the query figures: a registry small enough for the planner to
 * prefer a sequential scan says nothing about HNSW search.
 */
export function extrapolate(runs: IdentifyRun[], toPets: number): Extrapolation | undefined {
  const sorted = [...runs].sort((a, b) => a.pets - b.pets);
  if (sorted.length < 2) return undefined;
  const [a, b] = sorted.slice(-2);
  const k = toPets / b.pets;
  const rows = b.rows * k;
  const lnRatio = Math.log(b.rows / a.rows);
  const exponent = Math.log(b.indexBuildSeconds / a.indexBuildSeconds) / lnRatio;
  const indexed = sorted.filter((r) => r.indexUsed);
  let queryBasis: string;
  let queryP50Ms: number;
  let queryP95Ms: number;
  if (indexed.length >= 2) {
    const [c, d] = indexed.slice(-2);
    const ln = Math.log(d.rows / c.rows);
    const s50 = (d.query.p50 - c.query.p50) / ln;
    const s95 = (d.query.p95 - c.query.p95) / ln;
    queryP50Ms = d.query.p50 + s50 * Math.log(k);
    queryP95Ms = d.query.p95 + s95 * Math.log(k);
    queryBasis = `p = a + b ln(rows) through the ${c.pets}- and ${d.pets}-pet runs (b = ${s50.toFixed(2)} ms at p50, ${s95.toFixed(2)} ms at p95)`;
  } else if (indexed.length === 1) {
    const d = indexed[0];
    const f = Math.log(rows) / Math.log(d.rows);
    queryP50Ms = d.query.p50 * f;
    queryP95Ms = d.query.p95 * f;
    queryBasis = `only the ${d.pets}-pet run used the index, so its times are scaled by ln(rows) alone (x${f.toFixed(2)})`;
  } else {
    queryP50Ms = NaN;
    queryP95Ms = NaN;
    queryBasis = "no run used the index";
  }
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
    queryBasis,
    queryP50Ms,
    queryP95Ms,
  };
}
