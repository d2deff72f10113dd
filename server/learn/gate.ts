/**
 * The promotion gate of `npm run registry:learn`, decided on what
 * models/train/learn_eval.py measured on the held-out own dogs (eval.json).
 * A candidate is promoted only when both hold:
 *
 *   (a) it beats the running model at FAR 1e-3 by a margin the data
 *       certifies: the one-sided 95% lower bound of the TAR difference
 *       (paired bootstrap over dogs) is above 0;
 *   (b) its card's false-accept promises hold on the held-out dogs: at the
 *       0.70 and 0.85 knots the 95% Clopper-Pearson upper bound on the
 *       impostor FAR is within the target (1e-2, 1e-3).
 *
 * The duplicate knot (1e-5) needs about 300,000 impostor pairs to certify;
 * where the data has fewer it is widened by the conservative rule and the
 * report says so, but it does not block promotion: the check it guards
 * (refusing a second registration of a registered nose) fails safe.
 * There is no override.
 */

export interface Figures {
  auc: number;
  eer: number;
  tar_at_far: Record<"1e-2" | "1e-3" | "1e-4", number>;
  pairs: { genuine: number; impostor: number };
  roc: { far: number; tar: number }[];
  rank1?: number;
}

export interface KnotConfidence {
  cosine: number;
  impostor_pairs: number;
  impostors_at_or_above: number;
  far_measured: number;
  far_upper_bound: number;
  target_far: number;
  certified: boolean;
  basis: string;
  similarity: number;
  warning?: string;
}

export interface CurvePoint {
  similarity: number;
  impostors_at_or_above: number;
  far: number;
  far_upper_95: number;
  tar: number;
}

export interface RegistrationTradeoff {
  pairs: { genuine: number; different_dogs: number };
  table: {
    threshold: number;
    genuine_refused: number;
    different_dogs_accepted: number;
    different_dogs_accepted_upper_95: number;
    different_dog_pairs_at_or_above: number;
  }[];
  bound: number;
  certified: boolean;
  pair_threshold: number;
  rule: string;
  at_threshold: RegistrationTradeoff["table"][number];
}

export interface Evaluation {
  heldout: { dogs: number; images: number; duplicates_dropped: number; recapture_dogs: number };
  old: { version: string; photographed: Figures; recapture: Figures | null };
  new: { version: string; photographed: Figures; recapture: Figures | null };
  bootstrap: {
    far: number;
    old: number;
    new: number;
    difference: number;
    lower_95: number;
    upper_95: number;
    resamples: number;
    dogs: number;
    method: string;
  };
  calibration: {
    cosine: number[];
    similarity: number[];
    duplicate_similarity: number;
    confidence: Record<"0.70" | "0.85" | "duplicate", KnotConfidence> & { note: string };
    curve: CurvePoint[];
    old_curve: CurvePoint[] | null;
    /** The fitting rule checked out of sample (information; the gate reads `confidence`). */
    cross_fit: {
      folds: number;
      knots: Record<
        "0.70" | "0.85",
        { impostors_at_or_above: number; impostor_pairs: number; far: number; far_upper_95: number; target_far: number }
      >;
      method: string;
    } | null;
  };
  registration: RegistrationTradeoff;
  registration_old: RegistrationTradeoff | null;
  seconds: number;
}

export interface GateCheck {
  name: string;
  passed: boolean;
  detail: string;
}

export interface GateDecision {
  promote: boolean;
  checks: GateCheck[];
  /** One sentence: promoted or refused, and why. */
  summary: string;
}

const pct = (v: number) => `${(100 * v).toFixed(1)}%`;
const sci = (v: number) => v.toExponential(2);

export function decide(ev: Evaluation): GateDecision {
  const b = ev.bootstrap;
  const better: GateCheck = {
    name: "beats the running model at FAR 1e-3",
    passed: Number.isFinite(b.lower_95) && b.lower_95 > 0,
    detail:
      `TAR@FAR1e-3 ${pct(b.new)} (candidate ${ev.new.version}) vs ${pct(b.old)} (running ${ev.old.version}) on ` +
      `${b.dogs} held-out dogs: difference ${b.difference >= 0 ? "+" : ""}${pct(b.difference)}, one-sided 95% lower bound ` +
      `${b.lower_95 >= 0 ? "+" : ""}${pct(b.lower_95)} (must be > 0; ${b.resamples} paired bootstrap resamples over dogs)`,
  };
  const knots = (["0.70", "0.85"] as const).map((k) => ev.calibration.confidence[k]);
  const promises: GateCheck = {
    name: "the card's false-accept promises hold",
    passed: knots.every((k) => k.certified),
    detail: knots
      .map(
        (k) =>
          `similarity ${k.similarity.toFixed(2)}: ${k.impostors_at_or_above} of ${k.impostor_pairs.toLocaleString("en")} impostor pairs at or above, ` +
          `FAR ${sci(k.far_measured)}, 95% upper bound ${sci(k.far_upper_bound)} ${k.certified ? "<=" : ">"} target ${k.target_far.toExponential(0)}`,
      )
      .join("; "),
  };
  const checks = [better, promises];
  const promote = checks.every((c) => c.passed);
  const failed = checks.filter((c) => !c.passed).map((c) => c.name);
  const summary = promote
    ? `PROMOTED: ${ev.new.version} replaces ${ev.old.version}; both gate checks passed.`
    : `REFUSED: ${ev.new.version} is not promoted; failed: ${failed.join(" and ")}.`;
  return { promote, checks, summary };
}
