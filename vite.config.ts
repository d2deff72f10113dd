import path from "node:path";
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const ROOT = path.dirname(fileURLToPath(import.meta.url));
const OUT_DIR = path.join(ROOT, "dist", "client");

/**
 * onnxruntime-web's WebGPU bundle carries its JS glue inline and loads its
 * WebAssembly runtime with `new URL(..., import.meta.url)`, which the build
 * emits into assets/: the page needs nothing but the server that serves it.
 */
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
});
