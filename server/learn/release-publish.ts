import { createHash } from "node:crypto";
import type { ObjectStore } from "../storage/object-store.js";
import { checkpointKey, parsePointer, POINTER_KEY, PointerError, releaseKeys, type Pointer, type ReleaseKeys } from "./model-release.js";

/**
 * Writes releases in the layout of model-release.ts (`npm run registry:learn`
 * promotes and rolls back with it). A version's objects are written first and
 * never rewritten; the pointer is written last, after they read back complete,
 * so a replica that reads the pointer always finds the objects it names.
 *
 * A rollback makes history[0] current again and drops it from the history, so
 * rolling back twice goes two releases back; the release rolled back from is
 * named in `rolled_back_from`.
 */

export const HISTORY_LENGTH = 10;

/** The pointer, or undefined when nothing has been promoted; throws on a malformed one. */
export async function readPointer(store: ObjectStore): Promise<Pointer | undefined> {
  const bytes = await store.get(POINTER_KEY);
  if (bytes === undefined) return undefined;
  const p = parsePointer(bytes);
  if (p instanceof PointerError) throw p;
  return p;
}

/** A pointer's history; one written without it reads as its previous. */
export const historyOf = (p: Pointer): ReleaseKeys[] => p.history ?? (p.previous ? [p.previous] : []);

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
export async function publishRelease(store: ObjectStore, release: Release, now: Date = new Date()): Promise<Pointer> {
  const ref = releaseKeys(release.version);
  await putChecked(store, ref.model_key, release.model, "application/octet-stream");
  await putChecked(store, ref.card_key, release.card, "application/json");
  if (release.checkpoint) await putChecked(store, checkpointKey(release.version), release.checkpoint, "application/octet-stream");
  const current = await readPointer(store);
  const history = current ? [refOf(current), ...historyOf(current)].filter((h) => h.version !== ref.version).slice(0, HISTORY_LENGTH) : [];
  const pointer: Pointer = { ...ref, promoted_at: now.toISOString(), previous: history[0] ?? null, history };
  await store.put(POINTER_KEY, Buffer.from(JSON.stringify(pointer, null, 2) + "\n"), "application/json");
  return pointer;
}

/** Points back at the previous release. Throws when there is none. */
export async function rollbackRelease(store: ObjectStore, now: Date = new Date()): Promise<Pointer> {
  const current = await readPointer(store);
  if (!current) throw new Error(`no ${POINTER_KEY}: nothing has been promoted`);
  const [back, ...rest] = historyOf(current);
  if (!back) throw new Error(`${current.version} is the only release in ${POINTER_KEY}: there is nothing to roll back to`);
  for (const key of [back.model_key, back.card_key]) {
    if (!(await store.exists(key))) throw new Error(`cannot roll back to ${back.version}: ${key} is missing`);
  }
  const pointer: Pointer = {
    ...back,
    promoted_at: now.toISOString(),
    previous: rest[0] ?? null,
    history: rest,
    rolled_back_from: refOf(current),
  };
  await store.put(POINTER_KEY, Buffer.from(JSON.stringify(pointer, null, 2) + "\n"), "application/json");
  return pointer;
}

const refOf = (p: ReleaseKeys): ReleaseKeys => ({ version: p.version, model_key: p.model_key, card_key: p.card_key });
