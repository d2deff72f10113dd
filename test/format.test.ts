import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { test } from "node:test";
import { ROOT } from "./support/server.js";

test("every source file is formatted as npm run format writes it", () => {
  const r = spawnSync(process.execPath, [path.join(ROOT, "node_modules/prettier/bin/prettier.cjs"), "--check", "."], {
    cwd: ROOT,
    encoding: "utf8",
  });
  assert.equal(r.status, 0, `run npm run format; prettier --check said:\n${r.stdout}${r.stderr}`);
});
