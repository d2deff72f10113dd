import { ConfigError, loadConfig, type Config } from "../config.js";
import { openDatabase, type Database } from "../db/database.js";
import { migrate } from "../db/migrations.js";
import { createImageEmbedder } from "../embed-image.js";
import { preprocessPoolFromConfig, type PreprocessPool } from "../image/preprocess-pool.js";
import { createLogger } from "../log.js";
import { modelHolderFromConfig, type ModelHolder } from "../model/model-holder.js";
import { createFlows } from "../registry/flows.js";
import type { ReembedReport } from "../registry/types.js";
import { createRegistry } from "../registry/registry.js";
import { databaseConfig } from "../db/open.js";
import { openObjectStore } from "../storage/open.js";
import { EXIT_FAILED, EXIT_OK, EXIT_USAGE, readArgs, runIfEntryPoint, stdio, UsageError, type Io } from "./cli.js";

/**
 * Moves every enrolled embedding to the model the server's environment names:
 *
 *   npm run registry:reembed [-- --wait-seconds 300]
 *
 * Same configuration as the server (MODEL_PATH and its card, DB_* or
 * PGLITE_DIR, NCP_* or OBJECT_STORE_DIR). The model's version becomes the
 * registry's current one, also when it was seen before (a rollback: replicas
 * on other versions then stop answering 1:N until they run it), and the
 * embeddings of every other version are re-embedded from the stored photos,
 * as a server's background sweep does and under the same lock, so it never
 * runs beside a replica's sweep (it waits for that one to finish).
 *
 * Exit codes: 0 every embedding is on the model's version; 1 the model, the
 * database or the store failed, or photos are missing or unreadable (listed
 * on stderr; those pets keep their earlier embeddings); 2 usage or
 * configuration. With PGlite the server must be stopped first.
 */

export const USAGE = "usage: npm run registry:reembed [-- --wait-seconds N]";

/** One line for the operator: what moved, from which versions, what did not. */
export function summary(r: ReembedReport, version: string): string {
  const from = Object.entries(r.from).map(([v, n]) => `${n} from ${v}`);
  return (
    `re-embedded ${r.embeddings} embedding(s) of ${r.pets} pet(s) to model version ${version}` +
    (from.length ? ` (${from.join(", ")})` : "") +
    `; ${r.missing.length} photo(s) missing or unreadable`
  );
}

function options(argv: string[]): { waitSeconds: number } {
  const { values, positionals } = readArgs(argv, {
    options: { "wait-seconds": { type: "string" } },
    unknown: (arg) => `unknown argument ${JSON.stringify(arg)}`,
    missingValue: () => `--wait-seconds must be a whole number, got undefined`,
  });
  if (positionals.length > 0) throw new UsageError(`unknown argument ${JSON.stringify(positionals[0])}`);
  const v = values["wait-seconds"] as string | undefined;
  if (v !== undefined && !/^\d+$/.test(v)) throw new UsageError(`--wait-seconds must be a whole number, got ${JSON.stringify(v)}`);
  return { waitSeconds: v === undefined ? 300 : Number(v) };
}

export async function main(
  argv: string[] = process.argv.slice(2),
  env: Record<string, string | undefined> = process.env,
  io: Io = stdio,
): Promise<number> {
  let opts: { waitSeconds: number };
  let config: Config;
  try {
    opts = options(argv);
    config = loadConfig(env);
  } catch (e) {
    io.err(`registry:reembed: ${(e as Error).message}`);
    if (!(e instanceof ConfigError)) io.err(USAGE);
    return EXIT_USAGE;
  }

  // Model logs go to stderr, the summary to stdout.
  const log = createLogger("warn", io.err);
  let model: ModelHolder | undefined;
  let pool: PreprocessPool | undefined;
  let db: Database | undefined;
  try {
    model = modelHolderFromConfig(config, log);
    await model.load();
    const state = model.state();
    if (state.status !== "ready") {
      io.err(`registry:reembed: model ${config.modelPath} not loaded: ${state.status === "failed" ? state.reason : state.status}`);
      return EXIT_FAILED;
    }
    const m = state.model;
    db = await openDatabase(databaseConfig(config));
    await migrate(db);
    const registry = createRegistry(db);
    pool = preprocessPoolFromConfig(config);
    const flows = createFlows({
      store: openObjectStore(config),
      registry,
      embed: createImageEmbedder(model, pool),
      calibration: m.calibration,
      registerPairThreshold: m.registerPairThreshold,
      modelVersion: m.version,
      log: (event, fields) => io.err(JSON.stringify({ event, ...fields })),
    });
    await registry.adoptModelVersion(m.version, true);
    io.err(`registry:reembed: model version ${m.version} is the registry's current one`);

    const deadline = Date.now() + opts.waitSeconds * 1000;
    for (let waited = false; ; waited = true) {
      const outcome = await registry.withSweepLock(() => flows.migrateStale());
      if (outcome.ran) {
        const r = outcome.result;
        io.out(summary(r, m.version));
        for (const x of r.missing) io.err(`registry:reembed: not moved: ${x.imageKey} (pet ${x.petDid}): photo missing or unreadable`);
        if (r.superseded > 0) {
          io.err("registry:reembed: another model version was adopted meanwhile; its servers move the rest");
          return EXIT_FAILED;
        }
        return r.missing.length > 0 ? EXIT_FAILED : EXIT_OK;
      }
      if (Date.now() > deadline) {
        io.err(`registry:reembed: a replica's sweep still holds the lock after ${opts.waitSeconds} s; run again later`);
        return EXIT_FAILED;
      }
      if (!waited) io.err("registry:reembed: a replica is sweeping; waiting for it to finish");
      await new Promise((r) => setTimeout(r, 1000));
    }
  } catch (e) {
    io.err(`registry:reembed: ${e instanceof Error ? e.message : String(e)}`);
    return EXIT_FAILED;
  } finally {
    await Promise.allSettled([pool?.close(), model?.close(), db?.close()]);
  }
}

runIfEntryPoint(import.meta.url, "registry:reembed", () => main());
