import { existsSync, readFileSync } from "node:fs";
import { appendFile, copyFile, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { Config } from "../config.js";
import { ROOT } from "../config.js";
import { openObjectStore } from "../storage/open.js";
import { createFolderStore } from "../storage/folder-store.js";
import type { ObjectStore } from "../storage/object-store.js";
import { exportRegistry } from "../tools/registry-export.js";
import type { Manifest } from "../tools/export-writer.js";
import { decide, type Evaluation } from "./gate.js";
import { checkpointKey, releaseKeys, type Pointer } from "./model-release.js";
import { publishRelease, readPointer } from "./release-publish.js";
import { runPython } from "./python.js";
import { writeReport, type RunFacts } from "./report.js";
import { splitExport, type SplitResult } from "./split.js";
import { loadState, saveState, spentSeconds, STAGES, type LearnState, type StageName } from "./state.js";

export interface LearnOptions {
  work: string;
  minutes: number;
  seed: number;
  holdoutFrac: number;
  holdoutMax: number;
  /** Fine-tune from this checkpoint instead of the running model's. */
  init?: string;
  /** Identities rendered for the mix when there is no synthetic cache. */
  syntheticIds: number;
  /** Promote into this folder (the store's layout) instead of the configured object store. */
  promoteTo?: string;
  promote: boolean;
  fresh: boolean;
  version?: string;
  bootstrap: number;
  registrationBound: number;
}

export interface LearnOutcome {
  state: LearnState;
  candidate: string;
  promoted: boolean;
  pointer?: Pointer;
  summary: string;
}

const SYNTH_CACHE = path.join(ROOT, "models", "train", "cache", "synth");

/** Where promotions go and the running model is read from: --promote-to's folder or the server's store. */
export function releaseStore(config: Config, promoteTo: string | undefined): { store: ObjectStore; where: string } {
  if (promoteTo) return { store: createFolderStore({ root: path.resolve(promoteTo) }), where: `folder ${path.resolve(promoteTo)}` };
  return {
    store: openObjectStore(config),
    where: config.s3 ? `s3 ${config.s3.endpoint}/${config.s3.bucket}` : `folder ${config.objectDir}`,
  };
}

const today = () => new Date().toISOString().slice(0, 10).replace(/-/g, ".");
const hardware = () => `${os.cpus().length} x ${os.cpus()[0]?.model ?? "CPU"}, ${os.platform()} ${os.arch()}`;
const threads = () => Math.max(1, Math.min(os.cpus().length, 16));

export async function runLoop(config: Config, opts: LearnOptions, say: (line: string) => void): Promise<LearnOutcome> {
  const work = path.resolve(opts.work);
  if (opts.fresh) await rm(work, { recursive: true, force: true });
  await mkdir(work, { recursive: true });
  let state = loadState(work);
  if (state && STAGES.every((s) => state!.stages[s])) {
    throw new Error(`${work} holds a finished run (${state.version}): pass --fresh or another --work to start a new one`);
  }
  if (!state) {
    const version = releaseKeys(opts.version ?? `${today()}-learn-${new Date().toISOString().slice(11, 16).replace(":", "")}`).version;
    state = { format: "nosepaw-learn/1", version, startedAt: new Date().toISOString(), budgetMinutes: opts.minutes, stages: {} };
    await saveState(work, state);
  } else {
    const done = STAGES.filter((s) => state!.stages[s]);
    say(`[learn] resuming ${state.version} in ${work} after ${done[done.length - 1] ?? "nothing"}`);
  }
  const st = state;
  const { store, where } = releaseStore(config, opts.promoteTo);
  const dirs = {
    running: path.join(work, "running"),
    export: path.join(work, "export"),
    split: path.join(work, "split"),
    synth: path.join(work, "synth"),
    train: path.join(work, "train"),
    candidate: path.join(work, "candidate"),
  };

  const stage = async <T extends Record<string, unknown>>(name: StageName, detail: string, fn: () => Promise<T>): Promise<T> => {
    const i = STAGES.indexOf(name) + 1;
    const prev = st.stages[name];
    if (prev) return prev.result as T;
    say(`[learn] stage ${i}/${STAGES.length} ${name}: ${detail} (${(spentSeconds(st) / 60).toFixed(1)} of ${st.budgetMinutes} min spent)`);
    const t0 = Date.now();
    const result = await fn();
    const seconds = (Date.now() - t0) / 1000;
    st.stages[name] = { done: true, seconds, finishedAt: new Date().toISOString(), result };
    await saveState(work, st);
    say(`[learn] stage ${i}/${STAGES.length} ${name} done in ${seconds.toFixed(0)} s`);
    return result;
  };
  const progress = (l: string) => {
    const step = /^\[train\] step (\d+) /.exec(l);
    if (step ? Number(step[1]) % 100 === 0 || step[1] === "1" : /^\[(train|export|learn-eval|render|data)\]/.test(l)) say(`  ${l}`);
  };

  const running = await stage("running", `the running model (${where}, else MODEL_PATH)`, async () => {
    await rm(dirs.running, { recursive: true, force: true });
    await mkdir(dirs.running, { recursive: true });
    const pointer = await readPointer(store);
    let source: string;
    let version: string;
    if (pointer) {
      for (const [key, file] of [
        [pointer.model_key, "model.onnx"],
        [pointer.card_key, "card.json"],
        [checkpointKey(pointer.version), "model.pt"],
      ] as const) {
        const b = await store.get(key);
        if (b) await writeFile(path.join(dirs.running, file), b);
        else if (file !== "model.pt") throw new Error(`the pointer names ${key}, which is missing`);
      }
      source = `${where}: ${pointer.version} (promoted ${pointer.promoted_at})`;
      version = pointer.version;
    } else {
      const card = config.modelCardPath;
      if (!card || !existsSync(card)) throw new Error(`no model card for ${config.modelPath}: set MODEL_CARD_PATH`);
      await copyFile(config.modelPath, path.join(dirs.running, "model.onnx"));
      await copyFile(card, path.join(dirs.running, "card.json"));
      const pt = config.modelPath.replace(/\.onnx$/, "") + ".pt";
      if (existsSync(pt)) await copyFile(pt, path.join(dirs.running, "model.pt"));
      source = config.modelPath;
      version = JSON.parse(readFileSync(card, "utf8")).version as string;
    }
    const init = opts.init ? path.resolve(opts.init) : path.join(dirs.running, "model.pt");
    if (!existsSync(init)) throw new Error(`no checkpoint to fine-tune from: ${init} (the .pt beside the running model); pass --init`);
    say(`  running model ${version} from ${source}; fine-tuning from ${init}`);
    return { version, source, init };
  });

  const manifest = await stage("export", "the consenting pets", async () => {
    const m = await exportRegistry(config, { out: dirs.export, minPhotos: 2, withVerifications: true }, (l) => say(`  ${l}`));
    say(
      `  exported ${m.totals.pets} pets, ${m.totals.enrolmentPhotos} enrolment and ${m.totals.verificationPhotos} verification photos (skipped ${m.totals.skipped})`,
    );
    return { pets: m.totals.pets, photos: m.totals.photos, verificationPhotos: m.totals.verificationPhotos, skipped: m.totals.skipped };
  });

  const split = await stage(
    "split",
    `by dog, seed ${opts.seed}, ${opts.holdoutFrac * 100}% held out (at most ${opts.holdoutMax})`,
    async () => {
      const m = JSON.parse(await readFile(path.join(dirs.export, "manifest.json"), "utf8")) as Manifest;
      const r = await splitExport(dirs.export, m, dirs.split, {
        seed: opts.seed,
        holdoutFrac: opts.holdoutFrac,
        holdoutMax: opts.holdoutMax,
      });
      say(`  train ${r.train.dogs} dogs (${r.train.photos} photos), held out ${r.heldout.dogs} dogs (${r.heldout.photos} photos)`);
      return r as unknown as Record<string, unknown>;
    },
  );

  const renders = await stage("renders", "the synthetic renders mixed into training", async () => {
    if (existsSync(path.join(SYNTH_CACHE, "train"))) return { cache: SYNTH_CACHE, rendered: 0 };
    if (!existsSync(path.join(dirs.synth, "train"))) {
      await runPython(
        [
          "models/train/data.py",
          "--out",
          dirs.synth,
          "--split",
          "train",
          "--train-ids",
          String(opts.syntheticIds),
          "--caps",
          "4",
          "--workers",
          String(Math.min(2, threads())),
          "--no-sheet",
        ],
        progress,
      );
    }
    return { cache: dirs.synth, rendered: opts.syntheticIds };
  });

  await stage("train", "fine-tune with the renders mixed in", async () => {
    const probe = await runPython(
      ["-c", "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU')"],
      () => {},
    );
    const device = probe[probe.length - 1] === "CPU" ? `CPU (${threads()} threads; no CUDA device)` : `CUDA ${probe[probe.length - 1]}`;
    // What the later stages need: the ONNX export and parity, then the evaluation (two models on the held-out dogs).
    const reserve = Math.min(8, Math.max(0.4, 0.2 * st.budgetMinutes));
    const minutes = Math.max(0.1, st.budgetMinutes - spentSeconds(st) / 60 - reserve);
    say(`  training on ${device} for ${minutes.toFixed(1)} min (${reserve.toFixed(1)} min kept for export and evaluation)`);
    await rm(dirs.train, { recursive: true, force: true });
    await mkdir(dirs.candidate, { recursive: true });
    await runPython(
      [
        "models/train/train.py",
        "--data",
        path.join(dirs.split, "train"),
        "--mix-synthetic",
        "--synth",
        renders.cache as string,
        "--init",
        running.init,
        "--val-frac",
        "0",
        "--minutes",
        minutes.toFixed(2),
        "--device",
        "auto",
        "--threads",
        String(threads()),
        "--seed",
        String(opts.seed),
        "--version",
        st.version,
        "--work",
        dirs.train,
        "--onnx",
        path.join(dirs.candidate, "model.onnx"),
        "--card",
        path.join(dirs.train, "train-card.json"),
        "--no-eval",
      ],
      progress,
    );
    await copyFile(path.join(dirs.train, "model.pt"), path.join(dirs.candidate, "model.pt"));
    return { device, minutes };
  });

  await stage("evaluate", "running model and candidate on the held-out dogs", async () => {
    await runPython(
      [
        "models/train/learn_eval.py",
        "--heldout",
        path.join(dirs.split, "heldout"),
        "--old-model",
        path.join(dirs.running, "model.onnx"),
        "--old-card",
        path.join(dirs.running, "card.json"),
        "--new-model",
        path.join(dirs.candidate, "model.onnx"),
        "--version",
        st.version,
        "--train-meta",
        path.join(dirs.train, "train-meta.json"),
        "--out",
        dirs.candidate,
        "--boot",
        String(opts.bootstrap),
        "--seed",
        String(opts.seed),
        "--registration-bound",
        String(opts.registrationBound),
      ],
      progress,
    );
    return {};
  });

  const evaluation = JSON.parse(await readFile(path.join(dirs.candidate, "eval.json"), "utf8")) as Evaluation;
  const gate = decide(evaluation);
  const facts: RunFacts = {
    hardware: hardware(),
    trainDevice: `${(st.stages.train?.result.device as string) ?? "?"}, ${Number(st.stages.train?.result.minutes ?? 0).toFixed(1)} min budget`,
    synthetic: renders.rendered ? `${renders.rendered} identities rendered for this run` : `the cache ${renders.cache as string}`,
    exportPets: manifest.pets as number,
    split: split as unknown as SplitResult,
  };

  await stage("report", "report.md and charts", async () => {
    await writeReport(dirs.candidate, evaluation, gate, st, facts);
    return { promote: gate.promote, summary: gate.summary };
  });
  say(`[learn] gate: ${gate.summary}`);
  for (const c of gate.checks) say(`  ${c.passed ? "passed" : "FAILED"}: ${c.name}: ${c.detail}`);

  let pointer: Pointer | undefined;
  const promoted = await stage("promote", opts.promote ? `to ${where} if the gate passed` : "skipped (--no-promote)", async () => {
    let line: string;
    if (!opts.promote) line = `Not promoted: --no-promote (the gate ${gate.promote ? "would have promoted it" : "refused it"}).`;
    else if (!gate.promote) line = "Not promoted: the gate refused it.";
    else {
      pointer = await publishRelease(store, {
        version: st.version,
        model: await readFile(path.join(dirs.candidate, "model.onnx")),
        card: await readFile(path.join(dirs.candidate, "card.json")),
        checkpoint: await readFile(path.join(dirs.candidate, "model.pt")),
      });
      line = `Promoted to ${where}: ${pointer.model_key}, ${pointer.card_key}; pointer ${JSON.stringify({ version: pointer.version, previous: pointer.previous?.version ?? null })} at ${pointer.promoted_at}.`;
    }
    await appendFile(path.join(dirs.candidate, "report.md"), `\n## Promotion\n\n${line}\n`);
    say(`[learn] ${line}`);
    return { promoted: !!pointer, line };
  });
  return { state: st, candidate: dirs.candidate, promoted: promoted.promoted as boolean, pointer, summary: gate.summary };
}
