import path from "node:path";
import { ConfigError, loadConfig, type Config } from "../config.js";
import { runLoop, releaseStore, type LearnOptions } from "../learn/loop.js";
import { rollbackRelease } from "../learn/release-publish.js";
import { EXIT_FAILED, EXIT_OK, EXIT_USAGE, readArgs, runIfEntryPoint, stdio, UsageError, type Io } from "./cli.js";

/**
 * The learning loop in one command (docs/learning.md):
 *
 *   npm run registry:learn -- [--work DIR] [--minutes 45] [--promote-to DIR] [--no-promote] [--init CKPT]
 *                             [--holdout 0.3] [--holdout-max 300] [--seed 7] [--synthetic-ids 200]
 *                             [--version V] [--bootstrap 1000] [--registration-bound 0.01] [--fresh]
 *   npm run registry:learn -- --rollback [--promote-to DIR]
 *
 * Exports the consenting pets, splits them by dog, fine-tunes the running
 * model with renders mixed in, evaluates old and new on the held-out dogs,
 * calibrates the candidate's card, chooses its registration rule, writes
 * <work>/candidate/ (model.onnx, model.pt, card.json, eval.json, report.md,
 * charts), and promotes it only when the gate passes (server/learn/gate.ts).
 * The work folder's state.json makes a rerun continue after the last
 * completed stage. Exit codes: 0 done (promoted or not: the report says),
 * 1 a stage failed, 2 usage or configuration.
 */

export const USAGE =
  "usage: npm run registry:learn -- [--work DIR] [--minutes N] [--promote-to DIR] [--no-promote] [--init CKPT] [--holdout F] " +
  "[--holdout-max N] [--seed N] [--synthetic-ids N] [--version V] [--bootstrap N] [--registration-bound F] [--fresh] | --rollback [--promote-to DIR]";

export interface Command {
  rollback: boolean;
  opts: LearnOptions;
}

function num(v: string | boolean | undefined, name: string, def: number, check: (n: number) => boolean): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (typeof v !== "string" || v.trim() === "" || !Number.isFinite(n) || !check(n))
    throw new UsageError(`${name}, got ${JSON.stringify(v)}`);
  return n;
}

export function parseArgs(argv: string[], env: Record<string, string | undefined> = process.env): Command {
  const { values, positionals } = readArgs(argv, {
    options: {
      work: { type: "string" },
      minutes: { type: "string" },
      "promote-to": { type: "string" },
      "no-promote": { type: "boolean" },
      init: { type: "string" },
      holdout: { type: "string" },
      "holdout-max": { type: "string" },
      seed: { type: "string" },
      "synthetic-ids": { type: "string" },
      version: { type: "string" },
      bootstrap: { type: "string" },
      "registration-bound": { type: "string" },
      fresh: { type: "boolean" },
      rollback: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
    unknown: (arg) => `unknown option ${arg}`,
    missingValue: (option) => `${option} needs a value`,
  });
  if (values.help) throw new UsageError("");
  if (positionals.length) throw new UsageError(`unexpected argument ${positionals[0]}`);
  const int = (n: number) => Number.isInteger(n);
  const opts: LearnOptions = {
    work: path.resolve((values.work as string | undefined) ?? path.join(env.DATA_DIR ?? "data", "learn")),
    minutes: num(values.minutes, "--minutes must be a number of minutes > 0", 45, (n) => n > 0),
    seed: num(values.seed, "--seed must be a whole number", 7, int),
    holdoutFrac: num(values.holdout, "--holdout must be a share between 0 and 1", 0.3, (n) => n > 0 && n < 1),
    holdoutMax: num(values["holdout-max"], "--holdout-max must be a whole number >= 2", 300, (n) => int(n) && n >= 2),
    init: values.init as string | undefined,
    syntheticIds: num(values["synthetic-ids"], "--synthetic-ids must be a whole number >= 2", 200, (n) => int(n) && n >= 2),
    promoteTo: values["promote-to"] as string | undefined,
    promote: values["no-promote"] !== true,
    fresh: values.fresh === true,
    version: values.version as string | undefined,
    bootstrap: num(values.bootstrap, "--bootstrap must be a whole number >= 100", 1000, (n) => int(n) && n >= 100),
    registrationBound: num(
      values["registration-bound"],
      "--registration-bound must be a share between 0 and 1",
      0.01,
      (n) => n > 0 && n < 1,
    ),
  };
  return { rollback: values.rollback === true, opts };
}

export async function main(
  argv: string[] = process.argv.slice(2),
  env: Record<string, string | undefined> = process.env,
  io: Io = stdio,
): Promise<number> {
  let cmd: Command;
  let config: Config;
  try {
    cmd = parseArgs(argv, env);
    config = loadConfig(env);
  } catch (e) {
    if (e instanceof UsageError || e instanceof ConfigError) {
      if (e.message) io.err(`registry:learn: ${e.message}`);
      if (e instanceof UsageError) io.err(USAGE);
      return e.message ? EXIT_USAGE : EXIT_OK;
    }
    throw e;
  }
  try {
    if (cmd.rollback) {
      const { store, where } = releaseStore(config, cmd.opts.promoteTo);
      const p = await rollbackRelease(store);
      io.out(`rolled back in ${where}: ${p.rolled_back_from?.version} -> ${p.version} (previous now ${p.previous?.version ?? "none"})`);
      return EXIT_OK;
    }
    const t0 = Date.now();
    const r = await runLoop(config, cmd.opts, (l) => io.err(l));
    io.out(
      `${r.summary} Candidate in ${r.candidate} (report.md); ${r.promoted ? `promoted: pointer at ${r.pointer?.version}` : "not promoted"}; ` +
        `${((Date.now() - t0) / 60000).toFixed(1)} min this run`,
    );
    return EXIT_OK;
  } catch (e) {
    io.err(`registry:learn: ${e instanceof Error ? e.message : String(e)}`);
    return EXIT_FAILED;
  }
}

runIfEntryPoint(import.meta.url, "registry:learn", () => main());
