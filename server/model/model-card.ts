import { readFile } from "node:fs/promises";
import { checkCalibration, type Calibration } from "../../shared/similarity.js";
import {
  checkGeometryParams,
  checkGeometryPolicy,
  DEFAULT_GEOMETRY_PARAMS,
  DEFAULT_GEOMETRY_POLICY,
  type GeometryParams,
  type GeometryPolicy,
} from "../../shared/geometry/index.js";

export interface ModelCard {
  name?: string;
  version?: string;
  calibration?: Calibration;
  /** Keypoint detector settings and the decision policy (`geometry.params`, `geometry.policy`); defaults for what the card leaves out. */
  geometry: { params: GeometryParams; policy: GeometryPolicy };
  /**
   * The similarity every pair of one registration's photos must reach
   * (`registration.pair_threshold`, chosen by registry:learn); undefined when
   * the card has none (REGISTER_PAIR_THRESHOLD, 0.70, then applies).
   */
  registerPairThreshold?: number;
  /** The whole card as read, for clients (GET /model/card.json). */
  raw?: Record<string, unknown>;
}

/**
 * Reads the optional model card beside the model. A user model without a card
 * is fine (uncalibrated scores); a card that exists but is broken is an error,
 * since silently dropping its calibration would shift every verdict.
 */
export async function readModelCard(file: string | undefined): Promise<ModelCard | undefined> {
  if (!file) return undefined;
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new Error(`model card ${file} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof raw !== "object" || raw === null) throw new Error(`model card ${file} must be a JSON object`);
  const card = raw as Record<string, unknown>;
  const out: ModelCard = { raw: card, geometry: { params: DEFAULT_GEOMETRY_PARAMS, policy: DEFAULT_GEOMETRY_POLICY } };
  if (typeof card.name === "string") out.name = card.name;
  if (typeof card.version === "string") out.version = card.version;
  if (card.calibration !== undefined) {
    const c = card.calibration as Partial<Calibration> & { duplicate_similarity?: unknown };
    try {
      out.calibration = checkCalibration({
        cosine: c.cosine as number[],
        similarity: c.similarity as number[],
        // Optional: cards fitted before it existed get DEFAULT_DUPLICATE_SIMILARITY.
        ...(c.duplicate_similarity === undefined || c.duplicate_similarity === null
          ? {}
          : { duplicateSimilarity: c.duplicate_similarity as number }),
      });
    } catch (e) {
      throw new Error(`model card ${file}: ${(e as Error).message}`);
    }
  }
  if (card.geometry !== undefined) {
    const g = card.geometry as { params?: Partial<GeometryParams>; policy?: Partial<GeometryPolicy> } | null;
    try {
      if (typeof g !== "object" || g === null) throw new Error("geometry must be an object");
      out.geometry = {
        params: checkGeometryParams({ ...DEFAULT_GEOMETRY_PARAMS, ...g.params }),
        policy: checkGeometryPolicy({ ...DEFAULT_GEOMETRY_POLICY, ...g.policy }),
      };
    } catch (e) {
      throw new Error(`model card ${file}: ${(e as Error).message}`);
    }
  }
  if (card.registration !== undefined && card.registration !== null) {
    try {
      const t = checkPairThreshold(card.registration);
      if (t !== undefined) out.registerPairThreshold = t;
    } catch (e) {
      throw new Error(`model card ${file}: ${(e as Error).message}`);
    }
  }
  return out;
}

/**
 * The range a card's `registration.pair_threshold` must lie in. Below 0.5
 * registration would routinely accept two different dogs' photos as one nose
 * (impostor pairs reach 0.5 far more often than the 0.70 knot's promise);
 * above 0.85 (SAME) it would refuse most genuine pairs of real dogs, as the
 * 0.85 rule did before 0.70 replaced it.
 */
export const PAIR_THRESHOLD_MIN = 0.5;
export const PAIR_THRESHOLD_MAX = 0.85;

/** The card's `registration` block: its `pair_threshold` when present, checked against the range above. */
function checkPairThreshold(registration: unknown): number | undefined {
  if (typeof registration !== "object" || Array.isArray(registration)) throw new Error("registration must be an object");
  const t = (registration as Record<string, unknown>).pair_threshold;
  if (t === undefined || t === null) return undefined;
  if (typeof t !== "number" || !Number.isFinite(t) || t < PAIR_THRESHOLD_MIN || t > PAIR_THRESHOLD_MAX) {
    throw new Error(
      `registration.pair_threshold must be a number within [${PAIR_THRESHOLD_MIN}, ${PAIR_THRESHOLD_MAX}], got ${JSON.stringify(t) ?? String(t)}` +
        ` (below ${PAIR_THRESHOLD_MIN} registration would accept two different dogs' photos, above ${PAIR_THRESHOLD_MAX} it would refuse most genuine pairs)`,
    );
  }
  return t;
}
