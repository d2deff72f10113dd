import { existsSync } from "node:fs";
import { mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { ConfigError, loadConfig, type Config } from "../config.js";
import { openDatabase, type Database } from "../db/database.js";
import { MIGRATIONS } from "../db/migrations.js";
import { createRegistry } from "../registry/registry.js";
import { databaseConfig } from "../db/open.js";
import { openObjectStore } from "../storage/open.js";
import { EXIT_FAILED, EXIT_OK, EXIT_USAGE, readArgs, runIfEntryPoint, stdio, UsageError, type Io } from "./cli.js";

import { errorText, writeExport, type ExportOptions, type ExportSource, type Manifest } from "./export-writer.js";

export { UsageError };
export { folderOf, writeExport } from "./export-writer.js";
export type { ExportOptions, ExportSource, Manifest, ManifestPet, ManifestPhoto, SkippedEntry } from "./export-writer.js";

/**
 * Training data from the registry:
 *
 *   npm run registry:export -- <out> [--since YYYY-MM-DD] [--min-photos 2] [--with-verifications] [--with-refused]
 *
 * Reads the registry and the object store the server's environment names
 * (DB_* or PGLITE_DIR, NCP_* or OBJECT_STORE_DIR) and writes the enrolment
 * photos of the pets whose guardian consented to training, one folder per
 * pet, as the stored bytes:
 *
 *   <out>/<folder>/image_1.jpg, image_2.jpg, ... [verify_{ms}.jpg ...]
 *   <out>/manifest.json
 *
 * With --with-refused, the kept photos of refused registrations whose owner
 * consented (server/registry/refused-photos.ts) are added as one folder per
 * refusal, `refused_{day}_{id}`, listed under `refused` in the manifest with
 * `"refused": true`; those past REFUSED_PHOTO_RETENTION_DAYS are left out.
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

export const USAGE =
  "usage: npm run registry:export -- <out> [--since YYYY-MM-DD] [--min-photos N] [--with-verifications] [--with-refused]";

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
      "with-refused": { type: "boolean" },
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
    if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < 1)
      throw new UsageError(`--min-photos must be a whole number >= 1, got ${JSON.stringify(v)}`);
    minPhotos = n;
  }
  if (positionals.length > 1) throw new UsageError(`more than one output folder: ${positionals[0]}, ${positionals[1]}`);
  const out = positionals[0];
  if (out === undefined || out.trim() === "") throw new UsageError("the output folder is required");
  return {
    out: path.resolve(out),
    since,
    minPhotos,
    withVerifications: values["with-verifications"] === true,
    withRefused: values["with-refused"] === true,
  };
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
      throw new ExportError(
        `the registry schema is at version ${have}, this export needs ${need}: start the upgraded server once to migrate it`,
        2,
      );
    }
  } catch (e) {
    await db.close().catch(() => {});
    throw e instanceof ExportError ? e : new ExportError(`registry database unreachable: ${errorText(e)}`, 1, { cause: e });
  }
  return {
    src: {
      registry: createRegistry(db),
      store,
      database:
        db.kind === "postgres" ? `postgres ${config.pg!.host}:${config.pg!.port}/${config.pg!.database}` : `pglite ${config.pgliteDir}`,
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
      throw new ExportError(code ? `writing the export failed: ${errorText(e)}` : `registry database failed: ${errorText(e)}`, 1, {
        cause: e,
      });
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
    const m = await exportRegistry(config, { ...opts, refusedRetentionDays: config.refusedPhotoRetentionDays }, (line) => io.err(line));
    io.out(
      `exported ${m.totals.pets} pet(s), ${m.totals.photos} photo(s) ` +
        `(${m.totals.enrolmentPhotos} enrolment, ${m.totals.verificationPhotos} verification) to ${opts.out}; ` +
        (opts.withRefused ? `${m.totals.refused} refused registration(s); ` : "") +
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
