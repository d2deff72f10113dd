/**
 * Choosing the frames to keep from a burst of assessed camera frames.
 * Pure and isomorphic.
 */
import type { FrameAssessment } from "./types.js";

/** One assessed frame and whatever the caller keeps with it (pixels, a blob, an index). */
export interface Candidate<T> {
  assessment: FrameAssessment;
  item: T;
}

/**
 * The `n` best passing candidates, best first. Failing frames are never kept.
 *
 * `candidates` is taken to be in capture order. Consecutive frames are nearly
 * the same picture, so two of them add little over one: the best frames are
 * taken first among those not next to a frame already kept, and only if that
 * leaves fewer than `n` are the skipped neighbours added, best first. Ties keep
 * capture order.
 */
export function selectBest<T>(candidates: readonly Candidate<T>[], n = 5): Candidate<T>[] {
  if (!(Number.isInteger(n) && n >= 0)) throw new RangeError(`bad count ${n}`);
  const ranked = candidates
    .map((c, index) => ({ c, index }))
    .filter(({ c }) => c.assessment.pass)
    .sort((a, b) => b.c.assessment.score - a.c.assessment.score || a.index - b.index);
  const kept = new Set<number>();
  const out: { c: Candidate<T>; index: number }[] = [];
  for (const r of ranked) {
    if (out.length >= n) break;
    if (kept.has(r.index - 1) || kept.has(r.index + 1)) continue;
    kept.add(r.index);
    out.push(r);
  }
  for (const r of ranked) {
    if (out.length >= n) break;
    if (kept.has(r.index)) continue;
    kept.add(r.index);
    out.push(r);
  }
  out.sort((a, b) => b.c.assessment.score - a.c.assessment.score || a.index - b.index);
  return out.map((r) => r.c);
}
