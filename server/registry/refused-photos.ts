import { randomUUID } from "node:crypto";
import { mlCodeName, type MLError } from "../errors.js";
import { REFUSED_PREFIX, refusedFolder } from "../storage/keys.js";
import type { ObjectStore } from "../storage/object-store.js";
import { DuplicatePetError, InconsistentPhotosError } from "./errors.js";

/**
 * The photos of a registration refused as inconsistent or as a duplicate,
 * kept when the owner gave training consent on that request: labelled
 * material (the owner asserts one dog, one shoot) of exactly the dogs the
 * model fails on. Stored as received, never under a pet DID:
 *
 *   refused-registrations/{YYYY-MM-DD}/{id}/image_1.jpg, image_2.jpg, ...
 *   refused-registrations/{YYYY-MM-DD}/{id}/meta.json    written last
 *
 * kept REFUSED_PHOTO_RETENTION_DAYS (refused-retention.ts purges them) and
 * exported by `registry:export --with-refused`.
 */

export const REFUSED_FORMAT = "nosepaw-refused-registration/1";

export interface RefusedMeta {
  format: typeof REFUSED_FORMAT;
  /** ISO time of the refusal. */
  time: string;
  refusal: "inconsistent_photos" | "duplicate_pet";
  /** The error code the caller got (ML_4006). */
  errorCode: string;
  /** Inconsistent: the refused pair's similarity; duplicate: the lowest score against the enrolled pet. */
  similarity: number;
  /** Inconsistent: the refused pair (1-based) and, with geometry, its inliers. */
  pair?: [number, number];
  inliers?: number;
  modelVersion: string;
  trainingConsent: true;
  requestId?: string;
  photos: number;
}

/** A request id used as the folder name only when it is a safe key segment. */
const SAFE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** The refusals whose photos are kept; undefined for any other failure. */
export function refusalOf(e: unknown): Pick<RefusedMeta, "refusal" | "similarity" | "pair" | "inliers"> | undefined {
  if (e instanceof InconsistentPhotosError) {
    return {
      refusal: "inconsistent_photos",
      similarity: e.similarity,
      pair: e.pair,
      ...(e.geometry ? { inliers: e.geometry.inliers } : {}),
    };
  }
  if (e instanceof DuplicatePetError) return { refusal: "duplicate_pet", similarity: e.similarity };
  return undefined;
}

/** Writes the photos, then meta.json; returns the folder's key prefix. A failed write removes what it wrote and throws. */
export async function keepRefusedPhotos(
  store: ObjectStore,
  e: MLError,
  o: { photos: Uint8Array[]; modelVersion: string; requestId?: string; now?: Date; contentType?: (b: Uint8Array) => string },
): Promise<string | undefined> {
  const refusal = refusalOf(e);
  if (!refusal) return undefined;
  const now = o.now ?? new Date();
  const id = o.requestId && SAFE_ID.test(o.requestId) ? o.requestId : randomUUID();
  const folder = refusedFolder(now.toISOString().slice(0, 10), id);
  const written: string[] = [];
  const meta: RefusedMeta = {
    format: REFUSED_FORMAT,
    time: now.toISOString(),
    ...refusal,
    errorCode: mlCodeName(e.code),
    modelVersion: o.modelVersion,
    trainingConsent: true,
    ...(o.requestId ? { requestId: o.requestId } : {}),
    photos: o.photos.length,
  };
  try {
    for (let i = 0; i < o.photos.length; i++) {
      const key = `${folder}image_${i + 1}.jpg`;
      await store.put(key, o.photos[i], o.contentType?.(o.photos[i]));
      written.push(key);
    }
    await store.put(`${folder}meta.json`, new TextEncoder().encode(JSON.stringify(meta, null, 2) + "\n"), "application/json");
  } catch (err) {
    for (const key of written) await store.delete(key).catch(() => {});
    throw err;
  }
  return folder;
}

export interface RefusedEntry {
  /** `refused-registrations/{day}/{id}/` */
  folder: string;
  day: string;
  id: string;
  /** Keys of the folder other than meta.json, sorted. */
  images: string[];
  meta: RefusedMeta | undefined;
}

const DAY = /^\d{4}-\d{2}-\d{2}$/;

/** Every kept refusal, grouped by folder; meta is undefined when meta.json is missing or unreadable (a torn write). */
export async function listRefused(store: ObjectStore): Promise<RefusedEntry[]> {
  const byFolder = new Map<string, { day: string; id: string; keys: string[] }>();
  for (const key of await store.list(`${REFUSED_PREFIX}/`)) {
    const parts = key.split("/");
    if (parts.length !== 4 || !DAY.test(parts[1])) continue;
    const folder = `${parts.slice(0, 3).join("/")}/`;
    const entry = byFolder.get(folder) ?? { day: parts[1], id: parts[2], keys: [] };
    entry.keys.push(key);
    byFolder.set(folder, entry);
  }
  const out: RefusedEntry[] = [];
  for (const [folder, e] of byFolder) {
    let meta: RefusedMeta | undefined;
    if (e.keys.includes(`${folder}meta.json`)) {
      try {
        const m = JSON.parse(new TextDecoder().decode(await store.get(`${folder}meta.json`)));
        if (m?.format === REFUSED_FORMAT && m.trainingConsent === true) meta = m as RefusedMeta;
      } catch {
        meta = undefined;
      }
    }
    out.push({ folder, day: e.day, id: e.id, images: e.keys.filter((k) => /\/image_\d+\.jpg$/.test(k)).sort(byNumber), meta });
  }
  return out.sort((a, b) => (a.folder < b.folder ? -1 : 1));
}

const byNumber = (a: string, b: string) => Number(/image_(\d+)/.exec(a)![1]) - Number(/image_(\d+)/.exec(b)![1]);

/** The first day still kept: days before it are past the retention. */
export function firstKeptDay(retentionDays: number, now = new Date()): string {
  return new Date(now.getTime() - retentionDays * 86_400_000).toISOString().slice(0, 10);
}
