/**
 * The capture app in a real browser (Debian's Chromium, headless), served by
 * the real server: a fake camera plays a clip of bad stretches (blurred,
 * glare, too far, moving) followed by a sharp one; the page must guide
 * through the bad ones, keep frames of the sharp one, embed on the device
 * like the server does, and register then verify end to end.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { devices, type Browser, type Page } from "playwright-core";
import { assessFrame, type FrameStats } from "../shared/quality/index.js";
import { cosine } from "../shared/similarity.js";
import { create, toBinary } from "@bufbuild/protobuf";
import { IdentifyPetResponseSchema } from "../gen/nose_embedder_pb.js";
import {
  browserSkipReason,
  collectConsole,
  FRAME_H,
  FRAME_W,
  identifyAndWait,
  launchChromium,
  markerOf,
  MARKER_SIZE,
  screenshot,
  stretchFrames,
  watchCsp,
  writeFakeCamera,
  type Stretch,
} from "./support/browser.js";
import { ROOT, startServer, type RunningServer } from "./support/server.js";

const skip = browserSkipReason();
const STRETCHES: Stretch[] = ["blurred", "glare", "far", "moving", "sharp"];
const SHARP = STRETCHES.indexOf("sharp");
const FRAMES_EACH = 36;
/** The server requires it on Connect; the page gets it as #key=... as an operator would hand it out. */
const API_KEY = "capture-test-key-0123456789";
const WITH_KEY = { Authorization: `Bearer ${API_KEY}` };

type PageApi = {
  state: string;
  instructions: { at: number; text: string }[];
  assessMs: number[];
  embedMs: number[];
  kept: { canvas: HTMLCanvasElement }[];
  embedBytes(b: Uint8Array): Promise<{ vector: number[]; ms: number; provider: string }>;
  benchAssess(w: number, h: number, n?: number): { drawMs: number; assessMs: number; analysis: string };
};

async function serverVector(server: RunningServer, jpeg: Buffer): Promise<number[]> {
  const res = await fetch(`http://${server.address}/nose_embedder.NoseEmbedderService/ExtractNoseVector`, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...WITH_KEY },
    body: JSON.stringify({ imageData: jpeg.toString("base64"), imageFormat: "jpeg" }),
  });
  const body = (await res.json()) as { vector?: number[]; success?: boolean; errorMessage?: string };
  assert.ok(body.vector?.length, `server embedding: ${JSON.stringify(body).slice(0, 300)}`);
  return body.vector!;
}

async function waitState(page: Page, state: string, timeout: number, logs: string[]) {
  try {
    await page.waitForSelector(`#app[data-state="${state}"]`, { timeout });
  } catch (e) {
    const seen = await page.evaluate(() => {
      const n = (window as unknown as { nosepaw: PageApi }).nosepaw;
      return {
        state: n.state,
        instructions: n.instructions.slice(-10).map((i) => i.text),
        result: document.getElementById("result")?.textContent,
      };
    });
    throw new Error(`state ${state} not reached: ${JSON.stringify(seen)}\n${logs.slice(-20).join("\n")}\n${(e as Error).message}`);
  }
}

describe("capture app in Chromium", { skip, timeout: 300_000 }, () => {
  let dir = "";
  let server: RunningServer;
  let browser: Browser;
  let page: Page;
  let logs: string[] = [];
  let cspViolations: () => Promise<string[]>;
  const photo = (dog: number, k = 0) => path.join(dir, `dog${dog}_${k}.jpg`);

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "nosepaw-browser-"));
    execFileSync("/usr/bin/python3", [path.join(ROOT, "test/support/nose_photos.py"), dir, "3"], { stdio: "pipe" });
    await writeFakeCamera(path.join(dir, "camera.y4m"), photo(1), STRETCHES, FRAMES_EACH);
    server = await startServer({ API_KEYS: API_KEY });
    browser = await launchChromium({ y4m: path.join(dir, "camera.y4m") });
    page = await browser.newPage({ viewport: { width: 820, height: 1100 } });
    logs = collectConsole(page);
    cspViolations = await watchCsp(page);
    await page.goto(`http://${server.address}/?ep=wasm#key=${API_KEY}`);
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  test("live checks guide through the bad stretches and keep frames of the sharp one", async () => {
    await waitState(page, "guiding", 30_000, logs);
    await page.waitForFunction(() => document.getElementById("instruction")!.textContent !== "Starting the camera…");
    await screenshot(page, "1-guiding");
    // Once the model is loaded (its compilation may stall the page and skip
    // frames), restart the capture as the looping clip starts over, so that
    // it goes through the bad stretches again before the sharp one.
    await page.waitForFunction(() => document.getElementById("provider")!.textContent !== "…", undefined, { timeout: 60_000 });
    // A capture may already have finished while the model loaded; the
    // preview then holds on that frame, so take the camera live again first.
    // Wait for the clip to come round to its first stretch. The page may
    // keep frames of the sharp stretch meanwhile and hold the preview still:
    // retake whenever it does, or the first stretch never shows.
    const deadline = Date.now() + 90_000;
    for (;;) {
      if ((await page.getAttribute("#app", "data-state")) === "captured") await page.click("#retake");
      const seen = await page
        .waitForFunction(
          ({ first, size }) => {
            // A capture that finished after the check above (a slow machine) holds the preview
            // on its last frame, so the clip's start would never show: take the camera live again.
            if (document.getElementById("app")!.dataset.state === "captured") {
              document.getElementById("retake")!.click();
              return false;
            }
            const v = document.getElementById("camera") as HTMLVideoElement;
            const c = document.createElement("canvas");
            c.width = v.videoWidth;
            c.height = v.videoHeight;
            const ctx = c.getContext("2d")!;
            ctx.drawImage(v, 0, 0);
            const px = ctx.getImageData(c.width - size / 2, c.height - size / 2, 1, 1).data;
            return Math.abs((px[0] + px[1] + px[2]) / 3 - first) < 12;
          },
          { first: markerOf(0), size: MARKER_SIZE },
          { timeout: 5_000, polling: 20 },
        )
        .then(
          () => true,
          () => false,
        );
      if (seen && (await page.getAttribute("#app", "data-state")) !== "captured") break;
      assert.ok(Date.now() < deadline, "the fake camera's first stretch never showed");
    }
    await page.click("#retake");
    await waitState(page, "captured", 120_000, logs);
    await screenshot(page, "2-captured");

    // What the checks say of each bad stretch, computed here from the same frames
    const expected = new Set<string>();
    for (let s = 0; s < STRETCHES.length; s++) {
      if (STRETCHES[s] === "sharp") continue;
      let prev: FrameStats | undefined;
      // Each bad stretch must draw an instruction of its own: a set that only grows would pass from the first one on.
      const said = new Set<string>();
      for (const rgb of await stretchFrames(photo(1), STRETCHES[s], s, 3)) {
        const a = assessFrame({ data: rgb, width: FRAME_W, height: FRAME_H, channels: 3 }, prev);
        prev = a.stats;
        if (a.instruction) said.add(a.instruction);
      }
      assert.ok(said.size > 0, `the checks give no instruction for the ${STRETCHES[s]} stretch (${s})`);
      for (const i of said) expected.add(i);
    }
    const shown = await page.evaluate(() => (window as unknown as { nosepaw: PageApi }).nosepaw.instructions.map((i) => i.text));
    for (const instruction of expected)
      assert.ok(shown.includes(instruction), `page never said "${instruction}"; it said ${JSON.stringify([...new Set(shown)])}`);

    // every kept frame carries the sharp stretch's corner marker
    const markers = await page.evaluate((size) => {
      return (window as unknown as { nosepaw: PageApi }).nosepaw.kept.map(({ canvas }) => {
        const px = canvas.getContext("2d")!.getImageData(canvas.width - size / 2, canvas.height - size / 2, 1, 1).data;
        return (px[0] + px[1] + px[2]) / 3;
      });
    }, MARKER_SIZE);
    assert.equal(markers.length, 5, "five frames kept");
    for (const m of markers)
      assert.ok(Math.abs(m - markerOf(SHARP)) < 12, `kept frame from another stretch: marker ${m}, sharp is ${markerOf(SHARP)}`);
    const agreement = await page.textContent("#agreement");
    assert.match(agreement ?? "", /lowest pairwise cosine (0\.9\d\d|1\.000)/);

    const cost = await page.evaluate(() => (window as unknown as { nosepaw: PageApi }).nosepaw.benchAssess(1280, 720, 30));
    const live = await page.evaluate(() => (window as unknown as { nosepaw: PageApi }).nosepaw.assessMs);
    const median = [...live].sort((a, b) => a - b)[Math.floor(live.length / 2)];
    console.log(
      `live checks: ${median.toFixed(2)} ms median on the 640x480 camera; 720p frame: draw+read ${cost.drawMs.toFixed(2)} ms, assessFrame ${cost.assessMs.toFixed(2)} ms at ${cost.analysis}`,
    );
  });

  test("the WASM provider's embedding agrees with the server's ExtractNoseVector", async () => {
    assert.equal(await page.textContent("#provider"), "wasm");
    for (const file of [photo(1), photo(2, 1)]) {
      const jpeg = readFileSync(file);
      const mine = await page.evaluate((b64) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        return (window as unknown as { nosepaw: PageApi }).nosepaw.embedBytes(bytes);
      }, jpeg.toString("base64"));
      const theirs = await serverVector(server, jpeg);
      assert.equal(mine.vector.length, theirs.length);
      const c = cosine(mine.vector, theirs);
      console.log(`${path.basename(file)}: wasm ${mine.ms.toFixed(0)} ms per image, cosine to server ${c.toFixed(6)}`);
      assert.ok(c >= 0.999, `cosine ${c}`);
    }
  });

  test("register, then verify the same dog (camera) and a different dog (file)", async () => {
    await page.click("#register");
    await waitState(page, "registered", 60_000, logs);
    const did = await page.inputValue("#pet-did");
    assert.match(did, /^did:/);
    await screenshot(page, "3-registered");

    await page.click("#verify");
    await waitState(page, "verified", 120_000, logs);
    assert.equal(await page.getAttribute("#result", "data-verdict"), "SAME", (await page.textContent("#result")) ?? "");
    await screenshot(page, "4-verified-same");

    // Dog 0: dog 2 is a pink nose filling its whole photo, which the page refuses as a file (no dome, so no nose found).
    await page.setInputFiles("#verify-file", photo(0));
    await page.waitForSelector('#result[data-verdict="DIFFERENT"]', { timeout: 60_000 });
    assert.equal(await page.getAttribute("#app", "data-state"), "verified");
    await screenshot(page, "5-verified-different");

    // A client that slips in another nose's vector for this dog's photo is refused by the server,
    // over the same Connect route and origin the page uses.
    const refused = await page.evaluate(
      async ({ did, own, other }) => {
        const api = (window as unknown as { nosepaw: PageApi }).nosepaw;
        // No named helpers in here: the test's transpiler would wrap them in a function the page lacks.
        const tampered = await api.embedBytes(Uint8Array.from(atob(other), (c) => c.charCodeAt(0)));
        const { version } = await (await fetch("/model/card.json")).json();
        const res = await fetch("/nose_embedder.NoseEmbedderService/VerifyPet", {
          method: "POST",
          headers: { "Content-Type": "application/json", Authorization: `Bearer ${sessionStorage.getItem("nosepaw.apiKey")}` },
          body: JSON.stringify({
            petDid: did,
            photo: { imageData: own, imageFormat: "jpeg" },
            clientEmbedding: { vector: Array.from(tampered.vector), executionProvider: "wasm", modelVersion: version },
          }),
        });
        return { status: res.status, body: await res.json() };
      },
      { did, own: readFileSync(photo(1)).toString("base64"), other: readFileSync(photo(2)).toString("base64") },
    );
    assert.equal(refused.status, 200, JSON.stringify(refused.body));
    assert.equal(refused.body.success ?? false, false, JSON.stringify(refused.body));
    assert.equal(refused.body.errorCode, "INVALID_REQUEST", JSON.stringify(refused.body));
    assert.match(refused.body.errorMessage, /client embedding disagrees/);
  });

  test("identify lists the registered dog, and shows a refusal as a refusal rather than an empty list", async () => {
    const did = await page.inputValue("#pet-did");
    const listed = await identifyAndWait(page);
    assert.ok(listed.includes(did), `${did} not in ${JSON.stringify(listed)}; ${await page.textContent("#result")}`);
    // The service refuses (a photo it cannot use, an overloaded registry): the page must say so.
    await page.route("**/nose_embedder.NoseEmbedderService/IdentifyPet", (route) =>
      route.fulfill({
        status: 200,
        contentType: "application/proto",
        body: Buffer.from(
          toBinary(
            IdentifyPetResponseSchema,
            create(IdentifyPetResponseSchema, { success: false, errorMessage: "no nose found in the photo" }),
          ),
        ),
      }),
    );
    try {
      await page.click("#identify");
      await page
        .waitForFunction(() => /^Not identified/.test(document.getElementById("result")!.textContent ?? ""), undefined, { timeout: 30_000 })
        .catch(() => undefined);
      assert.equal(await page.textContent("#result"), "Not identified: no nose found in the photo");
      assert.equal(await page.locator("#matches li").count(), 0);
    } finally {
      await page.unroute("**/nose_embedder.NoseEmbedderService/IdentifyPet");
    }
  });

  test("the page logged no console errors", () => {
    // ONNX Runtime Web writes its warnings through console.error unless told otherwise.
    const errors = logs.filter((l) => l.startsWith("error:") || l.startsWith("pageerror:"));
    assert.deepEqual(errors, [], logs.join("\n"));
  });

  test("the page kept its key out of the address bar, a call without the key is refused, and no CSP violation was reported", async () => {
    assert.equal(new URL(page.url()).hash, "", "the #key fragment is taken out of the address bar");
    const keyless = await page.evaluate(async () => {
      const res = await fetch("/nose_embedder.NoseEmbedderService/HealthCheck", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: "{}",
      });
      return { status: res.status, body: await res.json() };
    });
    assert.equal(keyless.status, 401);
    assert.equal(keyless.body.code, "unauthenticated");
    assert.deepEqual(await cspViolations(), [], logs.join("\n"));
  });

  test("at a phone's size with touch, the live camera keeps frames of the sharp stretch and Retake answers a tap", async () => {
    const context = await browser.newContext({ ...devices["Pixel 7"] });
    try {
      const phone = await context.newPage();
      const phoneLogs = collectConsole(phone);
      await phone.goto(`http://${server.address}/?ep=wasm#key=${API_KEY}`);
      await waitState(phone, "captured", 120_000, phoneLogs);
      const kept = await phone.evaluate(() => (window as unknown as { nosepaw: PageApi }).nosepaw.kept.length);
      assert.equal(kept, 5);
      await screenshot(phone, "phone-live-captured");
      await phone.tap("#retake");
      await phone.waitForFunction(() => document.getElementById("app")!.dataset.state !== "captured", undefined, { timeout: 10_000 });
      assert.deepEqual(
        phoneLogs.filter((l) => l.startsWith("error:") || l.startsWith("pageerror:")),
        [],
        phoneLogs.join("\n"),
      );
    } finally {
      await context.close();
    }
  });
});

describe("capture app on WebGPU (SwiftShader)", { skip, timeout: 180_000 }, () => {
  test("one image embeds on WebGPU like on the server", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "nosepaw-webgpu-"));
    execFileSync("/usr/bin/python3", [path.join(ROOT, "test/support/nose_photos.py"), dir, "2"], { stdio: "pipe" });
    const server = await startServer();
    const browser = await launchChromium({ webgpu: true });
    try {
      const page = await browser.newPage();
      const logs = collectConsole(page);
      const cspViolations = await watchCsp(page);
      await page.goto(`http://${server.address}/?ep=webgpu&camera=0`);
      await page.waitForFunction(() => document.getElementById("provider")!.textContent !== "…", undefined, { timeout: 60_000 });
      assert.equal(await page.textContent("#provider"), "webgpu", logs.join("\n"));
      const jpeg = readFileSync(path.join(dir, "dog1_0.jpg"));
      const mine = await page.evaluate((b64) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        return (window as unknown as { nosepaw: PageApi }).nosepaw.embedBytes(bytes);
      }, jpeg.toString("base64"));
      const c = cosine(mine.vector, await serverVector(server, jpeg));
      console.log(`webgpu (SwiftShader): ${mine.ms.toFixed(0)} ms for one image, cosine to server ${c.toFixed(6)}`);
      assert.ok(c >= 0.999, `cosine ${c}`);
      assert.deepEqual(await cspViolations(), [], "WebGPU runs under the CSP");
      // ONNX Runtime Web writes its warnings (nodes placed on the CPU, and the like) through console.error unless told otherwise.
      assert.deepEqual(
        logs.filter((l) => l.startsWith("error:") || l.startsWith("pageerror:")),
        [],
        logs.join("\n"),
      );
    } finally {
      await browser.close();
      await server.stop();
    }
  });
});
