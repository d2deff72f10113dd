/**
 * The rest of the capture app's journey in Chromium, at a phone's size with
 * touch and at desktop size: no usable camera (headless Chromium without a
 * fake device refuses it) falls back to the photo pickers with a clear
 * message; registering from files; identifying from the page; the
 * execution provider chosen without `?ep=`; the model served from the Cache
 * API on a second visit; a model the page cannot run; the layout and its
 * colours; and a page that logs no console errors.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { devices, type Browser, type BrowserContext, type Page } from "playwright-core";
import { browserSkipReason, collectConsole, identifyAndWait, launchChromium, screenshot } from "./support/browser.js";
import { ROOT, startServer, type RunningServer } from "./support/server.js";

const skip = browserSkipReason();
const API_KEY = "journey-test-key-0123456789";

const SIZES = {
  phone: { ...devices["Pixel 7"] },
  desktop: { viewport: { width: 1280, height: 900 } },
} as const;

/**
 * The test's transpiler names functions with a helper the page lacks; the
 * in-page code below uses named helpers, so the page gets a stand-in.
 */
const NAME_SHIM = { content: "globalThis.__name = (f) => f;" };

/** Console lines that are errors; `allow` drops expected ones (a refused request the test makes on purpose). */
function consoleErrors(logs: string[], allow: RegExp[] = []): string[] {
  return logs.filter((l) => (l.startsWith("error:") || l.startsWith("pageerror:")) && !allow.some((a) => a.test(l)));
}

describe("capture journey in Chromium", { skip, timeout: 600_000 }, () => {
  let dir = "";
  let server: RunningServer;
  let browser: Browser;
  const photo = (dog: number, k: number) => path.join(dir, `dog${dog}_${k}.jpg`);

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "nosepaw-journey-"));
    execFileSync("/usr/bin/python3", [path.join(ROOT, "test/support/nose_photos.py"), dir, "2"], { stdio: "pipe" });
    server = await startServer({ API_KEYS: API_KEY });
    // No fake camera: getUserMedia is refused.
    browser = await launchChromium();
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  for (const [size, dog] of [
    ["phone", 0],
    ["desktop", 1],
  ] as const) {
    describe(`at ${size} size`, () => {
      let context: BrowserContext;
      let page: Page;
      let logs: string[];
      const modelRequests: string[] = [];
      const press = (sel: string) => (size === "phone" ? page.tap(sel) : page.click(sel));

      before(async () => {
        context = await browser.newContext(SIZES[size]);
        await context.addInitScript(NAME_SHIM);
        page = await context.newPage();
        logs = collectConsole(page);
        page.on("response", (r) => {
          if (r.status() >= 400) logs.push(`http ${r.status()} ${r.url()}`);
        });
        page.on("request", (r) => {
          if (r.url().includes("/model/nose-embedder.onnx")) modelRequests.push(r.url());
        });
        // No ?ep=: the page picks the provider itself.
        await page.goto(`http://${server.address}/#key=${API_KEY}`);
      });

      after(async () => {
        await context?.close();
      });

      test("a camera that cannot be used falls back to the photo pickers with a clear message", async () => {
        await page.waitForSelector('#app[data-camera="none"]', { timeout: 30_000 });
        assert.equal(await page.textContent("#instruction"), "Pick photos of the nose");
        assert.match(
          (await page.textContent("#status")) ?? "",
          /^(Camera access was refused|No camera found)\. Pick photos of the nose below/,
        );
        assert.ok(await page.isVisible("#register-files"));
        assert.ok(await page.isVisible("#verify-file"));
      });

      test("without ?ep= the page chooses WASM when the browser offers no WebGPU adapter", async () => {
        await page.waitForFunction(() => document.getElementById("provider")!.textContent !== "…", undefined, { timeout: 120_000 });
        assert.equal(await page.textContent("#provider"), "wasm");
      });

      test("registering from files, then identifying the dog from the page", async () => {
        await page.setInputFiles(
          "#register-files",
          [0, 1, 2, 3].map((k) => photo(dog, k)),
        );
        await page.waitForSelector('#app[data-state="captured"]', { timeout: 120_000 });
        assert.match((await page.textContent("#agreement")) ?? "", /frames kept; lowest pairwise cosine/);
        await screenshot(page, `journey-${size}-captured`);
        await press("#register");
        await page.waitForSelector('#app[data-state="registered"]', { timeout: 60_000 });
        const did = await page.inputValue("#pet-did");
        assert.match(did, /^did:/, (await page.textContent("#result")) ?? "");
        const listed = await identifyAndWait(page, press);
        assert.ok(listed.includes(did), `${did} not in ${JSON.stringify(listed)}; ${await page.textContent("#result")}`);
        await screenshot(page, `journey-${size}-identified`);
      });

      test("the instruction is announced, the preview and instruction lead, controls are thumb-sized, nothing overflows", async () => {
        assert.equal(await page.getAttribute("#instruction", "aria-live"), "polite");
        assert.equal(await page.getAttribute("#status", "role"), "status");
        const layout = await page.evaluate(() => {
          const r = (id: string) => document.getElementById(id)!.getBoundingClientRect();
          const buttons = Array.from(document.querySelectorAll("button")).map((b) => b.getBoundingClientRect());
          return {
            overflow: document.scrollingElement!.scrollWidth - window.innerWidth,
            viewerHeight: r("camera").height,
            viewerTop: r("camera").top,
            innerHeight: window.innerHeight,
            innerWidth: window.innerWidth,
            smallest: Math.min(...buttons.map((b) => Math.min(b.width, b.height))),
          };
        });
        assert.ok(layout.overflow <= 0, `page is ${layout.overflow} px wider than the screen`);
        assert.ok(layout.smallest >= 44, `a button is ${layout.smallest} px: under the 44 px a thumb needs`);
        if (size === "phone") {
          // Content wider than the screen makes a phone zoom the whole page out.
          assert.equal(layout.innerWidth, SIZES.phone.viewport.width, "the page is laid out at the phone's width");
          assert.ok(layout.viewerTop < 0.15 * layout.innerHeight, "the preview starts at the top");
          assert.ok(layout.viewerHeight >= 0.45 * layout.innerHeight, `preview ${layout.viewerHeight} of ${layout.innerHeight} px`);
        }
      });

      test("every text passes WCAG AA contrast, the verdict colours included", async () => {
        const low = await page.evaluate(() => {
          const parse = (c: string) => {
            const m = c.match(/rgba?\(([^)]+)\)/);
            if (!m) return [0, 0, 0, 0];
            const p = m[1]
              .split(/[ ,/]+/)
              .filter(Boolean)
              .map(Number);
            return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
          };
          const over = (top: number[], bottom: number[]) => [0, 1, 2].map((i) => top[i] * top[3] + bottom[i] * (1 - top[3])).concat(1);
          const background = (el: Element | null): number[] => {
            if (!el) return [255, 255, 255, 1];
            const own = parse(getComputedStyle(el).backgroundColor);
            // The preview's black stands behind the instruction.
            const under = el.id === "instruction" ? [17, 17, 17, 1] : background(el.parentElement);
            return own[3] === 0 ? under : over(own, under);
          };
          const lum = (c: number[]) => {
            const f = (v: number) => ((v /= 255) <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
            return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
          };
          const out: string[] = [];
          const states: [string, string][] = [
            ["searching", ""],
            ["captured", "SAME"],
            ["registered", "REVIEW"],
            ["verified", "DIFFERENT"],
          ];
          const app = document.getElementById("app")!;
          const result = document.getElementById("result")!;
          const saved = [app.dataset.state, result.dataset.verdict, result.textContent];
          if (!result.textContent) result.textContent = "verdict";
          for (const [state, verdict] of states) {
            app.dataset.state = state;
            result.dataset.verdict = verdict;
            for (const el of Array.from(document.querySelectorAll("body *"))) {
              if (!Array.from(el.childNodes).some((n) => n.nodeType === 3 && n.textContent!.trim())) continue;
              if ((el as HTMLButtonElement).disabled || el.closest("[hidden]") || !(el as HTMLElement).offsetParent) continue;
              const cs = getComputedStyle(el);
              const fg = over(parse(cs.color), background(el));
              const bg = background(el);
              const [a, b] = [lum(fg) + 0.05, lum(bg) + 0.05];
              const ratio = Math.max(a, b) / Math.min(a, b);
              const px = parseFloat(cs.fontSize);
              const large = px >= 24 || (px >= 18.66 && Number(cs.fontWeight) >= 700);
              if (ratio < (large ? 3 : 4.5))
                out.push(`${state}/${verdict} ${el.tagName}#${el.id} "${el.textContent!.trim().slice(0, 30)}": ${ratio.toFixed(2)}`);
            }
          }
          [app.dataset.state, result.dataset.verdict, result.textContent] = saved as string[];
          return out;
        });
        assert.deepEqual(low, []);
      });

      test("a second visit takes the model from the Cache API, with no network fetch", async () => {
        assert.equal(modelRequests.length, 1, `first visit: ${modelRequests.join(", ")}`);
        await page.reload();
        await page.waitForFunction(() => document.getElementById("provider")!.textContent !== "…", undefined, { timeout: 120_000 });
        assert.match((await page.textContent("#model-version")) ?? "", /\(cached\)$/);
        assert.equal(modelRequests.length, 1, `second visit fetched the model again: ${modelRequests.join(", ")}`);
      });

      test("the page logged no console errors", () => {
        assert.deepEqual(consoleErrors(logs), [], logs.join("\n"));
      });
    });
  }

  test("a model whose output the page cannot use is refused by name, and the photo pickers still work", async () => {
    const context = await browser.newContext(SIZES.desktop);
    try {
      const page = await context.newPage();
      const logs = collectConsole(page);
      await page.route("**/model/card.json", async (route) => {
        const res = await route.fetch();
        const card = await res.json();
        card.output = { ...card.output, shape: [null, 256] };
        await route.fulfill({ response: res, json: card });
      });
      await page.goto(`http://${server.address}/#key=${API_KEY}`);
      await page.waitForFunction(() => document.getElementById("provider")!.textContent !== "…", undefined, { timeout: 60_000 });
      assert.equal(await page.textContent("#provider"), "off (model mismatch: model gives 256 numbers, the page expects 512)");
      await page.setInputFiles(
        "#register-files",
        [0, 1, 2].map((k) => photo(0, k)),
      );
      await page.waitForSelector('#app[data-state="captured"]', { timeout: 60_000 });
      // No device embeddings, so no agreement figure: the server embeds the photos itself.
      assert.match((await page.textContent("#agreement")) ?? "", /^\d frames kept$/);
      assert.deepEqual(consoleErrors(logs), [], logs.join("\n"));
    } finally {
      await context.close();
    }
  });

  test("when the server moves to another model version after the page loaded its own, the page stops embedding and says why", async () => {
    const context = await browser.newContext(SIZES.desktop);
    try {
      const page = await context.newPage();
      let cards = 0;
      await page.route("**/model/card.json", async (route) => {
        const res = await route.fetch();
        const card = await res.json();
        if (cards++ > 0) card.version = "2099.01.01-next";
        await route.fulfill({ response: res, json: card });
      });
      await page.goto(`http://${server.address}/#key=${API_KEY}`);
      await page.waitForFunction(() => document.getElementById("provider")!.textContent === "wasm", undefined, { timeout: 120_000 });
      const version = ((await page.textContent("#model-version")) ?? "").replace(/ \(cached\)$/, "");
      await page.setInputFiles(
        "#register-files",
        [0, 1, 2].map((k) => photo(1, k)),
      );
      await page.waitForSelector('#app[data-state="captured"]', { timeout: 60_000 });
      assert.equal(
        await page.textContent("#provider"),
        `off (model mismatch: server runs 2099.01.01-next, this page has ${version}; reload)`,
      );
      assert.match((await page.textContent("#agreement")) ?? "", /^\d frames kept$/);
    } finally {
      await context.close();
    }
  });
});
