/**
 * The layout a promoted model is published in, shared by the promotion
 * (`registry:learn`) and the replicas that adopt it. In the object store, or
 * under a folder with the same layout:
 *
 *   models/nose-embedder/{version}/model.onnx
 *   models/nose-embedder/{version}/card.json
 *   models/nose-embedder/{version}/model.pt     its checkpoint (the next fine-tune starts from it)
 *   models/nose-embedder/current.json      the pointer, written last
 *
 * Besides `previous`, a pointer may carry `history` (earlier releases, newest
 * first; previous is history[0]) and, after a rollback, `rolled_back_from`.
 * Writing it is release-publish.ts's job; reading it is this module's.
 */

export const RELEASE_PREFIX = "models/nose-embedder";
export const POINTER_KEY = `${RELEASE_PREFIX}/current.json`;

/** Versions name a key segment: letters, digits, '.', '_', '-', '+', at most 128. */
const VERSION = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/;

export interface ReleaseKeys {
  version: string;
  model_key: string;
  card_key: string;
}

export interface Pointer extends ReleaseKeys {
  /** ISO time of the promotion. */
  promoted_at: string;
  /** The release this one replaced; null for the first. */
  previous: ReleaseKeys | null;
  /** Earlier releases, newest first (previous is history[0]); absent in a pointer written without one. */
  history?: ReleaseKeys[];
  /** Set by a rollback: the release it replaced. */
  rolled_back_from?: ReleaseKeys;
}

/** Why a pointer was refused; returned, not thrown. */
export class PointerError extends Error {
  constructor(message: string) {
    super(`model release pointer ${POINTER_KEY}: ${message}`);
    this.name = "PointerError";
  }
}

export function isReleaseVersion(v: unknown): v is string {
  return typeof v === "string" && VERSION.test(v) && !/^\.+$/.test(v);
}

/** The keys of one release. Throws on a version that cannot name a key segment. */
export function releaseKeys(version: string): ReleaseKeys {
  if (!isReleaseVersion(version)) throw new PointerError(`version ${JSON.stringify(version)} must match ${VERSION}`);
  return { version, model_key: `${RELEASE_PREFIX}/${version}/model.onnx`, card_key: `${RELEASE_PREFIX}/${version}/card.json` };
}

/** The key of a release's training checkpoint, kept so the next fine-tune can start from the serving weights. */
export function checkpointKey(version: string): string {
  return `${RELEASE_PREFIX}/${releaseKeys(version).version}/model.pt`;
}

function keysOf(v: unknown, what: string): ReleaseKeys | PointerError {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return new PointerError(`${what} must be an object`);
  const o = v as Record<string, unknown>;
  if (!isReleaseVersion(o.version)) return new PointerError(`${what}.version must be a string matching ${VERSION}`);
  const expected = releaseKeys(o.version);
  for (const k of ["model_key", "card_key"] as const) {
    if (o[k] !== expected[k]) return new PointerError(`${what}.${k} must be ${JSON.stringify(expected[k])}, got ${JSON.stringify(o[k])}`);
  }
  return expected;
}

/** Parses the pointer strictly: every field present and of its type, keys in the release layout. */
export function parsePointer(bytes: Uint8Array): Pointer | PointerError {
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (e) {
    return new PointerError(`not JSON: ${(e as Error).message}`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return new PointerError("must be a JSON object");
  const o = raw as Record<string, unknown>;
  const unknown = Object.keys(o).filter(
    (k) => !["version", "model_key", "card_key", "promoted_at", "previous", "history", "rolled_back_from"].includes(k),
  );
  if (unknown.length) return new PointerError(`unknown field(s) ${unknown.join(", ")}`);
  const keys = keysOf(o, "pointer");
  if (keys instanceof PointerError) return keys;
  if (typeof o.promoted_at !== "string" || Number.isNaN(Date.parse(o.promoted_at)) || !/^\d{4}-\d{2}-\d{2}T/.test(o.promoted_at)) {
    return new PointerError(`promoted_at must be an ISO time, got ${JSON.stringify(o.promoted_at)}`);
  }
  if (!("previous" in o)) return new PointerError("previous is required (null for the first release)");
  let previous: ReleaseKeys | null = null;
  if (o.previous !== null) {
    const p = keysOf(o.previous, "previous");
    if (p instanceof PointerError) return p;
    previous = p;
  }
  const pointer: Pointer = { ...keys, promoted_at: o.promoted_at, previous };
  if (o.history !== undefined) {
    if (!Array.isArray(o.history)) return new PointerError("history must be an array");
    const history: ReleaseKeys[] = [];
    for (const [i, h] of o.history.entries()) {
      const k = keysOf(h, `history[${i}]`);
      if (k instanceof PointerError) return k;
      history.push(k);
    }
    pointer.history = history;
  }
  if (o.rolled_back_from !== undefined) {
    const k = keysOf(o.rolled_back_from, "rolled_back_from");
    if (k instanceof PointerError) return k;
    pointer.rolled_back_from = k;
  }
  return pointer;
}
