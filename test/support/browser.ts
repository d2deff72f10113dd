/**
 * Browser-test helpers: Debian's Chromium driven by playwright-core, a fake
 * camera fed from a Y4M file composed from nose photos, and the app served by
 * the real server (`npm start`).
 */
import { existsSync, mkdirSync, openSync, writeSync, closeSync } from "node:fs";
import path from "node:path";
import sharp from "sharp";
import { chromium, type Browser, type Page } from "playwright-core";
import { INSTALL, requireSystem } from "./require-system.js";
import { ROOT } from "./server.js";

export const CHROMIUM = "/usr/bin/chromium";
export const SCREENS = path.join(ROOT, "test-results", "screens");

/**
 * Why the browser tests cannot run here, or undefined when they can. Without
 * Chromium they are skipped on a developer's machine and fail under CI.
 */
export function browserSkipReason(): string | undefined {
  return requireSystem("Debian's Chromium", !existsSync(CHROMIUM) && `${CHROMIUM} not found`, INSTALL.chromium) || undefined;
}

const BASE_FLAGS = [
  "--no-sandbox",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
];

export async function launchChromium(opts: { y4m?: string; webgpu?: boolean } = {}): Promise<Browser> {
  const args = [...BASE_FLAGS];
  if (opts.y4m)
    args.push("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream", `--use-file-for-fake-video-capture=${opts.y4m}`);
  if (opts.webgpu) args.push("--enable-unsafe-webgpu");
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args });
}

export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(SCREENS, { recursive: true });
  const file = path.join(SCREENS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/** Console lines and page errors, for failure messages. */
export function collectConsole(page: Page): string[] {
  const lines: string[] = [];
  page.on("console", (m) => lines.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => lines.push(`pageerror: ${e.message}`));
  return lines;
}

/**
 * Records Content-Security-Policy violations: the document's
 * securitypolicyviolation events and the console lines Chromium writes for
 * them (workers' included). Call before the page loads; the returned
 * function lists what was reported so far.
 */
export async function watchCsp(page: Page): Promise<() => Promise<string[]>> {
  const lines: string[] = [];
  page.on("console", (m) => {
    if (/Content Security Policy/i.test(m.text())) lines.push(m.text());
  });
  await page.addInitScript(() => {
    const seen: string[] = [];
    (window as unknown as { cspViolations: string[] }).cspViolations = seen;
    document.addEventListener("securitypolicyviolation", (e) =>
      seen.push(`${e.violatedDirective} blocked ${e.blockedURI} (${e.sourceFile}:${e.lineNumber})`),
    );
  });
  return async () => [...lines, ...(await page.evaluate(() => (window as unknown as { cspViolations?: string[] }).cspViolations ?? []))];
}

export const FRAME_W = 640;
export const FRAME_H = 480;

export type Stretch = "sharp" | "blurred" | "glare" | "far" | "moving";

/** Grey level of the small marker block in each stretch's bottom-right corner. */
export function markerOf(index: number): number {
  return 30 + 40 * index;
}
export const MARKER_SIZE = 12;

export async function rgbFrame(photo: string, kind: Stretch, index: number): Promise<Buffer> {
  // surroundings: light fur, a mid-tone with some grain
  const out = Buffer.alloc(FRAME_W * FRAME_H * 3);
  let seed = 12345;
  for (let i = 0; i < FRAME_W * FRAME_H; i++) {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    const n = (seed >> 16) % 24;
    out[i * 3] = 150 + n;
    out[i * 3 + 1] = 128 + n;
    out[i * 3 + 2] = 104 + n;
  }
  const side = kind === "far" ? 100 : 400;
  let nose = sharp(photo).resize(side, side, { kernel: "lanczos3" });
  if (kind === "blurred") nose = sharp(await nose.png().toBuffer()).blur(9);
  const fg = await nose.removeAlpha().raw().toBuffer();
  if (kind === "glare") {
    // a specular disc on the leather above the nostrils, where a wet nose catches the light
    const gx = side * 0.5,
      gy = side * 0.38,
      r = side * 0.16;
    for (let y = Math.floor(gy - r); y <= gy + r; y++)
      for (let x = Math.floor(gx - r); x <= gx + r; x++)
        if ((x - gx) ** 2 + (y - gy) ** 2 <= r * r) fg.fill(250, (y * side + x) * 3, (y * side + x) * 3 + 3);
  }
  const x0 = Math.round((FRAME_W - side) / 2);
  const y0 = Math.round((FRAME_H - side) / 2);
  for (let y = 0; y < side; y++) fg.copy(out, ((y0 + y) * FRAME_W + x0) * 3, y * side * 3, (y + 1) * side * 3);
  const m = markerOf(index);
  for (let y = FRAME_H - MARKER_SIZE; y < FRAME_H; y++) out.fill(m, (y * FRAME_W + FRAME_W - MARKER_SIZE) * 3, (y * FRAME_W + FRAME_W) * 3);
  return out;
}

/** The RGB frames of one stretch of the clip, as the fake camera plays them. */
export async function stretchFrames(photo: string, kind: Stretch, index: number, count: number): Promise<Buffer[]> {
  const base = await rgbFrame(photo, kind, index);
  if (kind !== "moving") return Array.from({ length: count }, () => base);
  return Array.from({ length: count }, (_, f) => shifted(base, ((f * 37) % 90) - 45, ((f * 23) % 50) - 25));
}

function shifted(rgb: Buffer, dx: number, dy: number): Buffer {
  const out = Buffer.alloc(rgb.length);
  for (let y = 0; y < FRAME_H; y++) {
    const sy = Math.min(FRAME_H - 1, Math.max(0, y - dy));
    for (let x = 0; x < FRAME_W; x++) {
      const sx = Math.min(FRAME_W - 1, Math.max(0, x - dx));
      rgb.copy(out, (y * FRAME_W + x) * 3, (sy * FRAME_W + sx) * 3, (sy * FRAME_W + sx) * 3 + 3);
    }
  }
  return out;
}

/** BT.601 limited range, 4:2:0 (chroma averaged over 2x2). */
function toI420(rgb: Buffer): Buffer {
  const w = FRAME_W;
  const h = FRAME_H;
  const out = Buffer.alloc((w * h * 3) / 2);
  const u0 = w * h;
  const v0 = u0 + (w * h) / 4;
  for (let i = 0; i < w * h; i++) {
    const r = rgb[i * 3];
    const g = rgb[i * 3 + 1];
    const b = rgb[i * 3 + 2];
    out[i] = Math.round(16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255);
  }
  for (let y = 0; y < h; y += 2) {
    for (let x = 0; x < w; x += 2) {
      let r = 0,
        g = 0,
        b = 0;
      for (const [dx, dy] of [
        [0, 0],
        [1, 0],
        [0, 1],
        [1, 1],
      ]) {
        const p = ((y + dy) * w + x + dx) * 3;
        r += rgb[p];
        g += rgb[p + 1];
        b += rgb[p + 2];
      }
      r /= 4;
      g /= 4;
      b /= 4;
      const j = (y / 2) * (w / 2) + x / 2;
      out[u0 + j] = Math.round(128 + (-37.797 * r - 74.203 * g + 112 * b) / 255);
      out[v0 + j] = Math.round(128 + (112 * r - 93.786 * g - 18.214 * b) / 255);
    }
  }
  return out;
}

/**
 * Writes a 15 fps Y4M clip: for each stretch, `framesEach` frames of the
 * photo composed that way (the fake camera loops the file).
 */
export async function writeFakeCamera(file: string, photo: string, stretches: Stretch[], framesEach = 24): Promise<void> {
  const fd = openSync(file, "w");
  try {
    writeSync(fd, `YUV4MPEG2 W${FRAME_W} H${FRAME_H} F15:1 Ip A1:1 C420jpeg\n`);
    for (let s = 0; s < stretches.length; s++) {
      const frames = await stretchFrames(photo, stretches[s], s, framesEach);
      let last: Buffer | undefined;
      let yuv: Buffer | undefined;
      for (const rgb of frames) {
        if (rgb !== last) yuv = toI420(rgb);
        last = rgb;
        writeSync(fd, "FRAME\n");
        writeSync(fd, yuv!);
      }
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * Presses identify and waits for its outcome: a list of matches, or a
 * refusal or error shown as such (never an empty list).
 */
export async function identifyAndWait(page: Page, press: (selector: string) => Promise<void> = (s) => page.click(s)): Promise<string> {
  await press("#identify");
  await page.waitForFunction(
    () =>
      document.querySelectorAll("#matches li").length > 0 ||
      /^(Not identified|Error)/.test(document.getElementById("result")!.textContent ?? ""),
    undefined,
    { timeout: 60_000 },
  );
  return (await page.textContent("#matches")) ?? "";
}
