import { createHash } from "node:crypto";
import type { ObjectStore } from "../storage/object-store.js";

/**
 * Where a promoted model lives, shared by the writer (`npm run
 * registry:learn`) and the replicas that adopt it. In the object store the
 * server is configured with (or, with `--promote-to DIR`, the same layout
 * under a folder):
 *
 *   models/nose-embedder/{version}/model.onnx   the ONNX file
 *   models/nose-embedder/{version}/card.json    its model card
 *   models/nose-embedder/{version}/model.pt     its checkpoint (the next fine-tune starts from it)
 *   models/nose-embedder/current.json           the pointer: which version every replica serves
 *
 * A version's objects are written first and never rewritten; the pointer is
 * written last, after both objects read back complete, so a replica that
 * reads the pointer always finds the objects it names.
 *
 * The pointer carries `previous` (the release it replaced, null for the first)
 * and `history`, the earlier releases newest first (at most HISTORY_LENGTH;
 * `previous` is history[0]). A rollback makes history[0] current again and
 * drops it from the history, so rolling back twice goes two releases back;
 * the release rolled back from is named in `rolled_back_from`.
 */

export const RELEASE_PREFIX = "models/nose-embedder";
export const POINTER_KEY = `${RELEASE_PREFIX}/current.json`;
export const HISTORY_LENGTH = 10;

/** A version name usable as one key segment and a file name. */
export const VERSION_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

export interface ReleaseRef {
  version: string;
  model_key: string;
  card_key: string;
}

export interface ReleasePointer extends ReleaseRef {
  /** ISO time the pointer was written (by a promotion or a rollback). */
  promoted_at: string;
  previous: ReleaseRef | null;
  /** Earlier releases, newest first; previous is history[0]. */
  history: ReleaseRef[];
  /** Set by a rollback: the release it replaced. */
  rolled_back_from?: ReleaseRef;
}

export const modelKey = (version: string) => `${RELEASE_PREFIX}/${checkVersion(version)}/model.onnx`;
export const cardKey = (version: string) => `${RELEASE_PREFIX}/${checkVersion(version)}/card.json`;
export const checkpointKey = (version: string) => `${RELEASE_PREFIX}/${checkVersion(version)}/model.pt`;
export const releaseRef = (version: string): ReleaseRef => ({ version, model_key: modelKey(version), card_key: cardKey(version) });

export function checkVersion(version: string): string {
  if (!VERSION_PATTERN.test(version)) throw new Error(`model version ${JSON.stringify(version)} is not a plain name (${VERSION_PATTERN})`);
  return version;
}

function parseRef(v: unknown, what: string): ReleaseRef {
  const r = v as Record<string, unknown> | null;
  if (!r || typeof r !== "object") throw new Error(`${what} is not an object`);
  for (const f of ["version", "model_key", "card_key"] as const) {
    if (typeof r[f] !== "string" || r[f] === "") throw new Error(`${what}.${f} is missing`);
  }
  return { version: r.version as string, model_key: r.model_key as string, card_key: r.card_key as string };
}

/** The pointer's JSON, checked; throws on anything else. */
export function parsePointer(bytes: Uint8Array | string): ReleasePointer {
  const v = JSON.parse(typeof bytes === "string" ? bytes : Buffer.from(bytes).toString("utf8")) as Record<string, unknown>;
  const ref = parseRef(v, "pointer");
  if (typeof v.promoted_at !== "string" || Number.isNaN(Date.parse(v.promoted_at))) throw new Error("pointer.promoted_at is not a time");
  const previous = v.previous === null || v.previous === undefined ? null : parseRef(v.previous, "pointer.previous");
  const history = Array.isArray(v.history) ? v.history.map((h, i) => parseRef(h, `pointer.history[${i}]`)) : previous ? [previous] : [];
  return {
    ...ref,
    promoted_at: v.promoted_at,
    previous,
    history,
    ...(v.rolled_back_from ? { rolled_back_from: parseRef(v.rolled_back_from, "pointer.rolled_back_from") } : {}),
  };
}

export async function readPointer(store: ObjectStore): Promise<ReleasePointer | undefined> {
  const bytes = await store.get(POINTER_KEY);
  return bytes === undefined ? undefined : parsePointer(bytes);
}

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** Writes an object and reads it back: the pointer may name it only once it is complete. */
async function putChecked(store: ObjectStore, key: string, bytes: Uint8Array, contentType: string): Promise<void> {
  const existing = await store.get(key);
  if (existing !== undefined) {
    if (sha(existing) === sha(bytes)) return;
    throw new Error(`${key} already holds other bytes: a version is never rewritten, choose a new version`);
  }
  await store.put(key, bytes, contentType);
  const back = await store.get(key);
  if (back === undefined || sha(back) !== sha(bytes)) throw new Error(`${key} did not read back as written`);
}

export interface Release {
  version: string;
  model: Uint8Array;
  card: Uint8Array;
  checkpoint?: Uint8Array;
}

/** Publishes a release: its objects, then the pointer naming it. Returns the new pointer. */
export async function publishRelease(store: ObjectStore, release: Release, now: Date = new Date()): Promise<ReleasePointer> {
  const ref = releaseRef(release.version);
  await putChecked(store, ref.model_key, release.model, "application/octet-stream");
  await putChecked(store, ref.card_key, release.card, "application/json");
  if (release.checkpoint) await putChecked(store, checkpointKey(release.version), release.checkpoint, "application/octet-stream");
  const current = await readPointer(store);
  const history = current ? [refOf(current), ...current.history].filter((h) => h.version !== ref.version).slice(0, HISTORY_LENGTH) : [];
  const pointer: ReleasePointer = { ...ref, promoted_at: now.toISOString(), previous: history[0] ?? null, history };
  await store.put(POINTER_KEY, Buffer.from(JSON.stringify(pointer, null, 2) + "\n"), "application/json");
  return pointer;
}

/** Points back at the previous release. Throws when there is none. */
export async function rollbackRelease(store: ObjectStore, now: Date = new Date()): Promise<ReleasePointer> {
  const current = await readPointer(store);
  if (!current) throw new Error(`no ${POINTER_KEY}: nothing has been promoted`);
  const [back, ...rest] = current.history;
  if (!back) throw new Error(`${current.version} is the only release in ${POINTER_KEY}: there is nothing to roll back to`);
  for (const key of [back.model_key, back.card_key]) {
    if (!(await store.exists(key))) throw new Error(`cannot roll back to ${back.version}: ${key} is missing`);
  }
  const pointer: ReleasePointer = {
    ...back,
    promoted_at: now.toISOString(),
    previous: rest[0] ?? null,
    history: rest,
    rolled_back_from: refOf(current),
  };
  await store.put(POINTER_KEY, Buffer.from(JSON.stringify(pointer, null, 2) + "\n"), "application/json");
  return pointer;
}

const refOf = (p: ReleaseRef): ReleaseRef => ({ version: p.version, model_key: p.model_key, card_key: p.card_key });
