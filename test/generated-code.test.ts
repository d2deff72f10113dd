import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { ROOT } from "./support/server.js";

const files = (dir: string): string[] =>
  readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile())
    .map((e) => path.relative(dir, path.join(e.parentPath ?? (e as unknown as { path: string }).path, e.name)))
    .sort();

test("gen/ is exactly what buf generates from proto/ (nobody edits generated code)", () => {
  const out = mkdtempSync(path.join(tmpdir(), "nosepaw-gen-"));
  const bin = path.join(ROOT, "node_modules/.bin");
  execFileSync(path.join(bin, "buf"), ["generate", "--output", out], {
    cwd: ROOT,
    stdio: "pipe",
    env: { ...process.env, PATH: `${bin}${path.delimiter}${process.env.PATH}` },
  });
  const fresh = path.join(out, "gen");
  const committed = path.join(ROOT, "gen");
  assert.deepEqual(files(fresh), files(committed));
  for (const f of files(fresh)) assert.equal(readFileSync(path.join(committed, f), "utf8"), readFileSync(path.join(fresh, f), "utf8"), f);
});
