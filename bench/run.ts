/**
 * `npm run bench`: the service against the old Python pipeline and against
 * its own goals, written to bench/results/latest.json, plots under
 * bench/results/ and BENCHMARKS.md, with a summary table (ratios first).
 *
 * 1. ExtractNoseVector vs the old pipeline per photo size, and where our
 *    server's time goes (vs-old-pipeline.ts); against the in-process
 *    reference (Pillow in a long-lived python3 + the model, no transport),
 *    with the call's time split end to end (fixed-cost.ts);
 * 2. throughput and latency under 1-64 clients, micro-batching on and off,
 *    peak memory (concurrency.ts);
 * 3. 1:N identification on PGlite and PostgreSQL (identification.ts),
 *    extrapolated to 10M pets (extrapolate.ts);
 * 4. the model: card accuracy and inference cost (model.ts);
 * 5. the capture page in Chromium (browser.ts);
 * 6. what keypoint geometry adds to VerifyPet, and its cost per photo and per pair (geometry.ts).
 *
 * usage: npm run bench [-- --quick] [--only=vs-old,fixed-cost,concurrency,identification,model,browser,geometry] [--pets=10000,100000] [--pglite-max=N] [--ef=100,200] [--queries=N] [--seed=N]
 * --quick: fewer repetitions, 10k pets only, no WebGPU; under 5 minutes on a quiet machine.
 * --pets: registry sizes (default 10k and 100k; --quick 10k); --pglite-max: PGlite only up to N pets.
 * --ef: query each index build at these hnsw.ef_search values, one run each (default: the registry's own).
 * --queries: new photos of enrolled dogs per registry size (default 100; --quick 50); --seed: another corpus (default 1000).
 * --report-only: rewrite BENCHMARKS.md and the plots from bench/results/latest.json, running nothing.
 * --only: the named sections; their files then go to a temp folder, leaving bench/results/ and BENCHMARKS.md alone.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { ROOT } from "../test/support/server.js";
import { browserBench } from "./browser.js";
import { concurrency } from "./concurrency.js";
import { extrapolate } from "./extrapolate.js";
import { identification, type IdentifyRun } from "./identification.js";
import { machineInfo } from "./machine.js";
import { modelCost } from "./model.js";
import { benchPhotos } from "./photos.js";
import { charts, markdown, summaryRows, summaryTable, type Results } from "./report.js";
import { vsOldPipeline } from "./vs-old-pipeline.js";
import { fixedCost } from "./fixed-cost.js";
import { geometryBench } from "./geometry.js";

const SECTIONS = ["vs-old", "fixed-cost", "concurrency", "identification", "model", "browser", "geometry"] as const;
type Section = (typeof SECTIONS)[number];

const args = process.argv.slice(2);
const quick = args.includes("--quick");
const option = (name: string) => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const only = option("only")?.split(",") as Section[] | undefined;
const unknown = only?.filter((s) => !SECTIONS.includes(s));
if (unknown?.length) {
  console.error(`unknown section(s) ${unknown.join(", ")}; sections: ${SECTIONS.join(", ")}`);
  process.exit(2);
}
const pets = option("pets")?.split(",").map(Number) ?? (quick ? [10_000] : [10_000, 100_000]);
const pgliteMax = Number(option("pglite-max") ?? Infinity);
const efSearch = option("ef")?.split(",").map(Number) ?? [undefined];
const queries = Number(option("queries") ?? (quick ? 50 : 100));
const seed = Number(option("seed") ?? 1000);
const wanted = (s: Section) => !only || only.includes(s);

if (args.includes("--report-only")) {
  const saved = JSON.parse(readFileSync(path.join(ROOT, "bench", "results", "latest.json"), "utf8")) as Results;
  // Derived figures follow the current extrapolation.
  if (saved.identification) saved.extrapolation = extrapolations(saved.identification.runs);
  writeOutputs(saved, path.join(ROOT, "bench", "results"), path.join(ROOT, "BENCHMARKS.md"));
  process.exit(0);
}

function extrapolations(runs: IdentifyRun[]) {
  return (["postgres", "pglite"] as const).flatMap(
    (engine) =>
      extrapolate(
        runs.filter((r) => r.engine === engine),
        10_000_000,
      ) ?? [],
  );
}

function writeOutputs(results: Results, out: string, page: string) {
  mkdirSync(out, { recursive: true });
  const notes = path.join(ROOT, "bench", "concurrency-profile.md");
  results.profileNotes = existsSync(notes) ? readFileSync(notes, "utf8") : undefined;
  const findings = path.join(ROOT, "bench", "fixed-cost-findings.md");
  results.fixedCostNotes = existsSync(findings) ? readFileSync(findings, "utf8") : undefined;
  const plots = charts(results);
  for (const [file, svg] of Object.entries(plots)) writeFileSync(path.join(out, file), svg);
  const summary = summaryRows(results);
  writeFileSync(path.join(out, "latest.json"), JSON.stringify(results, null, 1) + "\n");
  writeFileSync(page, markdown(results, summary, Object.keys(plots)));
  console.log(`\n${summaryTable(summary)}\n`);
  console.log(
    `took ${(results.durationSeconds / 60).toFixed(1)} min; wrote ${out}/latest.json, ${Object.keys(plots).length} plots, ${page}`,
  );
}

const started = performance.now();
const log = (s: string) => console.log(`[${((performance.now() - started) / 1000).toFixed(0).padStart(4)} s] ${s}`);
const results: Results = {
  command: `npm run bench${args.length ? ` -- ${args.join(" ")}` : ""}`,
  quick,
  date: new Date().toISOString(),
  durationSeconds: 0,
  machine: machineInfo(),
  conditions:
    "Taken on a 2-core machine shared with other engineers' test runs (load average shown at the end): the figures are noisy, and ratios taken call by call in one run hold better than absolute times.",
  notes: {},
};

async function section<T>(name: Section, fn: () => Promise<T>): Promise<T | undefined> {
  if (!wanted(name)) return undefined;
  log(`${name}: start`);
  try {
    const r = await fn();
    log(`${name}: done`);
    return r;
  } catch (e) {
    const msg = (e as Error).stack ?? String(e);
    results.notes[name] = `failed: ${(e as Error).message}`;
    console.error(`${name} failed: ${msg}`);
    return undefined;
  }
}

const photos = wanted("vs-old") || wanted("fixed-cost") || wanted("concurrency") ? await benchPhotos(3) : [];
results.vsOld = await section("vs-old", () => vsOldPipeline(photos, quick ? 15 : 30));
// Beside the default server, the same checkout with MODEL_PRECISION=fp32: the reference's model, so the two ratios
// split what the int8 variant gives from what the rest of the pipeline does.
results.fixedCost = await section("fixed-cost", async () => ({
  ...(await fixedCost(photos, quick ? 15 : 60, ROOT, { MODEL_PRECISION: "fp32" })),
  baselineLabel: "this checkout with MODEL_PRECISION=fp32 (the reference's model)",
  columns: { baseline: "fp32 server", ours: "default server (int8 when recorded)" },
}));
results.concurrency = await section("concurrency", () => {
  const set = photos.find((p) => p.label === "1080x1080")!;
  // Enough calls per level for a p95 while keeping 64 clients to one or two rounds.
  const perClient = (clients: number) => Math.max(quick ? 1 : 2, Math.ceil((quick ? 16 : 40) / clients));
  return concurrency(set.jpegs, set.label, perClient);
});
results.identification = await section("identification", () => identification(pets, queries, log, pgliteMax, efSearch, seed));
if (results.identification?.runs.length) results.extrapolation = extrapolations(results.identification.runs);
results.model = await section("model", () => modelCost(quick ? 10 : 30));
results.browser = await section("browser", () => browserBench(quick));
if (results.browser?.skipped) results.notes.browser = `skipped: ${results.browser.skipped}`;
results.geometry = await section("geometry", () => geometryBench(quick ? 20 : 60));
results.durationSeconds = (performance.now() - started) / 1000;

const out = only ? mkdtempSync(path.join(tmpdir(), "nosepaw-bench-")) : path.join(ROOT, "bench", "results");
writeOutputs(results, out, only ? path.join(out, "BENCHMARKS.md") : path.join(ROOT, "BENCHMARKS.md"));
process.exit(0);
