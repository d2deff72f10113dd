/**
 * The capture page in headless Chromium next to Node, on one 1280x720 camera
 * frame of a nose (JPEG, as the page uploads its kept frames):
 *
 * - live checks: shared/quality.ts's assessFrame on the 640x360 analysis
 *   frame, median per frame, page vs Node;
 * - a live frame's whole cost: drawing the 720p frame down to the analysis
 *   size and reading it back, plus assessFrame (goal: under 8 ms);
 * - embedding: one image decoded, preprocessed (shared/preprocess.ts) and
 *   embedded, median per image, page on WASM, page on WebGPU (SwiftShader
 *   where there is no GPU; full runs only) and the server's own path (sharp
 *   decode, the same preprocessing, onnxruntime-node).
 *
 * Needs /usr/bin/chromium; says why and returns `skipped` when it is missing.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import sharp from "sharp";
import { loadConfig } from "../server/config.js";
import { decodeImage } from "../server/image/decode.js";
import { loadEmbedder } from "../server/model/embedder.js";
import { toModelInput } from "../shared/preprocess.js";
import { assessFrame, type FrameStats } from "../shared/quality.js";
import { CHROMIUM, FRAME_H, FRAME_W, launchChromium, rgbFrame } from "../test/support/browser.js";
import { ROOT, startServer } from "../test/support/server.js";

export interface BrowserResult {
  skipped?: string;
  analysis?: string;
  frames?: number;
  /** assessFrame on the analysis frame, median ms. */
  assessChromiumMs?: number;
  assessNodeMs?: number;
  /** Drawing the 720p frame down to the analysis size and reading it back, median ms. */
  drawChromiumMs?: number;
  /** draw + assess: what one live 720p frame costs the page. */
  frameChromiumMs?: number;
  embeds?: number;
  /** decode + preprocess + embed of the 1280x720 JPEG, median ms. */
  embedWasmMs?: number;
  embedWebgpuMs?: number;
  webgpuProvider?: string;
  webgpuNote?: string;
  embedServerPathMs?: number;
}

type PageApi = {
  embedBytes(b: Uint8Array, type?: string): Promise<{ vector: number[]; ms: number; provider: string }>;
  benchAssess(
    w: number,
    h: number,
    n: number,
    from?: CanvasImageSource,
  ): { assessMedianMs: number; drawMedianMs: number; analysis: string };
};

const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

export async function browserBench(quick: boolean): Promise<BrowserResult> {
  if (!existsSync(CHROMIUM)) return { skipped: `${CHROMIUM} not found (apt-get install --no-install-recommends chromium)` };
  const frames = quick ? 30 : 100;
  const embeds = quick ? 5 : 15;

  const dir = mkdtempSync(path.join(tmpdir(), "nosepaw-bench-browser-"));
  execFileSync("/usr/bin/python3", [path.join(ROOT, "test/support/nose_photos.py"), dir, "1"], { stdio: "pipe" });
  const rgb = await rgbFrame(path.join(dir, "dog0_0.jpg"), "sharp", 0);
  const photo = await sharp(rgb, { raw: { width: FRAME_W, height: FRAME_H, channels: 3 } })
    .resize(1280, 720, { fit: "fill" })
    .jpeg({ quality: 90 })
    .toBuffer();

  // Node: the same checks on a 640x360 RGBA frame, the server's own embedding path
  const small = await sharp(photo).resize(640, 360, { fit: "fill" }).ensureAlpha().raw().toBuffer();
  const nodeAssess: number[] = [];
  let prev: FrameStats | undefined;
  for (let i = 0; i < frames + 1; i++) {
    const t = performance.now();
    prev = assessFrame({ data: small, width: 640, height: 360, channels: 4 }, prev).stats;
    if (i > 0) nodeAssess.push(performance.now() - t);
  }
  const config = loadConfig({});
  const embedder = await loadEmbedder({ modelPath: config.modelPath, inputSize: 224, intraOpThreads: 0, batchWindowMs: 0, maxBatch: 1 });
  const limits = { maxBytes: 64 * 1024 * 1024, maxPixels: 100_000_000 };
  const nodeEmbed: number[] = [];
  for (let i = 0; i < embeds + 1; i++) {
    const t = performance.now();
    await embedder.embed(toModelInput((await decodeImage(new Uint8Array(photo), limits)).image, 224));
    if (i > 0) nodeEmbed.push(performance.now() - t);
  }
  await embedder.close();

  const server = await startServer();
  const browser = await launchChromium();
  try {
    const page = await browser.newPage();
    await page.goto(`http://${server.address}/?ep=wasm&camera=0`);
    await page.waitForFunction(() => document.getElementById("provider")!.textContent !== "…", undefined, { timeout: 90_000 });
    const provider = await page.textContent("#provider");
    if (provider !== "wasm") throw new Error(`page embeds with ${provider}, not wasm`);
    const b64 = photo.toString("base64");
    const cost = await page.evaluate(
      async ({ b64, frames }) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const bmp = await createImageBitmap(new Blob([bytes], { type: "image/jpeg" }));
        return (window as unknown as { nosepaw: PageApi }).nosepaw.benchAssess(1280, 720, frames, bmp);
      },
      { b64, frames },
    );
    const pageEmbed = await page.evaluate(
      async ({ b64, embeds }) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const api = (window as unknown as { nosepaw: PageApi }).nosepaw;
        const times: number[] = [];
        for (let i = 0; i < embeds + 1; i++) {
          const t = performance.now();
          await api.embedBytes(bytes);
          if (i > 0) times.push(performance.now() - t);
        }
        return times;
      },
      { b64, embeds },
    );
    const webgpu = quick ? { skipped: "skipped in --quick runs" } : await webgpuEmbed(server.address, b64);
    return {
      analysis: cost.analysis,
      frames,
      assessChromiumMs: cost.assessMedianMs,
      assessNodeMs: median(nodeAssess),
      drawChromiumMs: cost.drawMedianMs,
      frameChromiumMs: cost.drawMedianMs + cost.assessMedianMs,
      embeds,
      embedWasmMs: median(pageEmbed),
      embedWebgpuMs: webgpu.ms,
      webgpuProvider: webgpu.provider,
      webgpuNote:
        webgpu.skipped ??
        "Chromium --enable-unsafe-webgpu; without a GPU its adapter is SwiftShader (software), so this is a parity path, not a speed one",
      embedServerPathMs: median(nodeEmbed),
    };
  } finally {
    await browser.close();
    await server.stop();
  }
}

/** The page forced onto WebGPU: one warm-up embedding, then the median of two. */
async function webgpuEmbed(address: string, b64: string): Promise<{ ms?: number; provider?: string; skipped?: string }> {
  const browser = await launchChromium({ webgpu: true });
  try {
    const page = await browser.newPage();
    await page.goto(`http://${address}/?ep=webgpu&camera=0`);
    await page.waitForFunction(() => document.getElementById("provider")!.textContent !== "…", undefined, { timeout: 120_000 });
    const provider = (await page.textContent("#provider")) ?? "";
    if (provider !== "webgpu") return { provider, skipped: `page fell back to ${provider}: no WebGPU adapter` };
    const times = await page.evaluate(async (b64) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const api = (window as unknown as { nosepaw: PageApi }).nosepaw;
      const out: number[] = [];
      for (let i = 0; i < 3; i++) {
        const t = performance.now();
        await api.embedBytes(bytes);
        if (i > 0) out.push(performance.now() - t);
      }
      return out;
    }, b64);
    return { ms: median(times), provider };
  } finally {
    await browser.close();
  }
}
