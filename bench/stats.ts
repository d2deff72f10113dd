/** Nearest-rank percentile (p in 0..100) of a sample; NaN for an empty one. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

export const median = (values: readonly number[]) => percentile(values, 50);

export interface Summary {
  n: number;
  p50: number;
  p95: number;
  mean: number;
}

export function summarize(values: readonly number[]): Summary {
  const mean = values.reduce((s, v) => s + v, 0) / values.length;
  return { n: values.length, p50: percentile(values, 50), p95: percentile(values, 95), mean };
}

/** Rounds for reports: 3 significant digits, never more than 3 decimals. */
export function round(v: number): number {
  if (!Number.isFinite(v)) return v;
  const digits = Math.max(0, Math.min(3, 2 - Math.floor(Math.log10(Math.abs(v) || 1))));
  return Number(v.toFixed(digits));
}

export const fmt = (v: number, unit = "") => (Number.isFinite(v) ? `${round(v)}${unit}` : "n/a");
