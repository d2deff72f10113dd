import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, test } from "node:test";
import { ROOT } from "./support/server.js";

/**
 * .ci/run's test loop (scripts/ci-lib.sh) against a stand-in `npm` that
 * writes the events a run would: a file is run again only after a failure
 * with a known signature, on its own, once; reruns are counted; a run still
 * going at the time bound fails and names the file it was in.
 */
const STUB = `#!/usr/bin/env bash
# npm test | npm run --silent test:files -- FILE: writes events as the reporter does.
ev() { printf '%s\\n' "$1" >> "$NOSEPAW_TEST_EVENTS"; }
pass() { ev "{\\"t\\":\\"file\\",\\"file\\":\\"$PWD/$1\\"}"; ev "{\\"t\\":\\"pass\\",\\"file\\":\\"$PWD/$1\\",\\"name\\":\\"ok\\",\\"nesting\\":0}"; ev "{\\"t\\":\\"done\\",\\"file\\":\\"$PWD/$1\\",\\"ok\\":true}"; }
jit() { ev "{\\"t\\":\\"file\\",\\"file\\":\\"$PWD/$1\\"}"; ev "{\\"t\\":\\"stderr\\",\\"file\\":\\"$PWD/$1\\",\\"msg\\":\\"# Check failed: jit_page.has_value().\\"}"; ev "{\\"t\\":\\"done\\",\\"file\\":\\"$PWD/$1\\",\\"ok\\":false,\\"error\\":\\"test failed\\"}"; }
bug() { ev "{\\"t\\":\\"file\\",\\"file\\":\\"$PWD/$1\\"}"; ev "{\\"t\\":\\"fail\\",\\"file\\":\\"$PWD/$1\\",\\"name\\":\\"counts\\",\\"nesting\\":0,\\"error\\":\\"AssertionError: 2 !== 1\\"}"; ev "{\\"t\\":\\"done\\",\\"file\\":\\"$PWD/$1\\",\\"ok\\":false}"; }
echo "npm $*" >> "$STUB_LOG"
if [ "$1" = test ]; then
  pass test/a.test.ts
  case "$SCENARIO" in
    flake|flake-twice) jit test/b.test.ts; exit 1 ;;
    bug) bug test/b.test.ts; jit test/c.test.ts; exit 1 ;;
    hang) ev "{\\"t\\":\\"file\\",\\"file\\":\\"$PWD/test/b.test.ts\\"}"; sleep 60 ;;
  esac
else
  file="\${@: -1}"
  case "$SCENARIO" in
    flake) pass "$file" ;;
    flake-twice) jit "$file"; exit 1 ;;
  esac
fi
`;

function ciLoop(scenario: string, boundS = 300) {
  const dir = mkdtempSync(path.join(tmpdir(), "nosepaw-ci-run-"));
  writeFileSync(path.join(dir, "npm"), STUB);
  chmodSync(path.join(dir, "npm"), 0o755);
  const log = path.join(dir, "npm.log");
  writeFileSync(log, "");
  const script = `set -euo pipefail; CI_BOUND_S=${boundS}; DEADLINE=$(($(date +%s) + CI_BOUND_S)); RESULTS=${dir}; source scripts/ci-lib.sh; rc=0; run_suite v0 || rc=$?; echo "run_suite=$rc reruns=$reruns"; echo "--"; cat ${log}`;
  const t0 = Date.now();
  const r = spawnSync("bash", ["-c", script], {
    cwd: ROOT,
    env: { ...process.env, PATH: `${dir}:${process.env.PATH}`, SCENARIO: scenario, STUB_LOG: log },
    encoding: "utf8",
    timeout: 120_000,
  });
  return { out: r.stdout + r.stderr, ms: Date.now() - t0 };
}

describe(".ci/run's test loop", () => {
  test("a file that failed with a known signature is run again on its own, once, and the rerun is counted", () => {
    const { out } = ciLoop("flake");
    assert.match(out, /run_suite=0 reruns=1/, out);
    assert.match(out, /== first failure: test\/b\.test\.ts › \(the test file itself\)/);
    assert.match(out, /== rerun 1: test\/b\.test\.ts on Node v0, once, on its own \(it failed with known failure "v8-jit-page"\)/);
    assert.deepEqual(out.split("--\n")[1].trim().split("\n"), ["npm test", "npm run --silent test:files -- test/b.test.ts"]);
  });

  test("a known failure that comes back on the rerun fails", () => {
    const { out } = ciLoop("flake-twice");
    assert.match(out, /run_suite=1 reruns=1/, out);
    assert.match(out, /rerun 1: test\/b\.test\.ts failed again/);
  });

  test("a failure without a known signature fails at once: nothing is rerun, the first failure is printed in full", () => {
    const { out } = ciLoop("bug");
    assert.match(out, /run_suite=1 reruns=0/, out);
    assert.match(out, /== first failure: test\/b\.test\.ts › counts\nAssertionError: 2 !== 1/);
    assert.deepEqual(out.split("--\n")[1].trim().split("\n"), ["npm test"]);
  });

  test("a run still going at CI's time bound fails and names the file it was in", () => {
    const { out, ms } = ciLoop("hang", 3);
    assert.match(out, /run_suite=1 reruns=0/, out);
    assert.match(out, /CI's time bound \(3 s\) reached; the test file running was: test\/b\.test\.ts/);
    assert.ok(ms < 40_000, `${ms} ms`);
  });
});
