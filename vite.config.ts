import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import sharp from "sharp";
import { defineConfig, type Plugin } from "vite";

const ROOT = path.dirname(fileURLToPath(import.meta.url));
const OUT_DIR = path.join(ROOT, "dist", "client");

const THEME = "#1d1d1f";

/**
 * Installable and offline: the web app manifest with its icons (PNGs drawn
 * from client/icon.svg), and the service worker (client/sw.js) given the
 * list of every file of this build to store, and a version that changes with
 * it. The manifest and the worker keep fixed names at the root, beside
 * index.html, so the worker's scope is the whole app.
 */
function installable(): Plugin {
  return {
    name: "nosepaw-installable",
    apply: "build",
    enforce: "post",
    transformIndexHtml() {
      return [
        { tag: "link", attrs: { rel: "manifest", href: "./manifest.webmanifest" }, injectTo: "head" },
        { tag: "meta", attrs: { name: "theme-color", content: THEME }, injectTo: "head" },
        { tag: "link", attrs: { rel: "apple-touch-icon", href: "./icon-192.png" }, injectTo: "head" },
      ];
    },
    async generateBundle(_options, bundle) {
      const svg = readFileSync(path.join(ROOT, "client", "icon.svg"));
      const icons: { src: string; sizes: string; type: string; purpose?: string }[] = [];
      this.emitFile({ type: "asset", fileName: "icon.svg", source: svg });
      icons.push({ src: "./icon.svg", sizes: "any", type: "image/svg+xml" });
      for (const size of [192, 512]) {
        const fileName = `icon-${size}.png`;
        this.emitFile({ type: "asset", fileName, source: await sharp(svg, { density: 300 }).resize(size, size).png().toBuffer() });
        icons.push({ src: `./${fileName}`, sizes: `${size}x${size}`, type: "image/png", purpose: "any" });
      }
      const manifest = {
        name: "nosepaw nose capture",
        short_name: "nosepaw",
        description: "Register and verify dogs by their nose print",
        id: "./",
        start_url: "./",
        scope: "./",
        display: "standalone",
        orientation: "portrait",
        background_color: "#f5f5f2",
        theme_color: THEME,
        icons,
      };
      this.emitFile({ type: "asset", fileName: "manifest.webmanifest", source: JSON.stringify(manifest, null, 2) });
      const files = new Set(["", "index.html", "manifest.webmanifest", "icon.svg", "icon-192.png", "icon-512.png"]);
      for (const name of Object.keys(bundle)) if (!name.endsWith(".map") && name !== "sw.js") files.add(name);
      const precache = [...files].sort();
      const hash = createHash("sha256");
      for (const name of precache) {
        const item = bundle[name];
        hash.update(name);
        if (item?.type === "chunk") hash.update(item.code);
        else if (item?.type === "asset") hash.update(typeof item.source === "string" ? item.source : Buffer.from(item.source));
      }
      const sw = readFileSync(path.join(ROOT, "client", "sw.js"), "utf8")
        .replace('"__VERSION__"', JSON.stringify(hash.digest("hex").slice(0, 16)))
        .replace("__PRECACHE__", JSON.stringify(precache));
      this.emitFile({ type: "asset", fileName: "sw.js", source: sw });
    },
  };
}

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
  plugins: [installable()],
  build: {
    outDir: OUT_DIR,
    emptyOutDir: true,
    target: "es2022",
    // the ONNX runtime glue is large by nature; it is its own lazily loaded chunk
    chunkSizeWarningLimit: 2048,
    assetsInlineLimit: 0,
  },
});
