#!/usr/bin/env node
// Builds the capture app into dist/client when the build is missing or older
// than any of its sources; otherwise returns at once (it runs before every
// `npm start` and `npm test`). `--force` always builds.
import { existsSync, readdirSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const OUT = path.join(ROOT, "dist", "client");
const STAMP = path.join(OUT, ".build-stamp");
// Everything the client bundle is made of: its own folder, the shared pure
// TS it imports, the generated protobuf code, and the build configuration.
const SOURCES = ["client", "shared", "gen", "vite.config.ts", "package-lock.json", "scripts/build-client-if-needed.mjs"];

function newestMtime(p) {
  let st;
  try {
    st = statSync(p);
  } catch {
    return 0;
  }
  if (!st.isDirectory()) return st.mtimeMs;
  let newest = st.mtimeMs;
  for (const e of readdirSync(p, { withFileTypes: true })) {
    if (e.name === "node_modules" || e.name.startsWith(".")) continue;
    if (e.isFile() && /\.test\.ts$/.test(e.name)) continue;
    newest = Math.max(newest, newestMtime(path.join(p, e.name)));
  }
  return newest;
}

export function clientBuildIsStale() {
  if (!existsSync(STAMP) || !existsSync(path.join(OUT, "index.html"))) return true;
  const built = statSync(STAMP).mtimeMs;
  return SOURCES.some((s) => newestMtime(path.join(ROOT, s)) > built);
}

export async function buildClient() {
  const started = Date.now();
  const { build } = await import("vite");
  await build({ configFile: path.join(ROOT, "vite.config.ts") });
  writeFileSync(STAMP, new Date().toISOString() + "\n");
  // stderr: `npm start`'s stdout carries the server's JSON log lines
  process.stderr.write(`client built into dist/client in ${Date.now() - started} ms\n`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  if (process.argv.includes("--force") || clientBuildIsStale()) await buildClient();
}
