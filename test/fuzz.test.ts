/**
 * The decoder fuzzer (scripts/fuzz.ts) as a test: a fixed seed and a fixed
 * number of inputs (6,000 under CI, where the suite runs twice, on Node 20
 * and 24; 1,500 elsewhere), so every machine explores the same inputs
 * however fast it is. Any crash of the decoding process, hang, or failure
 * other than an MLError fails the test, with the input saved to
 * test/fuzz-crashes/; inputs saved there earlier are replayed first and must
 * now end in an image or an MLError. test/fuzz-corpus/ holds one minimised
 * input per distinct outcome the fuzzer has found (`npm run fuzz -- --corpus
 * test/fuzz-corpus`); each must still give its recorded outcome.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, test } from "node:test";
import { replay, replayCorpus, runFuzz, savedInputs } from "../scripts/fuzz.js";
import { jpeg } from "./support/images.js";
import { strictCI } from "./support/require-system.js";

const SEED = 20240601;
const ITERATIONS = strictCI() ? 6000 : 1500;

describe("decoder fuzzing", { timeout: 300_000 }, () => {
  test("inputs saved in test/fuzz-crashes/ now end in a decoded image or an MLError", async () => {
    const saved = savedInputs();
    const verdicts = await replay(saved.map((s) => s.bytes));
    const still = verdicts
      .map((v, i) => ({ v, file: saved[i >> 1].file, path: i % 2 ? "shrink" : "exact" }))
      .filter(({ v }) => v.kind !== "decoded" && v.kind !== "refused");
    assert.deepEqual(
      still.map(({ v, file, path: p }) => `${path.basename(file)} (${p} path): ${v.outcome}`),
      [],
    );
  });

  test("the regression corpus: every minimised input still gives the outcome recorded for it", async () => {
    const { entries, changed } = await replayCorpus();
    assert.ok(entries >= 50, `${entries} inputs in test/fuzz-corpus/outcomes.json`);
    assert.deepEqual(changed, []);
  });

  test("the harness catches a crash and a hang, saves each input and goes on", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "nosepaw-fuzz-self-"));
    try {
      const crash = Buffer.from("CRASH! on purpose");
      const hang = Buffer.from("HANG!! on purpose");
      const report = await runFuzz({
        seed: 1,
        iterations: 3,
        hangMs: 3000,
        saveDir: dir,
        seeds: [crash, hang, await jpeg(40, 30, 2)],
        targetEnv: { NOSEPAW_FUZZ_SELF_TEST: "1" },
      });
      assert.deepEqual(
        report.failures.map((f) => f.kind),
        ["crash", "hang"],
      );
      assert.deepEqual(readFileSync(report.failures[0].file), crash);
      assert.deepEqual(readFileSync(report.failures[1].file), hang);
      assert.match(report.failures[0].detail, /SIGSEGV/);
      assert.equal(report.restarts, 2);
      assert.ok(
        [...report.outcomes.keys()].some((o) => o.startsWith("decoded jpeg")),
        "the input after them still decodes",
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test(`${ITERATIONS} inputs of seeded mutation: no crash, no hang, nothing but images and MLErrors`, async (t) => {
    const report = await runFuzz({ seed: SEED, iterations: ITERATIONS });
    assert.equal(report.iterations, ITERATIONS);
    t.diagnostic(
      `${report.iterations} inputs in ${report.seconds.toFixed(0)} s, corpus ${report.corpus}, ` +
        `coverage points ${report.coverage}, distinct outcomes ${report.outcomes.size}`,
    );
    assert.deepEqual(
      report.failures.map((f) => `${f.kind} ${path.relative(process.cwd(), f.file)}: ${f.detail}`),
      [],
    );
    // A fuzzer that stopped mutating would pass vacuously.
    assert.ok(report.outcomes.size >= 20, `only ${report.outcomes.size} distinct outcomes`);
    assert.ok(report.corpus > 0 && report.coverage > 50, `coverage ${report.coverage}`);
  });
});
