/**
 * The capture app installed and used offline, in Chromium: one online visit
 * installs the service worker (app shell and ONNX runtime stored) and caches
 * the model; then, with the network gone, the page reloads from the worker,
 * embeds photos on the device, and keeps the registration in IndexedDB
 * (shown as waiting, kept across a reload); when the network returns it is
 * sent. The first answer is lost on the way back (the server registered the
 * pet, the page saw a 503), so the page tries again with the same
 * request_id and gets that same pet: one registration, shown as done.
 *
 * Between Chromium and the server sits a small HTTP proxy that can drop
 * every connection (offline for the service worker as well as the page) and
 * replace the first RegisterPet answer with a 503.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { RegisterPetRequestSchema } from "../gen/nose_embedder_pb.js";
import { browserSkipReason, collectConsole, launchChromium, screenshot } from "./support/browser.js";
import { ROOT, startServer, type RunningServer } from "./support/server.js";

const skip = browserSkipReason();
const NAME_SHIM = { content: "globalThis.__name = (f) => f;" };

interface LossyProxy {
  port: number;
  /** Every connection is dropped, as on a phone without signal. */
  offline: boolean;
  /** The next RegisterPet reaches the server, but its answer is replaced by a 503. */
  loseNextRegisterAnswer: boolean;
  /** request_id of every RegisterPet that went through, in order. */
  registerIds: string[];
  close(): Promise<void>;
}

async function lossyProxy(target: number): Promise<LossyProxy> {
  const state = { offline: false, loseNextRegisterAnswer: false, registerIds: [] as string[] };
  const server = http.createServer((req, res) => {
    if (state.offline) return req.socket.destroy();
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      const isRegister = req.url?.endsWith("/RegisterPet") ?? false;
      let lose = false;
      if (isRegister) {
        state.registerIds.push(fromBinary(RegisterPetRequestSchema, body).requestId);
        lose = state.loseNextRegisterAnswer;
        state.loseNextRegisterAnswer = false;
      }
      const up = http.request({ host: "127.0.0.1", port: target, method: req.method, path: req.url, headers: req.headers }, (upRes) => {
        if (lose) {
          upRes.resume();
          upRes.on("end", () => {
            res.writeHead(503, { "Content-Type": "text/plain", "Content-Length": "20" });
            res.end("answer lost on way\n");
          });
          return;
        }
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        upRes.pipe(res);
      });
      up.on("error", () => res.destroy());
      up.end(body);
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return Object.assign(state, {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  });
}

describe("the capture app offline in Chromium", { skip, timeout: 600_000 }, () => {
  let dir = "";
  let server: RunningServer;
  let proxy: LossyProxy;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let logs: string[];
  const photo = (k: number) => path.join(dir, `dog0_${k}.jpg`);
  const providerShown = () =>
    page.waitForFunction(() => document.getElementById("provider")!.textContent !== "…", undefined, { timeout: 120_000 });

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "nosepaw-offline-"));
    execFileSync("/usr/bin/python3", [path.join(ROOT, "test/support/nose_photos.py"), dir, "1"], { stdio: "pipe" });
    server = await startServer();
    proxy = await lossyProxy(server.port);
    browser = await launchChromium();
    context = await browser.newContext({ serviceWorkers: "allow", viewport: { width: 1280, height: 900 } });
    await context.addInitScript(NAME_SHIM);
    page = await context.newPage();
    logs = collectConsole(page);
  });

  after(async () => {
    await context?.close();
    await browser?.close();
    await proxy?.close();
    await server?.stop();
  });

  test("one online visit installs the service worker, stores the app shell and caches the model", async () => {
    await page.goto(`http://127.0.0.1:${proxy.port}/?camera=0`);
    await providerShown();
    assert.equal(await page.textContent("#provider"), "wasm", logs.join("\n"));
    const installed = await page.evaluate(async () => {
      const reg = await (window as unknown as { nosepaw: { serviceWorker: Promise<ServiceWorkerRegistration | undefined> } }).nosepaw
        .serviceWorker;
      const keys = await caches.keys();
      const shell = keys.find((k) => k.startsWith("nosepaw-shell-"));
      const stored = shell ? (await (await caches.open(shell)).keys()).map((r) => new URL(r.url).pathname) : [];
      const model = keys.includes("nosepaw-model") ? (await (await caches.open("nosepaw-model")).keys()).length : 0;
      const manifest = await (await fetch(document.querySelector<HTMLLinkElement>('link[rel="manifest"]')!.href)).json();
      return { active: reg?.active?.state, scope: reg?.scope, stored, model, manifest };
    });
    assert.equal(installed.active, "activated");
    assert.equal(installed.scope, `http://127.0.0.1:${proxy.port}/`);
    assert.ok(installed.stored.includes("/"), installed.stored.join(", "));
    assert.ok(
      installed.stored.some((p) => /\/assets\/ort-wasm-simd-threaded.*\.wasm$/.test(p)),
      installed.stored.join(", "),
    );
    assert.ok(
      installed.stored.some((p) => /\/assets\/ort\..*\.js$/.test(p)),
      installed.stored.join(", "),
    );
    assert.equal(installed.model, 1, "the model is in the page's Cache API store");
    assert.equal(installed.manifest.display, "standalone");
    assert.equal(installed.manifest.start_url, "./");
    assert.ok(installed.manifest.icons.some((i: { sizes: string; type: string }) => i.sizes === "512x512" && i.type === "image/png"));
  });

  test("offline, the page reloads from the service worker and runs the cached model", async () => {
    proxy.offline = true;
    await context.setOffline(true);
    await page.reload();
    await providerShown();
    assert.equal(await page.textContent("#provider"), "wasm", logs.join("\n"));
    assert.match((await page.textContent("#model-version")) ?? "", /\(cached\)$/);
    assert.equal(await page.evaluate(() => navigator.onLine), false);
  });

  test("a registration captured offline is kept with its embeddings and scores, and shown as waiting", async () => {
    await page.setInputFiles("#register-files", [0, 1, 2, 3].map(photo));
    await page.waitForSelector('#app[data-state="captured"]', { timeout: 120_000 });
    await page.click("#register");
    await page.waitForSelector('#app[data-state="queued"]', { timeout: 30_000 });
    await page.waitForSelector('#queue-list li[data-state="waiting"]', { timeout: 30_000 });
    assert.match((await page.textContent("#result")) ?? "", /saved on this device: it will be sent when the network returns/);
    // Kept across a reload, still offline.
    await page.reload();
    await page.waitForSelector('#queue-list li[data-state="waiting"]', { timeout: 30_000 });
    const kept = await page.evaluate(
      () =>
        new Promise<{ id: string; jpegs: number; dims: number[]; providers: string[]; scores: number[] }[]>((resolve, reject) => {
          const open = indexedDB.open("nosepaw");
          open.onerror = () => reject(open.error);
          open.onsuccess = () => {
            const get = open.result.transaction("captures").objectStore("captures").getAll();
            get.onsuccess = () =>
              resolve(
                get.result.map((c) => ({
                  id: c.id,
                  jpegs: c.jpegs.length,
                  dims: c.vectors.map((v: { vector: Float32Array }) => v.vector.length),
                  providers: c.vectors.map((v: { executionProvider: string }) => v.executionProvider),
                  scores: c.scores,
                })),
              );
          };
        }),
    );
    assert.equal(kept.length, 1);
    assert.equal(kept[0].jpegs, 4);
    assert.deepEqual(kept[0].dims, [512, 512, 512, 512]);
    assert.deepEqual(kept[0].providers, ["wasm", "wasm", "wasm", "wasm"]);
    assert.equal(kept[0].scores.length, 4);
    assert.ok(
      kept[0].scores.every((s) => s > 0 && s <= 1),
      String(kept[0].scores),
    );
    assert.deepEqual(proxy.registerIds, [], "nothing was sent while offline");
    await screenshot(page, "offline-queued");
    (globalThis as unknown as { queuedId: string }).queuedId = kept[0].id;
  });

  test("back online, it is sent; the first answer is lost and the retry registers the pet once", async () => {
    const queuedId = (globalThis as unknown as { queuedId: string }).queuedId;
    proxy.loseNextRegisterAnswer = true;
    proxy.offline = false;
    await context.setOffline(false);
    await page.waitForSelector('#queue-list li[data-state="done"], #queue-list li[data-state="failed"]', { timeout: 120_000 });
    const item = (await page.textContent("#queue-list li")) ?? "";
    assert.equal(await page.getAttribute("#queue-list li", "data-state"), "done", item);
    const did = /done: (did:\S+)/.exec(item)?.[1];
    assert.ok(did, item);
    assert.equal(await page.inputValue("#pet-did"), did);
    // Two tries went through, both with the id made when the capture was queued.
    assert.deepEqual(proxy.registerIds, [queuedId, queuedId]);
    const done = server.logs.filter((l) => l.msg === "register.done");
    assert.equal(done.length, 1, JSON.stringify(done));
    assert.equal(done[0].petDid, did);
    assert.equal(done[0].idempotencyKey, queuedId);
    await screenshot(page, "offline-sent");
  });

  test("the registered pet is found once by IdentifyPet from the page", async () => {
    await page.setInputFiles("#verify-file", photo(0));
    await page.waitForFunction(
      () => /^(SAME|REVIEW|DIFFERENT|Not verified|Error)/.test(document.getElementById("result")!.textContent ?? ""),
      undefined,
      { timeout: 60_000 },
    );
    await page.click("#identify");
    await page.waitForFunction(
      () =>
        document.querySelectorAll("#matches li").length > 0 ||
        /^(Not identified|No registered|Error)/.test(document.getElementById("result")!.textContent ?? ""),
      undefined,
      { timeout: 60_000 },
    );
    const did = await page.inputValue("#pet-did");
    const matches = await page.$$eval("#matches li", (lis) => lis.map((li) => li.textContent ?? ""));
    assert.equal(matches.length, 1, matches.join("\n"));
    assert.ok(matches[0].startsWith(`${did}:`), matches[0]);
  });

  test("a verification made offline is queued, then sent when the network returns", async () => {
    proxy.offline = true;
    await context.setOffline(true);
    await page.setInputFiles("#verify-file", photo(1));
    await page.waitForFunction(() => document.querySelectorAll('#queue-list li[data-state="waiting"]').length === 1, undefined, {
      timeout: 60_000,
    });
    assert.equal(await page.getAttribute("#app", "data-state"), "queued");
    proxy.offline = false;
    await context.setOffline(false);
    await page.waitForFunction(
      () => document.querySelectorAll('#queue-list li[data-state="done"], #queue-list li[data-state="failed"]').length === 2,
      undefined,
      { timeout: 60_000 },
    );
    const items = await page.$$eval("#queue-list li", (lis) => lis.map((li) => `${li.dataset.state} ${li.textContent}`));
    assert.match(
      items[1],
      /^done Verification of did:\S+, quality [\d.]+–[\d.]+, embedded on this device: done: SAME, similarity /,
      items.join("\n"),
    );
  });

  test("the page logged no console errors beyond the refused requests made offline", () => {
    const errors = logs.filter(
      (l) => (l.startsWith("error:") || l.startsWith("pageerror:")) && !/ERR_INTERNET_DISCONNECTED|503|Failed to load resource/.test(l),
    );
    assert.deepEqual(errors, [], logs.join("\n"));
  });
});
