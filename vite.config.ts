import { copyFileSync, mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { defineConfig, type Plugin } from "vite";

const ROOT = path.dirname(fileURLToPath(import.meta.url));
const ORT_DIST = path.join(ROOT, "node_modules", "onnxruntime-web", "dist");
const OUT_DIR = path.join(ROOT, "dist", "client");

/**
 * onnxruntime-web loads its WebAssembly runtime at run time from
 * `env.wasm.wasmPaths`; the page points that at ./ort/, so the files ship
 * with the build and the page needs nothing but the server that serves it.
 */
export const ORT_RUNTIME_FILES = ["ort-wasm-simd-threaded.jsep.mjs", "ort-wasm-simd-threaded.jsep.wasm"];

function copyOrtRuntime(): Plugin {
  return {
    name: "copy-onnxruntime-web-runtime",
    apply: "build",
    writeBundle() {
      const dir = path.join(OUT_DIR, "ort");
      mkdirSync(dir, { recursive: true });
      for (const f of ORT_RUNTIME_FILES) copyFileSync(path.join(ORT_DIST, f), path.join(dir, f));
    },
  };
}

export default defineConfig({
  root: path.join(ROOT, "client"),
  base: "./",
  publicDir: false,
  logLevel: "warn",
  build: {
    outDir: OUT_DIR,
    emptyOutDir: true,
    target: "es2022",
    // the ONNX runtime glue is large by nature; it is its own lazily loaded chunk
    chunkSizeWarningLimit: 2048,
    assetsInlineLimit: 0,
  },
  plugins: [copyOrtRuntime()],
});
