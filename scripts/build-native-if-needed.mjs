#!/usr/bin/env node
// Builds the libjpeg decoder addon (server/image/jpeg-decode.c) into
// dist/native/jpeg-decode.node when it is missing or older than its source;
// otherwise returns at once (it runs before every `npm start` and `npm test`).
// `--force` always builds.
//
// It needs a C compiler and libjpeg's headers (Debian: apt-get install gcc
// libc6-dev libjpeg62-turbo-dev). Without them the server decodes every JPEG
// with sharp, as it always could: this prints why and exits 0, so that
// `npm start` works on any machine. node-gyp is not used: it would download Node's headers,
// where node-api-headers (npm) carries the only ones a Node-API addon needs,
// and one compiler call builds it. Node-API is ABI-stable, so the same file
// loads in Node 20 and 24.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, renameSync, rmSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const ADDON = path.join(ROOT, "dist", "native", "jpeg-decode.node");
const SOURCES = [path.join(ROOT, "server", "image", "jpeg-decode.c"), fileURLToPath(import.meta.url)];
const INSTALL_HINT = "apt-get install gcc libc6-dev libjpeg62-turbo-dev";

const mtime = (p) => (existsSync(p) ? statSync(p).mtimeMs : 0);

export function addonIsStale() {
  const built = mtime(ADDON);
  return built === 0 || SOURCES.some((s) => mtime(s) > built);
}

function headersDir() {
  try {
    const require = createRequire(import.meta.url);
    return path.dirname(require.resolve("node-api-headers/include/node_api.h"));
  } catch {
    return undefined;
  }
}

/** Compiles the addon; returns undefined, or why it could not. */
export function buildAddon() {
  const include = headersDir();
  if (!include) return "node-api-headers is not installed (a dev dependency: npm install)";
  const cc = process.env.CC || "cc";
  const tmp = `${ADDON}.${process.pid}.tmp`;
  mkdirSync(path.dirname(ADDON), { recursive: true });
  try {
    execFileSync(cc, ["-O2", "-fPIC", "-shared", "-Wall", "-Werror", "-I", include, SOURCES[0], "-ljpeg", "-o", tmp], {
      stdio: ["ignore", "pipe", "pipe"],
    });
  } catch (err) {
    rmSync(tmp, { force: true });
    // An addon built from older sources must not outlive a failed rebuild.
    rmSync(ADDON, { force: true });
    const out = `${err.stderr ?? ""}`.trim().split("\n").slice(0, 3).join(" / ");
    return err.code === "ENOENT" ? `no C compiler (${cc})` : `${cc} failed: ${out || err.message}`;
  }
  // Renamed into place so that a server starting meanwhile never loads half a file.
  renameSync(tmp, ADDON);
  return undefined;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  // `--force` (npm run build:native, the Docker build) fails when it cannot
  // build; the check before npm start and npm test only says so.
  const force = process.argv.includes("--force");
  if (force || addonIsStale()) {
    const why = buildAddon();
    if (why) {
      console.error(`libjpeg decoder not built: ${why}. JPEGs will be decoded with sharp (${INSTALL_HINT} to build it).`);
      if (force) process.exitCode = 1;
    }
  }
}
