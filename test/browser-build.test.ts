import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
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

test("prestart's build check is a fast no-op when the build is current", () => {
  assert.ok(existsSync(path.join(OUT, ".build-stamp")));
  const stamp = statSync(path.join(OUT, ".build-stamp")).mtimeMs;
  const started = performance.now();
  execFileSync(process.execPath, [check], { cwd: ROOT, stdio: "pipe" });
  const ms = performance.now() - started;
  assert.equal(statSync(path.join(OUT, ".build-stamp")).mtimeMs, stamp, "no rebuild");
  assert.ok(ms < 1000, `no-op took ${ms.toFixed(0)} ms`);
});

test("package.json builds the client before start and test", () => {
  const pkg = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8"));
  assert.match(pkg.scripts.prestart, /build-client-if-needed/);
  assert.match(pkg.scripts.pretest, /build-client-if-needed/);
});
