import { createHash } from "node:crypto";
import { mkdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import type { AuditRecord, PetRecord, Registry } from "../registry/registry.js";
import { listRefused, firstKeptDay, type RefusedMeta } from "../registry/refused-photos.js";
import { petPrefix } from "../storage/keys.js";
import type { ObjectStore } from "../storage/object-store.js";

// What `npm run registry:export` writes: one folder per consenting pet and
// manifest.json (the command line, its checks and the move into place are
// in registry-export.ts).

export interface ExportOptions {
  out: string;
  /** Pets registered before this instant (UTC midnight of --since) are left out. */
  since?: Date;
  /** Pets with fewer photos to write are left out. Default 2. */
  minPhotos: number;
  /** Add the stored shots of verifications answered SAME. */
  withVerifications: boolean;
  /** Add the kept photos of refused registrations (with consent), one folder each, listed under `refused`. */
  withRefused?: boolean;
  /** Refusals from days before the retention are left out (the server's sweep deletes them). Default 90. */
  refusedRetentionDays?: number;
}

export interface ManifestPhoto {
  key: string;
  file: string;
  source: "enrolment" | "verification";
  bytes: number;
  sha256: string;
  /** Enrolment photos: the model version of the stored embedding. */
  modelVersion?: string;
  /** Verification photos: the audit row's kind, time and score. */
  audit?: "verify" | "transfer";
  verdict?: string;
  similarity?: number;
  verifiedAt?: string;
}

export interface ManifestPet {
  petDid: string;
  folder: string;
  registeredAt: string;
  /** Model version of the pet's enrolled embeddings ("mixed" while a re-embedding is unfinished). */
  modelVersion: string;
  status: string;
  trainingConsent: true;
  /** When consent was last granted: the consent change, else the registration. */
  consentRecordedAt: string;
  photos: ManifestPhoto[];
}

/** A refused registration's photos: one dog by its owner's word, but no registered pet. */
export interface ManifestRefused {
  refused: true;
  /** `refused-registrations/{day}/{id}/` */
  key: string;
  folder: string;
  refusedAt: string;
  refusal: RefusedMeta["refusal"];
  errorCode: string;
  similarity: number;
  modelVersion: string;
  trainingConsent: true;
  photos: Array<{ key: string; file: string; bytes: number; sha256: string }>;
}

export interface SkippedEntry {
  /** Empty for a refused registration (it has no pet), whose `key` is then its photo or its folder. */
  petDid: string;
  /** Set for a photo; absent when the whole pet was left out. */
  key?: string;
  reason: string;
}

export interface Manifest {
  format: "nosepaw-registry-export/1";
  exportedAt: string;
  options: { since: string | null; minPhotos: number; withVerifications: boolean; withRefused: boolean };
  source: { database: string; objectStore: string };
  pets: ManifestPet[];
  /** With --with-refused: extra dogs from refused registrations, each flagged `refused: true`. */
  refused: ManifestRefused[];
  skipped: SkippedEntry[];
  totals: { pets: number; photos: number; enrolmentPhotos: number; verificationPhotos: number; refused: number; skipped: number };
}

/** A folder name for a pet: the hex part of `did:ethr:besu:0x...`, `pet_NAME` for `did:pet:NAME`. */
export function folderOf(petDid: string): string {
  const ethr = /^did:ethr:besu:(0x[0-9a-fA-F]{40})$/.exec(petDid);
  if (ethr) return ethr[1];
  const pet = /^did:pet:([A-Za-z0-9][A-Za-z0-9._-]*)$/.exec(petDid);
  if (pet) return `pet_${pet[1]}`;
  return `did_${createHash("sha256").update(petDid).digest("hex").slice(0, 40)}`;
}

const SAFE_FILE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$/;
const VERIFY_FILE = /^verify_\d+\.jpg$/;

export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Everything the export reads from; the tests build one over their own backends. */
export interface ExportSource {
  registry: Registry;
  store: ObjectStore;
  database: string;
  objectStore: string;
}

interface Loaded {
  photo: Omit<ManifestPhoto, "bytes" | "sha256">;
  data: Uint8Array;
}

/**
 * Writes the export into `dir` (which must exist and be empty) and returns
 * its manifest. Per-photo problems are skipped and reported through `report`;
 * database or output failures throw.
 */
export async function writeExport(
  src: ExportSource,
  opts: ExportOptions,
  dir: string,
  report: (line: string) => void = () => {},
): Promise<Manifest> {
  const { registry, store } = src;
  const skipped: SkippedEntry[] = [];
  const skip = (entry: SkippedEntry) => {
    skipped.push(entry);
    report(`skipped ${entry.key ?? entry.petDid}: ${entry.reason}`);
  };

  const read = async (petDid: string, key: string): Promise<Uint8Array | undefined> => {
    let data: Uint8Array | undefined;
    try {
      data = await store.get(key);
    } catch (e) {
      skip({ petDid, key, reason: `unreadable: ${errorText(e)}` });
      return undefined;
    }
    if (data === undefined) skip({ petDid, key, reason: "missing from the object store" });
    else if (data.length === 0) skip({ petDid, key, reason: "empty object" });
    else return data;
    return undefined;
  };

  const fileOf = (petDid: string, key: string): string | undefined => {
    const prefix = petPrefix(petDid);
    const name = key.startsWith(prefix) ? key.slice(prefix.length) : "";
    if (!SAFE_FILE.test(name)) {
      skip({ petDid, key, reason: "key is not a file directly under the pet's folder" });
      return undefined;
    }
    return name;
  };

  const pets = await registry.listPets({ trainingConsent: true, registeredSince: opts.since });
  const written: ManifestPet[] = [];
  const folders = new Set<string>();

  for (const pet of pets) {
    const embeddings = await registry.embeddingsOf(pet.petDid);
    const audit = await registry.auditOf(pet.petDid, ["consent", "verify", "transfer"]);
    const loaded: Loaded[] = [];
    const files = new Set<string>();

    const versionOf = new Map(embeddings.map((e) => [e.imageKey, e.modelVersion]));
    const enrolled = pet.imageKeys.length > 0 ? pet.imageKeys : embeddings.map((e) => e.imageKey);
    for (const key of enrolled) {
      const file = fileOf(pet.petDid, key);
      if (!file || files.has(file)) continue;
      const data = await read(pet.petDid, key);
      if (!data) continue;
      files.add(file);
      loaded.push({ photo: { key, file, source: "enrolment", ...(versionOf.has(key) ? { modelVersion: versionOf.get(key) } : {}) }, data });
    }

    if (opts.withVerifications) {
      for (const row of verificationsOf(pet, audit)) {
        const key = row.detail.imageKey as string;
        const file = fileOf(pet.petDid, key);
        if (!file || files.has(file)) continue;
        const data = await read(pet.petDid, key);
        if (!data) continue;
        files.add(file);
        loaded.push({
          photo: {
            key,
            file,
            source: "verification",
            audit: row.kind as "verify" | "transfer",
            verdict: row.verdict ?? undefined,
            ...(row.similarity !== null ? { similarity: row.similarity } : {}),
            verifiedAt: row.createdAt.toISOString(),
          },
          data,
        });
      }
    }

    if (loaded.length < opts.minPhotos) {
      skip({ petDid: pet.petDid, reason: `${loaded.length} readable photo(s), fewer than --min-photos ${opts.minPhotos}` });
      continue;
    }

    let folder = folderOf(pet.petDid);
    // Case-insensitive file systems could fold two DIDs differing only in case together.
    if (folders.has(folder.toLowerCase())) folder = `${folder}_${createHash("sha256").update(pet.petDid).digest("hex").slice(0, 8)}`;
    folders.add(folder.toLowerCase());
    await mkdir(path.join(dir, folder));
    const photos: ManifestPhoto[] = [];
    for (const l of loaded) {
      await writeFile(path.join(dir, folder, l.photo.file), l.data);
      photos.push({ ...l.photo, bytes: l.data.length, sha256: createHash("sha256").update(l.data).digest("hex") });
    }
    const versions = [...new Set(embeddings.map((e) => e.modelVersion))];
    written.push({
      petDid: pet.petDid,
      folder,
      registeredAt: pet.createdAt.toISOString(),
      modelVersion: versions.length === 0 ? pet.modelVersion : versions.length === 1 ? versions[0] : "mixed",
      status: pet.status,
      trainingConsent: true,
      consentRecordedAt: consentRecordedAt(pet, audit).toISOString(),
      photos,
    });
  }

  // Consent withdrawn while the export ran: drop those pets before anything is published.
  const still = new Set((await registry.listPets({ trainingConsent: true, registeredSince: opts.since })).map((p) => p.petDid));
  const kept = [];
  for (const p of written) {
    if (still.has(p.petDid)) kept.push(p);
    else {
      await rm(path.join(dir, p.folder), { recursive: true, force: true });
      skip({ petDid: p.petDid, reason: "consent withdrawn during the export" });
    }
  }

  const refused = opts.withRefused ? await writeRefused(src.store, opts, dir, folders, skip) : [];
  const photos = kept.flatMap((p) => p.photos);
  const manifest: Manifest = {
    format: "nosepaw-registry-export/1",
    exportedAt: new Date().toISOString(),
    options: {
      since: opts.since ? opts.since.toISOString().slice(0, 10) : null,
      minPhotos: opts.minPhotos,
      withVerifications: opts.withVerifications,
      withRefused: opts.withRefused === true,
    },
    source: { database: src.database, objectStore: src.objectStore },
    pets: kept,
    refused,
    skipped,
    totals: {
      pets: kept.length,
      photos: photos.length,
      enrolmentPhotos: photos.filter((p) => p.source === "enrolment").length,
      verificationPhotos: photos.filter((p) => p.source === "verification").length,
      refused: refused.length,
      skipped: skipped.length,
    },
  };
  await writeFile(path.join(dir, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");
  return manifest;
}

/**
 * Verify and transfer rows answered SAME whose photo was a verification shot
 * of this pet (verify_{ms}.jpg under its folder); a check run on an enrolment
 * photo's key is not a new photo. Each key once.
 */
function verificationsOf(pet: PetRecord, audit: AuditRecord[]): AuditRecord[] {
  const prefix = petPrefix(pet.petDid);
  const seen = new Set<string>();
  return audit.filter((r) => {
    if ((r.kind !== "verify" && r.kind !== "transfer") || r.verdict !== "SAME") return false;
    const key = r.detail?.imageKey;
    if (typeof key !== "string" || !key.startsWith(prefix) || !VERIFY_FILE.test(key.slice(prefix.length)) || seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

function consentRecordedAt(pet: PetRecord, audit: AuditRecord[]): Date {
  const granted = audit.filter((r) => r.kind === "consent" && r.detail?.trainingConsent === true);
  return granted.length ? granted[granted.length - 1].createdAt : pet.createdAt;
}

/**
 * The kept photos of refused registrations, one folder each
 * (`refused_{day}_{id}`), for the days within the retention. A folder
 * without a readable meta.json (a torn write) or with fewer readable photos
 * than --min-photos is skipped.
 */
async function writeRefused(
  store: ObjectStore,
  opts: ExportOptions,
  dir: string,
  folders: Set<string>,
  skip: (entry: SkippedEntry) => void,
): Promise<ManifestRefused[]> {
  const firstDay = firstKeptDay(opts.refusedRetentionDays ?? 90);
  const out: ManifestRefused[] = [];
  for (const entry of await listRefused(store)) {
    if (entry.day < firstDay) continue;
    const skipWhole = (reason: string) => skip({ petDid: "", key: entry.folder, reason });
    if (!entry.meta) {
      skipWhole("refused registration without a readable meta.json");
      continue;
    }
    if (opts.since && entry.meta.time < opts.since.toISOString()) continue;
    const loaded: Array<{ key: string; file: string; data: Uint8Array }> = [];
    for (const key of entry.images) {
      const data = await store.get(key).catch(() => undefined);
      if (data && data.length > 0) loaded.push({ key, file: key.slice(entry.folder.length), data });
      else skip({ petDid: "", key, reason: "missing, empty or unreadable" });
    }
    if (loaded.length < opts.minPhotos) {
      skipWhole(`${loaded.length} readable photo(s), fewer than --min-photos ${opts.minPhotos}`);
      continue;
    }
    let folder = `refused_${entry.day}_${entry.id}`;
    if (folders.has(folder.toLowerCase())) folder = `${folder}_${createHash("sha256").update(entry.folder).digest("hex").slice(0, 8)}`;
    folders.add(folder.toLowerCase());
    await mkdir(path.join(dir, folder));
    const photos: ManifestRefused["photos"] = [];
    for (const l of loaded) {
      await writeFile(path.join(dir, folder, l.file), l.data);
      photos.push({ key: l.key, file: l.file, bytes: l.data.length, sha256: createHash("sha256").update(l.data).digest("hex") });
    }
    const m = entry.meta;
    out.push({
      refused: true,
      key: entry.folder,
      folder,
      refusedAt: m.time,
      refusal: m.refusal,
      errorCode: m.errorCode,
      similarity: m.similarity,
      modelVersion: m.modelVersion,
      trainingConsent: true,
      photos,
    });
  }
  return out;
}
