import { writeFile } from "node:fs/promises";
import path from "node:path";
import type { Evaluation, Figures, GateDecision } from "./gate.js";
import type { LearnState } from "./state.js";
import { lineChart } from "./svg-lines.js";

/** What the report says about where the run happened and how long each stage took. */
export interface RunFacts {
  hardware: string;
  trainDevice: string;
  synthetic: string;
  exportPets: number;
  split: { train: { dogs: number; photos: number }; heldout: { dogs: number; photos: number } };
}

const pct = (v: number | null | undefined) => (v === null || v === undefined || !Number.isFinite(v) ? "n/a" : `${(100 * v).toFixed(1)}%`);
const f4 = (v: number | null | undefined) => (v === null || v === undefined || !Number.isFinite(v) ? "n/a" : v.toFixed(4));
const sci = (v: number) => (Number.isFinite(v) ? v.toExponential(2) : "n/a");
const FLOOR = 1e-5;

export const CHARTS = ["roc.svg", "calibration.svg", "registration.svg"] as const;

function rocChart(ev: Evaluation): string {
  const series = (name: string, f: Figures | null, dashed = false) => ({
    name,
    dashed,
    points: (f?.roc ?? []).map((p) => [Math.max(p.far, 1e-4), p.tar] as [number, number]),
  });
  return lineChart({
    title: "ROC on held-out own dogs: running vs candidate",
    subtitle: `${ev.heldout.dogs} dogs, ${ev.new.photographed.pairs.genuine} genuine / ${ev.new.photographed.pairs.impostor} impostor pairs; dashed: re-capture proxy`,
    x: { label: "false-accept rate (impostor pairs)", log: true, min: 1e-4, max: 1 },
    y: { label: "true-accept rate", min: 0, max: 1 },
    series: [
      series(`running ${ev.old.version}`, ev.old.photographed),
      series(`candidate ${ev.new.version}`, ev.new.photographed),
      series("running, re-capture", ev.old.recapture, true),
      series("candidate, re-capture", ev.new.recapture, true),
    ],
    marks: [{ x: 1e-3, label: "FAR 1e-3" }],
  });
}

function calibrationChart(ev: Evaluation): string {
  const c = ev.calibration.curve;
  return lineChart({
    title: "Candidate card: impostor FAR at each similarity",
    subtitle: `measured and 95% Clopper-Pearson upper bound, ${ev.new.photographed.pairs.impostor} held-out impostor pairs (0 drawn at ${FLOOR})`,
    x: { label: "similarity threshold (candidate card)", min: 0.5, max: 0.95 },
    y: { label: "impostor false-accept rate", log: true, min: FLOOR, max: 1 },
    series: [
      { name: "measured FAR", points: c.map((p) => [p.similarity, Math.max(p.far, FLOOR)]) },
      { name: "95% upper bound", dashed: true, points: c.map((p) => [p.similarity, Math.max(p.far_upper_95, FLOOR)]) },
      { name: "target 1e-2 / 1e-3", points: [0.5, 0.7, 0.7, 0.85, 0.85, 0.95].map((x, i) => [x, i < 2 ? 1e-2 : i < 4 ? 1e-3 : 1e-3]) },
    ],
    marks: [
      { x: 0.7, label: "0.70" },
      { x: 0.85, label: "0.85" },
    ],
  });
}

function registrationChart(ev: Evaluation): string {
  const r = ev.registration;
  return lineChart({
    title: "Registration consistency check under the candidate",
    subtitle: `per pair threshold: genuine pairs refused, different-dog pairs accepted (95% upper bound); bound ${r.bound}`,
    x: { label: "pair threshold (similarity)", min: 0.3, max: 0.95 },
    y: { label: "share of pairs", log: true, min: FLOOR, max: 1 },
    series: [
      { name: "genuine refused", points: r.table.map((t) => [t.threshold, Math.max(t.genuine_refused, FLOOR)]) },
      { name: "other dog accepted", points: r.table.map((t) => [t.threshold, Math.max(t.different_dogs_accepted, FLOOR)]) },
      {
        name: "  95% upper bound",
        dashed: true,
        points: r.table.map((t) => [t.threshold, Math.max(t.different_dogs_accepted_upper_95, FLOOR)]),
      },
    ],
    marks: [{ x: r.pair_threshold, label: `rule ${r.pair_threshold.toFixed(2)}` }],
  });
}

function figureRow(condition: string, who: string, f: Figures | null): string {
  if (!f) return `| ${condition} | ${who} | n/a | | | | |`;
  return `| ${condition} | ${who} | ${f4(f.auc)} | ${f4(f.eer)} | ${pct(f.tar_at_far["1e-2"])} | ${pct(f.tar_at_far["1e-3"])} | ${f.pairs.genuine} / ${f.pairs.impostor} |`;
}

export async function writeReport(dir: string, ev: Evaluation, gate: GateDecision, state: LearnState, facts: RunFacts): Promise<void> {
  await writeFile(path.join(dir, "roc.svg"), rocChart(ev));
  await writeFile(path.join(dir, "calibration.svg"), calibrationChart(ev));
  await writeFile(path.join(dir, "registration.svg"), registrationChart(ev));
  const conf = ev.calibration.confidence;
  const reg = ev.registration;
  const regOld = ev.registration_old;
  const stageRows = Object.entries(state.stages).map(([name, r]) => `| ${name} | ${(r!.seconds / 60).toFixed(1)} min |`);
  const lines = [
    `# registry:learn: candidate ${ev.new.version}`,
    "",
    `## Gate: ${gate.promote ? "PROMOTED" : "REFUSED"}`,
    "",
    gate.summary,
    "",
    ...gate.checks.map((c) => `- ${c.passed ? "passed" : "FAILED"}: ${c.name}. ${c.detail}.`),
    "",
    `Held-out own dogs: ${ev.heldout.dogs} dogs, ${ev.heldout.images} photos, never seen in training; ` +
      `split by dog from ${facts.exportPets} consenting pets (${facts.split.train.dogs} dogs, ${facts.split.train.photos} photos trained on).`,
    "",
    "## Running model vs candidate, per condition",
    "",
    "| condition | model | AUC | EER | TAR@FAR1e-2 | TAR@FAR1e-3 | pairs (genuine / impostor) |",
    "|---|---|---|---|---|---|---|",
    figureRow("as photographed", `running ${ev.old.version}`, ev.old.photographed),
    figureRow("as photographed", `candidate ${ev.new.version}`, ev.new.photographed),
    figureRow("re-capture proxy", `running ${ev.old.version}`, ev.old.recapture),
    figureRow("re-capture proxy", `candidate ${ev.new.version}`, ev.new.recapture),
    "",
    `Re-capture proxy: each dog's first photo against a later photo made from its second by augmentation (${ev.heldout.recapture_dogs} dogs).`,
    `TAR difference at FAR 1e-3: ${pct(ev.bootstrap.difference)}, one-sided 95% bounds [${pct(ev.bootstrap.lower_95)}, ${pct(ev.bootstrap.upper_95)}]; ${ev.bootstrap.method}.`,
    "",
    "![ROC](roc.svg)",
    "",
    "## Calibration of the candidate card",
    "",
    `Fitted on the pooled ${ev.new.photographed.pairs.impostor} impostor pairs of the held-out dogs; cosine knots ${ev.calibration.cosine.map((c) => c.toFixed(4)).join(", ")}; duplicate similarity ${ev.calibration.duplicate_similarity}.`,
    "",
    "| knot | cosine | impostors at or above | FAR | 95% upper bound | target | |",
    "|---|---|---|---|---|---|---|",
    ...(["0.70", "0.85", "duplicate"] as const).map((k) => {
      const c = conf[k];
      return `| ${k === "duplicate" ? `duplicate (${c.similarity})` : k} | ${f4(c.cosine)} | ${c.impostors_at_or_above} of ${c.impostor_pairs} | ${sci(c.far_measured)} | ${sci(c.far_upper_bound)} | ${c.target_far.toExponential(0)} | ${c.certified ? "certified" : "NOT certified"} |`;
    }),
    "",
    ...(["0.70", "0.85", "duplicate"] as const).map(
      (k) => `- ${k}: ${conf[k].basis}${conf[k].warning && !conf[k].basis.includes("cannot certify") ? `. ${conf[k].warning}` : ""}`,
    ),
    `- ${conf.note}`,
    "",
    ...(ev.calibration.cross_fit
      ? [
          `Cross-fit check: ${(["0.70", "0.85"] as const)
            .map((k) => {
              const x = ev.calibration.cross_fit!.knots[k];
              return `at ${k}, ${x.impostors_at_or_above} of ${x.impostor_pairs} out-of-fold impostor pairs (FAR ${sci(x.far)}, 95% upper bound ${sci(x.far_upper_95)}, target ${x.target_far.toExponential(0)})`;
            })
            .join("; ")}; ${ev.calibration.cross_fit.method}.`,
          "",
        ]
      : []),
    "![calibration](calibration.svg)",
    "",
    "## Registration rule",
    "",
    `Chosen: two registration photos must reach similarity ${reg.pair_threshold.toFixed(2)} (${reg.rule}). ` +
      `There it refuses ${pct(reg.at_threshold.genuine_refused)} of genuine pairs and accepts ${sci(reg.at_threshold.different_dogs_accepted)} ` +
      `of different-dog pairs (95% upper bound ${sci(reg.at_threshold.different_dogs_accepted_upper_95)}), over ${reg.pairs.genuine} genuine and ${reg.pairs.different_dogs} different-dog pairs. ` +
      `Recorded in the candidate card as \`registration.pair_threshold\`, which the service applies to every registration once that card runs.`,
    "",
    "| threshold | genuine refused (candidate) | other dog accepted (candidate) | 95% upper | genuine refused (running) |",
    "|---|---|---|---|---|",
    ...reg.table.map((t, i) => {
      const o = regOld?.table[i];
      return `| ${t.threshold.toFixed(2)} | ${pct(t.genuine_refused)} | ${sci(t.different_dogs_accepted)} | ${sci(t.different_dogs_accepted_upper_95)} | ${o ? pct(o.genuine_refused) : "n/a"} |`;
    }),
    "",
    "![registration](registration.svg)",
    "",
    "## Time and hardware",
    "",
    `Machine: ${facts.hardware}. Training: ${facts.trainDevice}. Renders mixed in: ${facts.synthetic}. Budget ${state.budgetMinutes} min.`,
    "",
    "| stage | wall time |",
    "|---|---|",
    ...stageRows,
    "",
  ];
  await writeFile(path.join(dir, "report.md"), lines.join("\n"));
}
