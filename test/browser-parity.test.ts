/**
 * The model input the page makes against the server's, in a real browser
 * (Debian's Chromium, headless): the page decodes with the browser's own
 * decoder (createImageBitmap, then a canvas) and runs shared/preprocess.ts;
 * the server decodes with sharp (libvips) and runs the same preprocessing.
 * Lossless PNGs must give the same tensor to within one level, and so do
 * JPEGs here (see JPEG_MAX); translucent pixels cost the page a little more
 * (canvas premultiplication). Either way the embeddings must agree.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import sharp from "sharp";
import type { Browser, Page } from "playwright-core";
import { decodeImage } from "../server/image/decode.js";
import { toModelInput } from "../shared/preprocess.js";
import { cosine } from "../shared/similarity.js";
import { browserSkipReason, collectConsole, launchChromium, watchCsp } from "./support/browser.js";
import { ROOT, startServer, type RunningServer } from "./support/server.js";

const skip = browserSkipReason();
const LIMITS = { maxBytes: 64 * 1024 * 1024, maxPixels: 100_000_000 };
const LEVEL = 1 / 255;

/**
 * JPEG bounds. Measured: no difference at all (max 0, every value equal) on
 * the synthetic 4:2:0 photos, Debian's Chromium 156 (system libjpeg62-turbo)
 * against sharp 0.35 (libvips 8.18 with mozjpeg): both are libjpeg-turbo
 * underneath, same integer IDCT, same "fancy" triangular chroma upsampling.
 * A browser built on another JPEG decoder may round differently; one level
 * is allowed for that, and no more.
 */
const JPEG_MAX = 1 / 255;
const JPEG_MEAN = 0.1 / 255;
const JPEG_SHARE_OVER_ONE_LEVEL = 0;
const MIN_COSINE = 0.999;

type PageApi = {
  preprocessBytes(b: Uint8Array, type?: string): Promise<{ tensor: number[]; size: number; ms: number }>;
  embedBytes(b: Uint8Array, type?: string): Promise<{ vector: number[]; ms: number; provider: string }>;
};

interface Residual {
  max: number;
  mean: number;
  overOneLevel: number;
}

function residual(a: ArrayLike<number>, b: ArrayLike<number>): Residual {
  assert.equal(a.length, b.length);
  let max = 0;
  let sum = 0;
  let over = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (d > max) max = d;
    sum += d;
    // a hair above one level: float32 k/255 steps are not all equal
    if (d > LEVEL * 1.0001) over++;
  }
  return { max, mean: sum / a.length, overOneLevel: over / a.length };
}

const levels = (r: Residual) =>
  `max ${(r.max * 255).toFixed(2)}/255, mean ${(r.mean * 255).toFixed(3)}/255, ${(r.overOneLevel * 100).toFixed(2)}% > 1/255`;

async function pageTensor(page: Page, bytes: Buffer, type: string) {
  return page.evaluate(
    ({ b64, type }) => {
      const bin = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      return (window as unknown as { nosepaw: PageApi }).nosepaw.preprocessBytes(bin, type);
    },
    { b64: bytes.toString("base64"), type },
  );
}

async function pageVector(page: Page, bytes: Buffer, type: string) {
  return page.evaluate(
    ({ b64, type }) => {
      const bin = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      return (window as unknown as { nosepaw: PageApi }).nosepaw.embedBytes(bin, type);
    },
    { b64: bytes.toString("base64"), type },
  );
}

/** What the server's preprocessing workers compute for these bytes. */
async function serverTensor(bytes: Buffer, size: number): Promise<Float32Array> {
  const { image } = await decodeImage(new Uint8Array(bytes), LIMITS);
  return toModelInput(image, size);
}

async function serverVector(server: RunningServer, bytes: Buffer, format: "jpeg" | "png"): Promise<number[]> {
  const res = await fetch(`http://${server.address}/nose_embedder.NoseEmbedderService/ExtractNoseVector`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ imageData: bytes.toString("base64"), imageFormat: format }),
  });
  const body = (await res.json()) as { vector?: number[] };
  assert.ok(body.vector?.length, `server embedding: ${JSON.stringify(body).slice(0, 300)}`);
  return body.vector!;
}

describe("page tensor vs server tensor in Chromium", { skip, timeout: 300_000 }, () => {
  let dir = "";
  let server: RunningServer;
  let browser: Browser;
  let page: Page;
  let logs: string[] = [];
  let cspViolations: () => Promise<string[]>;

  async function compare(file: string, bytes: Buffer, format: "jpeg" | "png") {
    const type = `image/${format}`;
    const mine = await pageTensor(page, bytes, type);
    const theirs = await serverTensor(bytes, mine.size);
    const r = residual(mine.tensor, theirs);
    const vMine = await pageVector(page, bytes, type);
    const c = cosine(vMine.vector, await serverVector(server, bytes, format));
    console.log(
      `${file}: ${levels(r)}; cosine ${c.toFixed(6)} (page preprocess ${mine.ms.toFixed(0)} ms, ${vMine.provider} embed ${vMine.ms.toFixed(0)} ms)`,
    );
    return { r, c };
  }

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "nosepaw-parity-"));
    execFileSync("/usr/bin/python3", [path.join(ROOT, "test/support/nose_photos.py"), dir, "2"], { stdio: "pipe" });
    server = await startServer();
    browser = await launchChromium();
    page = await browser.newPage();
    logs = collectConsole(page);
    cspViolations = await watchCsp(page);
    await page.goto(`http://${server.address}/?ep=wasm&camera=0`);
    await page.waitForFunction(() => document.getElementById("provider")!.textContent !== "…", undefined, { timeout: 90_000 });
    assert.equal(await page.textContent("#provider"), "wasm", logs.join("\n"));
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  const jpegs = ["dog0_0", "dog0_1", "dog0_2", "dog0_3", "dog1_0", "dog1_3"];

  /**
   * An RGBA PNG of a photo: opaque inside, alpha falling to `floor` towards
   * the border (255: opaque everywhere). The server drops alpha as Pillow does.
   */
  async function withAlpha(file: string, floor: number): Promise<Buffer> {
    const { data, info } = await sharp(path.join(dir, file)).raw().toBuffer({ resolveWithObject: true });
    const rgba = Buffer.alloc(info.width * info.height * 4);
    for (let y = 0; y < info.height; y++) {
      for (let x = 0; x < info.width; x++) {
        const i = y * info.width + x;
        const edge = Math.min(x, y, info.width - 1 - x, info.height - 1 - y) / (Math.min(info.width, info.height) / 4);
        data.copy(rgba, i * 4, i * 3, i * 3 + 3);
        rgba[i * 4 + 3] = Math.round(floor + (255 - floor) * Math.min(1, edge));
      }
    }
    const png = await sharp(rgba, { raw: { width: info.width, height: info.height, channels: 4 } })
      .png()
      .toBuffer();
    assert.equal((await sharp(png).metadata()).hasAlpha, true);
    return png;
  }

  test("PNG: the browser's decoder and libvips give the same tensor, to within one level", async () => {
    const rgb = await sharp(path.join(dir, "dog0_0.jpg")).png().toBuffer();
    assert.equal((await sharp(rgb).metadata()).channels, 3);
    for (const [name, bytes] of [
      ["dog0_0.png (RGB)", rgb],
      ["dog1_0.png (RGBA, opaque)", await withAlpha("dog1_0.jpg", 255)],
    ] as const) {
      const { r, c } = await compare(name, bytes, "png");
      assert.ok(r.max <= LEVEL * 1.0001, `${name}: ${levels(r)}`);
      assert.ok(c >= MIN_COSINE, `${name}: cosine ${c}`);
    }
  });

  test("PNG with translucent and transparent pixels: the page keeps the stored colour, as the server does", async () => {
    // A 2D canvas would store premultiplied colour (levels lost under
    // translucent pixels, black under transparent ones); the page reads
    // decoded photos through a WebGL texture without premultiplication.
    for (const floor of [128, 0]) {
      const name = `dog1_0.png (RGBA, alpha ${floor}..255)`;
      const { r, c } = await compare(name, await withAlpha("dog1_0.jpg", floor), "png");
      assert.ok(r.max <= LEVEL * 1.0001, `${name}: ${levels(r)}`);
      assert.ok(c >= MIN_COSINE, `${name}: cosine ${c}`);
    }
  });

  test("JPEG (4:2:0): residuals within the measured bound, embeddings agree", async () => {
    let worst: Residual = { max: 0, mean: 0, overOneLevel: 0 };
    let lowest = 1;
    for (const name of jpegs) {
      const bytes = readFileSync(path.join(dir, `${name}.jpg`));
      assert.equal((await sharp(bytes).metadata()).chromaSubsampling, "4:2:0");
      const { r, c } = await compare(`${name}.jpg`, bytes, "jpeg");
      worst = {
        max: Math.max(worst.max, r.max),
        mean: Math.max(worst.mean, r.mean),
        overOneLevel: Math.max(worst.overOneLevel, r.overOneLevel),
      };
      lowest = Math.min(lowest, c);
    }
    console.log(`JPEG worst over ${jpegs.length} photos: ${levels(worst)}; lowest cosine ${lowest.toFixed(6)}`);
    assert.ok(worst.max <= JPEG_MAX * 1.0001, levels(worst));
    assert.ok(worst.mean <= JPEG_MEAN, levels(worst));
    assert.ok(worst.overOneLevel <= JPEG_SHARE_OVER_ONE_LEVEL, levels(worst));
    assert.ok(lowest >= MIN_COSINE, `lowest cosine ${lowest}`);
  });

  test("the page decoded, preprocessed and embedded under the served CSP without a violation", async () => {
    assert.deepEqual(await cspViolations(), [], logs.join("\n"));
  });
});
