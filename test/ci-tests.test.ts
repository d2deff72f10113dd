import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, test } from "node:test";
import { enginesMinimumMajor, judge, parseEvents, report, type TestEvent } from "../scripts/ci-tests.js";
import { ROOT } from "./support/server.js";

/**
 * How .ci/run judges a test run: only a failed file whose output matches a
 * named intermittent failure may be run again; any other failure, a file
 * that never finished or a skipped test fails CI.
 */
const passing = (file: string): TestEvent[] => [
  { t: "file", file },
  { t: "pass", file, name: "works", nesting: 0 },
  { t: "done", file, ok: true },
];
const jitAbort: TestEvent[] = [
  { t: "file", file: "/r/test/wire.test.ts" },
  { t: "stderr", file: "/r/test/wire.test.ts", msg: "\n#\n# Fatal error in , line 0\n# Check failed: jit_page.has_value().\n" },
  {
    t: "done",
    file: "/r/test/wire.test.ts",
    ok: false,
    error: "[Error: test failed] { failureType: 'testCodeFailure', signal: 'SIGTRAP' }",
  },
];
const realBug: TestEvent[] = [
  { t: "file", file: "/r/test/registry.test.ts" },
  { t: "fail", file: "/r/test/registry.test.ts", name: "one pet per dog", nesting: 1, error: "AssertionError: 2 !== 1" },
  { t: "done", file: "/r/test/registry.test.ts", ok: false, error: "subtestsFailed" },
];

describe("judging a test run for CI", () => {
  test("all files passed, nothing skipped: pass", () => {
    const j = judge([...passing("/r/a.test.ts"), ...passing("/r/b.test.ts")]);
    assert.equal(j.verdict, "pass");
    assert.deepEqual(j.totals, { files: 2, passed: 2, failed: 0, skipped: 0, todo: 0 });
  });

  test("a file that failed with V8's jit_page abort, and nothing else: that file alone is run again", () => {
    const j = judge([...passing("/r/a.test.ts"), ...jitAbort]);
    assert.equal(j.verdict, "rerun");
    assert.deepEqual(
      j.failedFiles.map((f) => [f.file, f.flake?.name]),
      [["/r/test/wire.test.ts", "v8-jit-page"]],
    );
    assert.equal(j.first?.file, "/r/test/wire.test.ts");
    assert.match(j.first!.output, /jit_page/);
  });

  test("s3rver's non-atomic write is named too", () => {
    const file = "/r/test/storage.test.ts";
    const j = judge([
      { t: "file", file },
      {
        t: "fail",
        file,
        name: "put",
        nesting: 0,
        error: "Error: ENOENT: no such file or directory, open '/tmp/s3/bucket/k._S3rver_object'",
      },
      { t: "done", file, ok: false },
    ]);
    assert.equal(j.verdict, "rerun");
    assert.equal(j.failedFiles[0].flake?.name, "s3rver-nonatomic-write");
  });

  test("any failure without a known signature fails at once, even next to a known one; the first failure is given in full", () => {
    const j = judge([...realBug, ...jitAbort]);
    assert.equal(j.verdict, "fail");
    assert.equal(j.first?.name, "one pet per dog");
    const text = report(j);
    assert.match(text, /== first failure: .*registry\.test\.ts › one pet per dog\nAssertionError: 2 !== 1/);
    assert.match(text, /registry\.test\.ts: no known failure signature/);
    assert.match(text, /wire\.test\.ts: matches known failure "v8-jit-page"/);
  });

  test("a skipped test fails the run and is listed with its reason", () => {
    const file = "/r/test/auth.test.ts";
    const j = judge([
      { t: "file", file },
      { t: "pass", file, name: "from another address", nesting: 1, skip: "no non-loopback address" },
      { t: "done", file, ok: true },
    ]);
    assert.equal(j.verdict, "fail");
    assert.equal(j.totals.skipped, 1);
    assert.match(report(j), /skipped: .*auth\.test\.ts › from another address: no non-loopback address/);
  });

  test("a file that started and never finished (a stopped run) fails and is named, even with a known signature in its output", () => {
    const events = [...passing("/r/a.test.ts"), ...jitAbort.slice(0, 2)];
    const j = judge(events);
    assert.equal(j.verdict, "fail");
    assert.equal(j.unfinished, "/r/test/wire.test.ts");
    assert.match(report(j), /wire\.test\.ts started and never finished/);
  });

  test("a line cut short at the end of the events is ignored", () => {
    const text =
      passing("/r/a.test.ts")
        .map((e) => JSON.stringify(e))
        .join("\n") + '\n{"t":"file","fi';
    assert.equal(parseEvents(text).length, 3);
  });

  test("the minimum Node that engines names", () => {
    assert.equal(enginesMinimumMajor(">=20"), 20);
    assert.equal(enginesMinimumMajor(">= 20.10.0"), 20);
    assert.equal(enginesMinimumMajor("^20.10 || >=22"), 20);
    assert.equal(enginesMinimumMajor(undefined), undefined);
  });
});

describe("npm test's reporters, on real test files", () => {
  test("per-file results, skips and a crashed file's stderr reach the events file; judge exits 3 for a known signature only, 1 otherwise; a hung file ends at its deadline", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "nosepaw-ci-tests-"));
    writeFileSync(path.join(dir, "a.test.ts"), 'import { test } from "node:test";\ntest("a", () => {});\n');
    writeFileSync(
      path.join(dir, "b.test.ts"),
      'import { test } from "node:test";\ntest("b", () => { process.stderr.write("# Check failed: jit_page.has_value().\\n"); process.exit(134); });\n',
    );
    writeFileSync(path.join(dir, "c.test.ts"), 'import { test } from "node:test";\ntest("c", { skip: "no thing" }, () => {});\n');
    const events = path.join(dir, "events.jsonl");
    // A runner inside a test file's process would report to this one (NODE_TEST_CONTEXT) instead of running on its own.
    const env = () => {
      const e: NodeJS.ProcessEnv = { ...process.env, NOSEPAW_TEST_EVENTS: events };
      delete e.NODE_TEST_CONTEXT;
      return e;
    };
    const run = (files: string[]) =>
      spawnSync("npm", ["run", "--silent", "test:files", "--", ...files.map((f) => path.join(dir, f))], {
        cwd: ROOT,
        env: env(),
        encoding: "utf8",
      });
    const judged = (list?: string) =>
      spawnSync(process.execPath, ["--import", "tsx", "scripts/ci-tests.ts", "judge", events, ...(list ? ["--rerun-list", list] : [])], {
        cwd: ROOT,
        encoding: "utf8",
      });

    assert.notEqual(run(["a.test.ts", "b.test.ts"]).status, 0);
    const list = path.join(dir, "rerun.txt");
    const j1 = judged(list);
    assert.equal(j1.status, 3, j1.stdout + j1.stderr);
    assert.match(j1.stdout, /2 test files: 1 passed, 0 failed, 0 skipped/);
    assert.equal(readFileSync(list, "utf8"), `${path.relative(ROOT, path.join(dir, "b.test.ts"))}\tv8-jit-page\n`);

    assert.equal(run(["a.test.ts", "c.test.ts"]).status, 0, "node:test passes a run with a skip");
    const j2 = judged();
    assert.equal(j2.status, 1, j2.stdout);
    assert.match(j2.stdout, /1 test\(s\) skipped: under CI nothing may skip/);

    // A file that hangs with a handle open (Node 24 alone would wait forever) ends at its deadline as a failure.
    writeFileSync(
      path.join(dir, "hang.test.ts"),
      'import { test } from "node:test";\ntest("hangs", async () => { setInterval(() => {}, 1000); await new Promise(() => {}); });\n',
    );
    const t0 = Date.now();
    const hung = spawnSync("npm", ["run", "--silent", "test:files", "--", path.join(dir, "hang.test.ts")], {
      cwd: ROOT,
      env: { ...env(), NOSEPAW_TEST_FILE_TIMEOUT_MS: "2000" },
      encoding: "utf8",
      timeout: 60_000,
    });
    assert.equal(hung.status, 1, hung.stdout + hung.stderr);
    assert.ok(Date.now() - t0 < 30_000, `ended after ${Date.now() - t0} ms`);
    assert.match(hung.stdout + hung.stderr, /test file .*hang\.test\.ts still running after 2 s/);
    assert.equal(judged().status, 1);
  });
});
