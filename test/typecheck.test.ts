import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { ROOT } from "./support/server.js";

/** Every TypeScript file of the repository, outside installed and built folders. */
function typeScriptFiles(dir = ROOT): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory())
      return ["node_modules", "build", "dist", ".git"].includes(e.name) || e.name.startsWith(".") ? [] : typeScriptFiles(p);
    return /\.(c|m)?ts$/.test(e.name) && !e.name.endsWith(".d.ts") ? [path.relative(ROOT, p)] : [];
  });
}

test("npm run typecheck covers every TypeScript file: server, client, tests, tools, benchmarks, load tests, scripts", () => {
  const tsc = path.join(ROOT, "node_modules/typescript/bin/tsc");
  const listed = new Set(
    execFileSync(process.execPath, [tsc, "-p", "tsconfig.json", "--listFilesOnly"], { cwd: ROOT, encoding: "utf8" })
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l && !l.includes("/node_modules/"))
      .map((l) => path.relative(ROOT, l)),
  );
  const all = typeScriptFiles();
  assert.ok(all.length > 100, `${all.length} files found`);
  assert.deepEqual(all.filter((f) => !listed.has(f)).sort(), [], "TypeScript files npm run typecheck leaves out");
  assert.match(JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")).scripts.typecheck, /tsc --noEmit -p tsconfig\.json/);
});

test(".ci/run type-checks and runs the README's test command", () => {
  const run = readFileSync(path.join(ROOT, ".ci/run"), "utf8");
  assert.match(run, /^[^#\n]*npm run typecheck/m);
  const lib = readFileSync(path.join(ROOT, "scripts/ci-lib.sh"), "utf8");
  assert.match(lib, /^[^#\n]*bounded "\$events" npm test\b/m);
  assert.match(run, /^source scripts\/ci-lib\.sh$/m);
});
