/**
 * A load test that must lose nothing, against real server processes on
 * loopback, an S3-protocol server (s3rver) and PostgreSQL with pgvector.
 *
 *   npm run loadtest                               2,000 mixed calls, 16 clients, one server, object store restarted midway
 *   npm run loadtest -- --replicas 3               1,000 registrations and verifications over three servers, one killed midway
 *   npm run loadtest -- --mix register-verify --calls 1000 --disrupt none --no-write   the same load on one server
 *
 * Exit code 0 when every call ended as it must and the registry holds every
 * pet once, 1 otherwise, 2 for usage errors. Figures go to stdout and to
 * bench/results/loadtest[-N-replicas]-<date>.json (and -latest.json).
 */
import { parseArgs } from "node:util";
import path from "node:path";
import { postgresUnavailable } from "../test/support/postgres.js";
import { ROOT } from "../test/support/server.js";
import { formatFigures, writeResults } from "./figures.js";
import { runScenario, type DisruptionKind } from "./scenario.js";
import { MIXED, REGISTER_VERIFY } from "./workload.js";

const usage =
  "usage: npm run loadtest -- [--calls N] [--concurrency N] [--replicas N] [--mix mixed|register-verify] [--disrupt object-store|kill-replica|none] [--seed N] [--no-write]";
const MIXES = { mixed: MIXED, "register-verify": REGISTER_VERIFY };
let args;
try {
  args = parseArgs({
    options: {
      calls: { type: "string" },
      concurrency: { type: "string", default: "16" },
      replicas: { type: "string", default: "1" },
      disrupt: { type: "string" },
      mix: { type: "string" },
      seed: { type: "string", default: "1" },
      "no-write": { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  }).values;
} catch (e) {
  console.error(`${(e as Error).message}\n${usage}`);
  process.exit(2);
}
if (args.help) {
  console.log(usage);
  process.exit(0);
}
const int = (name: string, v: string, min: number) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) {
    console.error(`--${name} must be an integer >= ${min}, got ${JSON.stringify(v)}\n${usage}`);
    process.exit(2);
  }
  return n;
};
const replicas = int("replicas", args.replicas!, 1);
const calls = int("calls", args.calls ?? (replicas > 1 ? "1000" : "2000"), 20);
const concurrency = int("concurrency", args.concurrency!, 1);
const seed = int("seed", args.seed!, 0);
const disrupt = (args.disrupt ?? (replicas > 1 ? "kill-replica" : "object-store")) as DisruptionKind;
if (!["object-store", "kill-replica", "none"].includes(disrupt) || (disrupt === "kill-replica" && replicas < 2)) {
  console.error(`--disrupt ${disrupt} is not possible with ${replicas} replica(s)\n${usage}`);
  process.exit(2);
}
const mixName = args.mix ?? (replicas > 1 ? "register-verify" : "mixed");
if (!(mixName in MIXES)) {
  console.error(`--mix ${mixName} is not one of ${Object.keys(MIXES).join(", ")}\n${usage}`);
  process.exit(2);
}
const missing = postgresUnavailable();
if (missing) {
  console.error(`loadtest: needs PostgreSQL with pgvector: ${missing}`);
  process.exit(2);
}

const report = await runScenario({
  calls,
  concurrency,
  replicas,
  mix: MIXES[mixName as keyof typeof MIXES],
  disrupt,
  seed,
  log: (line) => console.error(`loadtest: ${line}`),
});

console.log(formatFigures(report.figures));
console.log(
  `answered by replica: ${report.answeredBy.join(", ")}; peak RSS (VmHWM) ${report.peakRssMiB.map((m) => `${m} MiB`).join(", ")}`,
);
if (report.disruption) console.log(`disruption: ${JSON.stringify(report.disruption)}`);
const r = report.registry;
console.log(
  `registry: ${r.dogs} dogs, ${r.pets} pets, ${r.duplicateAnswers} duplicate answers, ${r.objectsPresent} with all objects, ` +
    `${r.verified} verified and ${r.identified} identified afterwards, ${r.approvals} transfer approvals`,
);
if (r.lookalikes.length) {
  console.log(
    `look-alikes: ${r.lookalikes.length} dog(s) refused as duplicates of another synthetic dog's pet by the model ` +
      `(${r.lookalikes.map((l) => `dog ${l.dog} ~ dog ${l.of} at ${l.similarity.toFixed(3)}`).join(", ")})`,
  );
}
console.log(`seconds: ${JSON.stringify(report.seconds)}`);
if (!args["no-write"]) {
  const name = replicas > 1 ? `loadtest-${replicas}-replicas` : "loadtest";
  console.log(`written: ${path.relative(ROOT, writeResults(path.join(ROOT, "bench/results"), name, report))}`);
}
if (report.failures.length) {
  console.log(`FAILED: ${report.failures.length} problem(s)`);
  for (const f of report.failures.slice(0, 30)) console.log(`  ${f}`);
  process.exit(1);
}
console.log("ok: no call lost, every failure retryable and retried, every pet once");
