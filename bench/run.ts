/**
 * Side-by-side measurements, each reported as a ratio taken in one run on the
 * same machine, so the figures compare like with like whatever the hardware:
 *
 * 1. preprocessing: our Pillow-exact LANCZOS (shared/) vs sharp's resize;
 * 2. inference: micro-batched vs one-at-a-time under concurrent load;
 * 3. end to end through gRPC: MAX_BATCH=16 vs MAX_BATCH=1 servers;
 * 4. memory: peak RSS while decoding concurrent 12 MP photos;
 * 5. browser: the capture page in headless Chromium vs Node (live checks,
 *    on-device WASM embedding vs the server's own path), when
 *    /usr/bin/chromium is there.
 *
 * usage: npm run bench [-- --quick]
 */
import sharp from "sharp";
import { loadConfig } from "../server/config.js";
import { startApp } from "../server/app.js";
import { createLogger } from "../server/log.js";
import { decodeImage } from "../server/image/decode.js";
import { loadEmbedder } from "../server/model/embedder.js";
import { toModelInput } from "../shared/preprocess.js";
import { gatewayClient } from "../test/support/grpc-client.js";
import { jpeg } from "../test/support/images.js";
import { browserBench } from "./browser.js";

const quick = process.argv.includes("--quick");
const limits = { maxBytes: 64 * 1024 * 1024, maxPixels: 100_000_000 };
const rows: string[][] = [];
const report = (what: string, a: string, b: string, ratio: number) => {
  rows.push([what, a, b, `${ratio.toFixed(2)}x`]);
  console.log(`${what}: ${a} vs ${b} -> ${ratio.toFixed(2)}x`);
};

async function time(fn: () => Promise<unknown> | unknown, reps: number): Promise<number> {
  await fn(); // warm-up
  const t = performance.now();
  for (let i = 0; i < reps; i++) await fn();
  return (performance.now() - t) / reps;
}

async function preprocessing() {
  for (const [w, h] of [[640, 480], [4032, 3024]] as const) {
    const bytes = await jpeg(w, h, 3);
    const { image } = await decodeImage(bytes, limits);
    const reps = quick ? 3 : w > 1000 ? 10 : 50;
    const ours = await time(() => toModelInput(image, 224), reps);
    const theirs = await time(async () => {
      const raw = await sharp(Buffer.from(image.data.buffer, image.data.byteOffset, image.data.byteLength), {
        raw: { width: image.width, height: image.height, channels: image.channels },
      })
        .resize(224, 224, { fit: "fill", kernel: "lanczos3" })
        .raw()
        .toBuffer();
      const out = new Float32Array(3 * 224 * 224);
      for (let i = 0; i < 224 * 224; i++) for (let c = 0; c < 3; c++) out[c * 224 * 224 + i] = raw[i * 3 + c] / 255;
      return out;
    }, reps);
    report(`preprocess ${w}x${h} -> 224 (ms/image)`, `pillow-exact ${ours.toFixed(1)}`, `sharp ${theirs.toFixed(1)}`, ours / theirs);
  }
}

async function inference() {
  const config = loadConfig({});
  const n = quick ? 16 : 64;
  const tensors = await Promise.all(
    Array.from({ length: 8 }, async (_, i) => toModelInput((await decodeImage(await jpeg(224, 224, 20 + i), limits)).image, 224)),
  );
  const throughput = async (maxBatch: number) => {
    const e = await loadEmbedder({ modelPath: config.modelPath, inputSize: 224, intraOpThreads: 0, batchWindowMs: 3, maxBatch });
    await e.embed(tensors[0]);
    const t = performance.now();
    await Promise.all(Array.from({ length: n }, (_, i) => e.embed(tensors[i % tensors.length])));
    const perSec = (n * 1000) / (performance.now() - t);
    await e.close();
    return perSec;
  };
  const batched = await throughput(16);
  const single = await throughput(1);
  report(`inference, ${n} concurrent (images/s)`, `batched ${batched.toFixed(1)}`, `one-by-one ${single.toFixed(1)}`, batched / single);
}

async function endToEnd() {
  const n = quick ? 16 : 48;
  const photo = await jpeg(1200, 900, 5);
  const run = async (maxBatch: string) => {
    const log = createLogger("error");
    const app = await startApp(loadConfig({ GRPC_PORT: "0", GRPC_HOST: "127.0.0.1", MAX_BATCH: maxBatch, DATA_DIR: "/tmp/nosepaw-bench" }), log);
    const client = gatewayClient(`127.0.0.1:${app.port}`);
    for (let i = 0; i < 50 && (await client.call("HealthCheck", { service: "" })).status !== "SERVING"; i++) await new Promise((r) => setTimeout(r, 100));
    await client.call("ExtractNoseVector", { image_data: photo });
    const t = performance.now();
    const results = await Promise.all(Array.from({ length: n }, () => client.call("ExtractNoseVector", { image_data: photo })));
    const perSec = (n * 1000) / (performance.now() - t);
    const failed = results.find((r) => !r.success);
    if (failed) throw new Error(`a request failed: ${failed.error_message}`);
    client.close();
    await app.close();
    return perSec;
  };
  const batched = await run("16");
  const single = await run("1");
  report(`gRPC ExtractNoseVector 1200x900 JPEG, ${n} concurrent (req/s)`, `MAX_BATCH=16 ${batched.toFixed(1)}`, `MAX_BATCH=1 ${single.toFixed(1)}`, batched / single);
}

async function memory() {
  const bytes = await jpeg(4032, 3024, 9);
  const base = process.memoryUsage().rss;
  let peak = base;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 5);
  const one = async () => toModelInput((await decodeImage(bytes, limits)).image, 224);
  await one();
  const peakOne = peak - base;
  peak = process.memoryUsage().rss;
  const base8 = peak;
  await Promise.all(Array.from({ length: 8 }, one));
  clearInterval(timer);
  const peakEight = peak - base8;
  report("peak RSS growth, 12 MP decode+preprocess (MB)", `8 concurrent ${(peakEight / 1e6).toFixed(0)}`, `1 at a time ${(Math.max(peakOne, 1e6) / 1e6).toFixed(0)}`, peakEight / Math.max(peakOne, 1e6));
}

await preprocessing();
await inference();
await endToEnd();
await memory();
await browserBench(report, quick);
console.log("\n| measurement | A | B | A/B |\n| --- | --- | --- | --- |");
for (const r of rows) console.log(`| ${r.join(" | ")} |`);
process.exit(0);
