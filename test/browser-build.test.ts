import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { ROOT } from "./support/server.js";

const OUT = path.join(ROOT, "dist", "client");
const check = path.join(ROOT, "scripts", "build-client-if-needed.mjs");

test("the capture app is built into dist/client with the ONNX runtime inside", () => {
  execFileSync(process.execPath, [check], { cwd: ROOT, stdio: "pipe" });
  const html = readFileSync(path.join(OUT, "index.html"), "utf8");
  assert.match(html, /<script type="module"[^>]+src="\.\/assets\/[^"]+\.js"/);
  const assets = readdirSync(path.join(OUT, "assets"));
  const wasm = assets.filter((f) => /^ort-wasm-simd-threaded.*\.wasm$/.test(f));
  assert.equal(wasm.length, 1, `one ONNX runtime wasm in the build: ${assets.join(", ")}`);
  assert.ok(statSync(path.join(OUT, "assets", wasm[0])).size > 1_000_000);
});

/** Every file of the build with its size and modification time: a build rewrites them all. */
function snapshot(dir: string, prefix = ""): Record<string, string> {
  const files: Record<string, string> = {};
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const rel = path.join(prefix, e.name);
    if (e.isDirectory()) Object.assign(files, snapshot(path.join(dir, e.name), rel));
    else {
      const st = statSync(path.join(dir, e.name));
      files[rel] = `${st.size} bytes, mtime ${st.mtimeMs}`;
    }
  }
  return files;
}

test("prestart's build check does not rebuild a current build", () => {
  execFileSync(process.execPath, [check], { cwd: ROOT, stdio: "pipe" });
  assert.ok(existsSync(path.join(OUT, ".build-stamp")));
  const before = snapshot(OUT);
  const r = spawnSync(process.execPath, [check], { cwd: ROOT, encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  // buildClient announces every build on stderr
  assert.doesNotMatch(r.stderr, /client built/);
  assert.deepEqual(snapshot(OUT), before, "no file of dist/client rewritten");
});

test("package.json builds the client before start and test", () => {
  const pkg = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8"));
  assert.match(pkg.scripts.prestart, /build-client-if-needed/);
  assert.match(pkg.scripts.pretest, /build-client-if-needed/);
});
