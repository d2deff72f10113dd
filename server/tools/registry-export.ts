import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { ConfigError, loadConfig, type Config } from "../config.js";
import { openDatabase, type Database } from "../db/database.js";
import { MIGRATIONS } from "../db/migrations.js";
import { createRegistry, type AuditRecord, type PetRecord, type Registry } from "../registry/registry.js";
import { databaseConfig } from "../db/open.js";
import { openObjectStore } from "../storage/open.js";
import { petPrefix } from "../storage/keys.js";
import type { ObjectStore } from "../storage/object-store.js";
import { EXIT_FAILED, EXIT_OK, EXIT_USAGE, readArgs, runIfEntryPoint, stdio, UsageError, type Io } from "./cli.js";

export { UsageError };

/**
 * Training data from the registry:
 *
 *   npm run registry:export -- <out> [--since YYYY-MM-DD] [--min-photos 2] [--with-verifications]
 *
 * Reads the registry and the object store the server's environment names
 * (DB_* or PGLITE_DIR, NCP_* or OBJECT_STORE_DIR) and writes the enrolment
 * photos of the pets whose guardian consented to training, one folder per
 * pet, as the stored bytes:
 *
 *   <out>/<folder>/image_1.jpg, image_2.jpg, ... [verify_{ms}.jpg ...]
 *   <out>/manifest.json
 *
 * which is the layout `npm run model:eval -- <out>` and
 * `npm run model:train -- --data <out>` read (one sub-folder per dog).
 *
 * The export reads only: it writes nothing to the database or the store. It
 * is built in a sibling folder and moved into place at the end, replacing an
 * earlier export in <out>, so the folders of pets whose consent has been
 * withdrawn since do not linger. A photo that cannot be read is reported,
 * listed under `skipped` and left out; the exit code is non-zero only when
 * the configuration is wrong or the registry, the store or <out> cannot be
 * used (2: usage or configuration, 1: connection or output failure).
 *
 * With PGlite (no DB_HOST) the data folder must not be open in a running
 * server: stop it first, or export from a copy of the folder.
 */

export interface ExportOptions {
  out: string;
  /** Pets registered before this instant (UTC midnight of --since) are left out. */
  since?: Date;
  /** Pets with fewer photos to write are left out. Default 2. */
  minPhotos: number;
  /** Add the stored shots of verifications answered SAME. */
  withVerifications: boolean;
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

export interface SkippedEntry {
  petDid: string;
  /** Set for a photo; absent when the whole pet was left out. */
  key?: string;
  reason: string;
}

export interface Manifest {
  format: "nosepaw-registry-export/1";
  exportedAt: string;
  options: { since: string | null; minPhotos: number; withVerifications: boolean };
  source: { database: string; objectStore: string };
  pets: ManifestPet[];
  skipped: SkippedEntry[];
  totals: { pets: number; photos: number; enrolmentPhotos: number; verificationPhotos: number; skipped: number };
}

export const USAGE = "usage: npm run registry:export -- <out> [--since YYYY-MM-DD] [--min-photos N] [--with-verifications]";

/** Raised for failures that stop the export; `exitCode` says which kind. */
export class ExportError extends Error {
  constructor(
    message: string,
    readonly exitCode: 1 | 2,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function parseArgs(argv: string[]): ExportOptions {
  const { values, positionals } = readArgs(argv, {
    options: {
      since: { type: "string" },
      "min-photos": { type: "string" },
      "with-verifications": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
    unknown: (arg) => `unknown option ${arg}`,
    missingValue: (option) => `${option} needs a value`,
  });
  if (values.help) throw new UsageError("");
  let since: Date | undefined;
  if (values.since !== undefined) {
    const v = values.since as string;
    const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(v);
    const d = m ? new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]))) : undefined;
    if (!d || d.toISOString().slice(0, 10) !== v) throw new UsageError(`--since must be a date YYYY-MM-DD, got ${JSON.stringify(v)}`);
    since = d;
  }
  let minPhotos = 2;
  if (values["min-photos"] !== undefined) {
    const v = values["min-photos"] as string;
    const n = Number(v);
    if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < 1) throw new UsageError(`--min-photos must be a whole number >= 1, got ${JSON.stringify(v)}`);
    minPhotos = n;
  }
  if (positionals.length > 1) throw new UsageError(`more than one output folder: ${positionals[0]}, ${positionals[1]}`);
  const out = positionals[0];
  if (out === undefined || out.trim() === "") throw new UsageError("the output folder is required");
  return { out: path.resolve(out), since, minPhotos, withVerifications: values["with-verifications"] === true };
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

const errorText = (e: unknown) => (e instanceof Error ? e.message : String(e));

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
export async function writeExport(src: ExportSource, opts: ExportOptions, dir: string, report: (line: string) => void = () => {}): Promise<Manifest> {
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

  const photos = kept.flatMap((p) => p.photos);
  const manifest: Manifest = {
    format: "nosepaw-registry-export/1",
    exportedAt: new Date().toISOString(),
    options: { since: opts.since ? opts.since.toISOString().slice(0, 10) : null, minPhotos: opts.minPhotos, withVerifications: opts.withVerifications },
    source: { database: src.database, objectStore: src.objectStore },
    pets: kept,
    skipped,
    totals: {
      pets: kept.length,
      photos: photos.length,
      enrolmentPhotos: photos.filter((p) => p.source === "enrolment").length,
      verificationPhotos: photos.filter((p) => p.source === "verification").length,
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

/** Checks <out> before anything is opened: missing, empty, or an earlier export. */
async function checkOut(out: string): Promise<void> {
  let st;
  try {
    st = await stat(out);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
    throw new ExportError(`cannot use ${out}: ${errorText(e)}`, 2);
  }
  if (!st.isDirectory()) throw new ExportError(`${out} exists and is not a folder`, 2);
  const entries = await readdir(out);
  if (entries.length > 0 && !entries.includes("manifest.json")) {
    throw new ExportError(`${out} is not empty and holds no manifest.json of an earlier export; choose an empty or new folder`, 2);
  }
}

/** Opens the registry and the store as the server does, read-only in effect. */
async function openSource(config: Config): Promise<{ src: ExportSource; close(): Promise<void> }> {
  if (config.s3 === undefined && !existsSync(config.objectDir)) {
    throw new ExportError(`no object store at ${config.objectDir} (set OBJECT_STORE_DIR or DATA_DIR, or NCP_* for S3)`, 2);
  }
  if (config.pg === undefined && !existsSync(path.join(config.pgliteDir, "PG_VERSION"))) {
    throw new ExportError(`no embedded registry at ${config.pgliteDir} (set PGLITE_DIR or DATA_DIR, or DB_* for PostgreSQL)`, 2);
  }
  const store = openObjectStore(config);
  try {
    await store.ping();
  } catch (e) {
    throw new ExportError(`object store unreachable: ${errorText(e)}`, 1, { cause: e });
  }
  let db: Database;
  try {
    db = await openDatabase(databaseConfig(config, () => {}));
    await db.query("SELECT 1");
  } catch (e) {
    throw new ExportError(`registry database unreachable: ${errorText(e)}`, 1, { cause: e });
  }
  try {
    const need = Math.max(...MIGRATIONS.map((m) => m.version));
    let have = 0;
    try {
      const { rows } = await db.query<{ v: number | null }>("SELECT max(version) AS v FROM schema_migrations");
      have = Number(rows[0]?.v ?? 0);
    } catch {
      have = 0;
    }
    if (have < need) {
      throw new ExportError(`the registry schema is at version ${have}, this export needs ${need}: start the upgraded server once to migrate it`, 2);
    }
  } catch (e) {
    await db.close().catch(() => {});
    throw e instanceof ExportError ? e : new ExportError(`registry database unreachable: ${errorText(e)}`, 1, { cause: e });
  }
  return {
    src: {
      registry: createRegistry(db),
      store,
      database: db.kind === "postgres" ? `postgres ${config.pg!.host}:${config.pg!.port}/${config.pg!.database}` : `pglite ${config.pgliteDir}`,
      objectStore: config.s3 ? `s3 ${config.s3.endpoint}/${config.s3.bucket}` : `folder ${config.objectDir}`,
    },
    close: () => db.close(),
  };
}

/**
 * Runs the export into opts.out: built in a sibling folder, then moved into
 * place (an earlier export there is replaced as a whole).
 */
export async function exportRegistry(config: Config, opts: ExportOptions, report: (line: string) => void = () => {}): Promise<Manifest> {
  await checkOut(opts.out);
  const { src, close } = await openSource(config);
  const staging = `${opts.out}.partial-${process.pid}`;
  try {
    await rm(staging, { recursive: true, force: true });
    try {
      await mkdir(staging, { recursive: true });
    } catch (e) {
      throw new ExportError(`cannot write next to ${opts.out}: ${errorText(e)}`, 1, { cause: e });
    }
    let manifest: Manifest;
    try {
      manifest = await writeExport(src, opts, staging, report);
    } catch (e) {
      if (e instanceof ExportError) throw e;
      const code = (e as NodeJS.ErrnoException)?.code;
      throw new ExportError(code ? `writing the export failed: ${errorText(e)}` : `registry database failed: ${errorText(e)}`, 1, { cause: e });
    }
    await checkOut(opts.out);
    const previous = `${opts.out}.previous-${process.pid}`;
    const hadPrevious = existsSync(opts.out);
    if (hadPrevious) await rename(opts.out, previous);
    await rename(staging, opts.out);
    if (hadPrevious) await rm(previous, { recursive: true, force: true });
    return manifest;
  } finally {
    await rm(staging, { recursive: true, force: true }).catch(() => {});
    await close().catch(() => {});
  }
}

/** The command line: returns the exit code (0 done, 1 connection or output failure, 2 usage or configuration). */
export async function main(
  argv: string[] = process.argv.slice(2),
  env: Record<string, string | undefined> = process.env,
  io: Io = stdio,
): Promise<number> {
  let opts: ExportOptions;
  try {
    opts = parseArgs(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    if (e.message) io.err(`registry:export: ${e.message}`);
    io.err(USAGE);
    return e.message ? EXIT_USAGE : EXIT_OK;
  }
  let config: Config;
  try {
    config = loadConfig(env);
  } catch (e) {
    if (e instanceof ConfigError) {
      io.err(`registry:export: ${e.message}`);
      return EXIT_USAGE;
    }
    throw e;
  }
  try {
    const m = await exportRegistry(config, opts, (line) => io.err(line));
    io.out(
      `exported ${m.totals.pets} pet(s), ${m.totals.photos} photo(s) ` +
        `(${m.totals.enrolmentPhotos} enrolment, ${m.totals.verificationPhotos} verification) to ${opts.out}; ` +
        `skipped ${m.totals.skipped}` +
        (m.totals.skipped ? ` (see "skipped" in ${path.join(opts.out, "manifest.json")})` : ""),
    );
    return EXIT_OK;
  } catch (e) {
    if (e instanceof ExportError) {
      io.err(`registry:export: ${e.message}`);
      return e.exitCode;
    }
    io.err(`registry:export: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    return EXIT_FAILED;
  }
}

runIfEntryPoint(import.meta.url, "registry:export", () => main());
