import { internalError, vectorDimensionMismatch } from "../errors.js";
import { legacyVectorKey } from "./keys.js";
import type { ObjectStore } from "./object-store.js";

/**
 * Templates written by the platform before vector.npy existed:
 * `pet-vectors/{petDID}.json` =
 * `{"petDID", "featureVector": number[], "vectorSize", "createdAt", "version"}`.
 */
export interface LegacyVector {
  petDid: string;
  vector: Float32Array;
  createdAt?: string;
  version?: string;
}

/** Undefined when the pet has no legacy object; throws when it has a broken one. */
export async function readLegacyVector(store: ObjectStore, petDid: string, dim = 512): Promise<LegacyVector | undefined> {
  const key = legacyVectorKey(petDid);
  const bytes = await store.get(key);
  if (bytes === undefined) return undefined;
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (e) {
    throw internalError(`stored legacy vector ${key} is not valid JSON`, e);
  }
  const d = doc as Record<string, unknown>;
  const fv = d?.featureVector;
  if (!Array.isArray(fv) || !fv.every((x) => typeof x === "number" && Number.isFinite(x))) {
    throw internalError(`stored legacy vector ${key} has no numeric featureVector`);
  }
  if (d.petDID !== undefined && d.petDID !== petDid) {
    throw internalError(`stored legacy vector ${key} belongs to ${String(d.petDID)}`);
  }
  if (typeof d.vectorSize === "number" && d.vectorSize !== fv.length) {
    throw vectorDimensionMismatch(`stored legacy vector ${key} says vectorSize ${d.vectorSize} but holds ${fv.length} values`);
  }
  if (fv.length !== dim) {
    throw vectorDimensionMismatch(`stored legacy vector ${key} has ${fv.length} dimensions, expected ${dim}`);
  }
  return {
    petDid,
    vector: Float32Array.from(fv as number[]),
    createdAt: typeof d.createdAt === "string" ? d.createdAt : undefined,
    version: typeof d.version === "string" ? d.version : d.version === undefined ? undefined : String(d.version),
  };
}
