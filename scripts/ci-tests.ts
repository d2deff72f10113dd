/**
 * Reads the events `npm test` wrote through scripts/test-events-reporter.mjs
 * ($NOSEPAW_TEST_EVENTS) and judges the run for .ci/run:
 *
 *   node --import tsx scripts/ci-tests.ts judge EVENTS [--rerun-list FILE]
 *     prints the counts per outcome, every skipped test, the first failure in
 *     full, and for each failed file whether its output matches a known
 *     intermittent failure (KNOWN_FLAKES). Exit 0: every file passed and
 *     nothing skipped; 3: the only failures are files that match a known
 *     signature (written, one per line, to --rerun-list); 1: anything else.
 *   node --import tsx scripts/ci-tests.ts running EVENTS
 *     prints the test file that started and has not finished (the one a
 *     stopped run was in).
 *   node --import tsx scripts/ci-tests.ts node-is-minimum
 *     exit 0 when the running Node's major version is the minimum that
 *     package.json's `engines.node` names (">=20": Node 20), 1 otherwise.
 */
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

export interface Flake {
  name: string;
  what: string;
  pattern: RegExp;
}

/**
 * Failures known to come and go that are not this project's bugs. A failed
 * file whose output matches one is run once more on its own; any other
 * failure fails CI at once.
 */
export const KNOWN_FLAKES: readonly Flake[] = [
  {
    name: "v8-jit-page",
    what: "V8 aborted a process in its JIT-page bookkeeping (WebAssembly code churn across worker threads, Node 24: nodejs/node#64500)",
    pattern: /Check failed: jit_page\.has_value\(\)/,
  },
  {
    name: "s3rver-nonatomic-write",
    what: "s3rver's folder store lost a file of an object written concurrently under one key (its writes are not atomic)",
    pattern: /ENOENT[^\n]*_S3rver_/,
  },
];

export type TestEvent =
  | { t: "file"; file: string; at?: number }
  | { t: "done"; file: string; ok: boolean; error?: string }
  | {
      t: "pass" | "fail";
      file: string;
      name: string;
      nesting: number;
      ms?: number;
      suite?: boolean;
      skip?: string;
      todo?: string;
      error?: string;
    }
  | { t: "stderr" | "stdout"; file: string; msg: string };

export interface FileResult {
  file: string;
  passed: number;
  failed: number;
  skipped: Array<{ name: string; reason: string }>;
  todo: number;
  /** The file's own outcome: false when any test failed or its process died; undefined when it never finished. */
  ok?: boolean;
  failures: Array<{ name: string; error: string }>;
  output: string;
}

export interface Judgement {
  files: FileResult[];
  totals: { files: number; passed: number; failed: number; skipped: number; todo: number };
  failedFiles: Array<{ file: string; flake?: Flake }>;
  /** The first failed test, or the first file that failed without a failed test (its process died). */
  first?: { file: string; name: string; error: string; output: string };
  /** A file that started and never finished. */
  unfinished?: string;
  verdict: "pass" | "rerun" | "fail";
}

export function parseEvents(text: string): TestEvent[] {
  return text
    .split("\n")
    .filter((l) => l.trim() !== "")
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as TestEvent];
      } catch {
        return []; // a line cut short by a stopped run
      }
    });
}

export function judge(events: TestEvent[], flakes: readonly Flake[] = KNOWN_FLAKES): Judgement {
  const byFile = new Map<string, FileResult>();
  const of = (file: string) => {
    let r = byFile.get(file);
    if (!r) byFile.set(file, (r = { file, passed: 0, failed: 0, skipped: [], todo: 0, failures: [], output: "" }));
    return r;
  };
  let first: Judgement["first"];
  let unfinished: string | undefined;
  for (const e of events) {
    const r = of(e.file);
    switch (e.t) {
      case "file":
        unfinished = e.file;
        break;
      case "done":
        r.ok = e.ok;
        if (unfinished === e.file) unfinished = undefined;
        if (!e.ok && r.failures.length === 0) {
          // The file failed without a failed test: its process died or a hook failed outside any test.
          r.failures.push({ name: "(the test file itself)", error: e.error ?? "failed" });
          first ??= { file: e.file, name: "(the test file itself)", error: e.error ?? "failed", output: "" };
        }
        break;
      case "pass":
      case "fail":
        if (e.skip !== undefined) r.skipped.push({ name: e.name, reason: e.skip });
        else if (e.todo !== undefined) r.todo++;
        else if (e.t === "pass") r.passed += e.suite ? 0 : 1;
        else if (e.suite && r.failures.length > 0)
          break; // a suite fails because a test in it did: counted there
        else {
          r.failed++;
          r.failures.push({ name: e.name, error: e.error ?? "" });
          first ??= { file: e.file, name: e.name, error: e.error ?? "", output: "" };
        }
        break;
      case "stderr":
      case "stdout":
        r.output += e.msg;
        break;
    }
  }
  const files = [...byFile.values()];
  if (first) first.output = byFile.get(first.file)?.output ?? "";
  const failedFiles = files
    .filter((f) => f.ok === false || f.failed > 0 || (f.ok === undefined && f.file === unfinished))
    .map((f) => {
      const text = [...f.failures.map((x) => x.error), f.output].join("\n");
      return { file: f.file, flake: f.file === unfinished ? undefined : flakes.find((k) => k.pattern.test(text)) };
    });
  const totals = {
    files: files.length,
    passed: files.reduce((s, f) => s + f.passed, 0),
    failed: files.reduce((s, f) => s + f.failed, 0),
    skipped: files.reduce((s, f) => s + f.skipped.length, 0),
    todo: files.reduce((s, f) => s + f.todo, 0),
  };
  let verdict: Judgement["verdict"] = "pass";
  if (failedFiles.length > 0 || unfinished) verdict = failedFiles.every((f) => f.flake) && !unfinished ? "rerun" : "fail";
  if (totals.skipped > 0) verdict = "fail";
  return { files, totals, failedFiles, first, unfinished, verdict };
}

const rel = (f: string) => path.relative(process.cwd(), f) || f;

export function report(j: Judgement): string {
  const out: string[] = [];
  const t = j.totals;
  out.push(
    `== ${t.files} test files: ${t.passed} passed, ${t.failed} failed, ${t.skipped} skipped, ${t.todo} todo; ${j.failedFiles.length} file(s) failed`,
  );
  if (t.skipped > 0) {
    out.push(`== ${t.skipped} test(s) skipped: under CI nothing may skip`);
    for (const f of j.files)
      for (const s of f.skipped) out.push(`   skipped: ${rel(f.file)} › ${s.name}${s.reason ? `: ${s.reason}` : ""}`);
  }
  if (j.unfinished) out.push(`== ${rel(j.unfinished)} started and never finished`);
  if (j.first) {
    out.push(`== first failure: ${rel(j.first.file)} › ${j.first.name}`);
    out.push(j.first.error);
    if (j.first.output.trim())
      out.push(`-- what ${rel(j.first.file)} wrote outside its tests (last 6000 characters):`, j.first.output.slice(-6000));
  }
  for (const f of j.failedFiles) {
    out.push(
      f.flake
        ? `== failed: ${rel(f.file)}: matches known failure "${f.flake.name}": ${f.flake.what}`
        : `== failed: ${rel(f.file)}: no known failure signature`,
    );
  }
  return out.join("\n");
}

/** The lowest major version `engines.node` admits (">=20", "^20.10 || >=22" give 20); undefined when it names none. */
export function enginesMinimumMajor(range: string | undefined): number | undefined {
  const majors = [...(range ?? "").matchAll(/(?:>=|\^|~|=|^|\s)\s*v?(\d+)(?:\.\d+){0,2}/g)].map((m) => Number(m[1]));
  return majors.length ? Math.min(...majors) : undefined;
}

export function running(events: TestEvent[]): string | undefined {
  return judge(events).unfinished;
}

async function main(argv: string[]): Promise<number> {
  const [cmd, eventsPath, ...rest] = argv;
  if (cmd === "node-is-minimum") {
    const range = JSON.parse(readFileSync("package.json", "utf8")).engines?.node as string | undefined;
    const min = enginesMinimumMajor(range);
    const major = Number(process.versions.node.split(".")[0]);
    if (min === undefined || major !== min) {
      console.error(`Node ${process.version} is not the minimum package.json names (engines.node ${JSON.stringify(range)}: Node ${min})`);
      return 1;
    }
    console.log(`Node ${process.version}: the minimum package.json names (engines.node ${JSON.stringify(range)})`);
    return 0;
  }
  if (!eventsPath || !["judge", "running"].includes(cmd)) {
    console.error("usage: ci-tests.ts judge EVENTS [--rerun-list FILE] | running EVENTS | node-is-minimum");
    return 2;
  }
  let text = "";
  try {
    text = readFileSync(eventsPath, "utf8");
  } catch {
    // no events: nothing ran
  }
  const events = parseEvents(text);
  if (cmd === "running") {
    const file = running(events);
    console.log(file ? rel(file) : "(no test file was running)");
    return 0;
  }
  const j = judge(events);
  console.log(report(j));
  if (j.totals.files === 0) {
    console.log("== no test file reported anything");
    return 1;
  }
  const listAt = rest.indexOf("--rerun-list");
  if (j.verdict === "rerun" && listAt >= 0 && rest[listAt + 1]) {
    writeFileSync(rest[listAt + 1], j.failedFiles.map((f) => `${rel(f.file)}\t${f.flake!.name}\n`).join(""));
  }
  return j.verdict === "pass" ? 0 : j.verdict === "rerun" ? 3 : 1;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = await main(process.argv.slice(2));
}
