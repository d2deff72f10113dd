import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { parsePointer, POINTER_KEY, PointerError, releaseKeys, type ReleaseKeys } from "../server/learn/model-release.js";
import { createFolderStore } from "../server/storage/folder-store.js";
import { createS3Store } from "../server/storage/s3-store.js";
import { startS3, type TestS3 } from "./support/s3.js";
import { gatewayClient, type GatewayClient } from "./support/grpc-client.js";
import { nosePhotos } from "./support/nose-photos.js";
import { ROOT, startServer, type RunningServer } from "./support/server.js";

/**
 * A replica adopts promoted models from a release folder (MODEL_RELEASES):
 * the bundled model published under another version is taken up within a
 * few polls while calls keep succeeding, the pointer going back (a rollback)
 * is taken up the same way and the registry serves on it, and a corrupt
 * release is refused while the running model keeps serving.
 */

const MODEL = readFileSync(path.join(ROOT, "models/nose-embedder.onnx"));
const CARD = JSON.parse(readFileSync(path.join(ROOT, "models/nose-embedder.json"), "utf8")) as Record<string, unknown>;
const SHIPPED = CARD.version as string;
const bytes = (b: Buffer) => ({ image_data: b, image_format: "jpeg" });
const json = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));

test("the release pointer is parsed strictly", () => {
  const k = releaseKeys("2026.12.01-learn-1");
  assert.deepEqual(k, {
    version: "2026.12.01-learn-1",
    model_key: "models/nose-embedder/2026.12.01-learn-1/model.onnx",
    card_key: "models/nose-embedder/2026.12.01-learn-1/card.json",
  });
  const good = { ...k, promoted_at: "2026-12-01T10:00:00.000Z", previous: releaseKeys("v0") };
  assert.deepEqual(parsePointer(json(good)), good);
  assert.deepEqual(parsePointer(json({ ...good, previous: null })), { ...good, previous: null });
  for (const [bad, why] of [
    [new TextEncoder().encode("{"), /not JSON/],
    [json([]), /JSON object/],
    [json({ ...good, version: "../x" }), /version/],
    [json({ ...good, model_key: "elsewhere/model.onnx" }), /model_key must be/],
    [json({ ...good, promoted_at: "yesterday" }), /promoted_at/],
    [json({ ...k, promoted_at: good.promoted_at }), /previous is required/],
    [json({ ...good, previous: { version: "v0" } }), /previous.model_key/],
    [json({ ...good, extra: 1 }), /unknown field/],
  ] as const) {
    const r = parsePointer(bad);
    assert.ok(r instanceof PointerError, JSON.stringify(r));
    assert.match(r.message, why);
  }
  assert.throws(() => releaseKeys("a/b"), PointerError);
});

describe("adopting promoted models from MODEL_RELEASES", () => {
  const work = mkdtempSync(path.join(tmpdir(), "nosepaw-releases-"));
  const releases = createFolderStore({ root: path.join(work, "releases") });
  const photo = nosePhotos(1);
  let server: RunningServer | undefined;
  let client: GatewayClient | undefined;
  after(async () => {
    client?.close();
    await server?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  /** Writes a release as promotion does: model, card, then the pointer. */
  async function publish(
    version: string,
    opts: { model?: Uint8Array; card?: Record<string, unknown>; previous?: ReleaseKeys | null } = {},
  ): Promise<void> {
    const keys = releaseKeys(version);
    await releases.put(keys.model_key, opts.model ?? MODEL);
    await releases.put(keys.card_key, json(opts.card ?? { ...CARD, version }));
    await releases.put(POINTER_KEY, json({ ...keys, promoted_at: new Date().toISOString(), previous: opts.previous ?? null }));
  }

  async function serving(version: string, timeoutMs = 30_000) {
    const deadline = Date.now() + timeoutMs;
    let last: any;
    while (Date.now() < deadline) {
      last = await client!.call("HealthCheck", { service: "" });
      if (last.status === "SERVING" && last.message.includes(`version ${version}`)) return last;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`not SERVING version ${version} within ${timeoutMs} ms: ${JSON.stringify(last)}`);
  }

  // Each step refuses its own version, so a wait cannot be answered by an earlier step's line.
  const refusedLog = (version: string | undefined) =>
    server!.waitForLog((l) => l.msg === "model release refused; the running model stays" && l.version === version, 20_000);

  test("a published release is adopted without failing a call; a rollback returns; corrupt releases are refused", async () => {
    server = await startServer({
      // The rollback below publishes the shipped fp32 file as a release, which runs as published: start on that file
      // too (the default would run its int8 variant, "+int8"), so that "back to the shipped version" is one version.
      MODEL_PRECISION: "fp32",
      MODEL_RELEASES: path.join(work, "releases"),
      MODEL_RELEASE_POLL_SECONDS: "0.3",
      MODEL_RELEASE_CACHE_DIR: path.join(work, "cache"),
    });
    client = gatewayClient(server.address);
    await serving(SHIPPED);

    // 1. A promotion, under load: two callers keep embedding across the switch.
    let adopted = false;
    let afterSwitch = 0;
    const failures: string[] = [];
    const caller = async () => {
      while (!adopted || afterSwitch < 10) {
        const r = await client!.call("ExtractNoseVector", bytes(photo(0, 0)));
        if (!r.success) failures.push(r.error_message);
        if (adopted) afterSwitch++;
      }
    };
    const load = [caller(), caller()];
    const t0 = Date.now();
    await publish("learn-1");
    const took = await server.waitForLog((l) => l.msg === "model release adopted" && l.version === "learn-1", 30_000);
    adopted = true;
    await Promise.all(load);
    assert.equal(took.previousVersion, SHIPPED);
    assert.deepEqual(failures, [], "no call failed across the switch");
    const h = await serving("learn-1");
    assert.equal(h.model_loaded, "true");
    console.log(`adopted learn-1 ${Date.now() - t0} ms after publishing`);
    const identified = await client.call("IdentifyPet", { photo: bytes(photo(0, 1)) });
    assert.equal(identified.success, true, identified.error_message);

    // 2. Rollback: the pointer goes back to the shipped version (published as a release too).
    await publish(SHIPPED, { card: CARD, previous: releaseKeys("learn-1") });
    await server.waitForLog((l) => l.msg === "model release adopted" && l.version === SHIPPED, 30_000);
    await serving(SHIPPED);
    // The registry moved back with it: 1:N search is served, not refused as superseded.
    const back = await client.call("IdentifyPet", { photo: bytes(photo(0, 1)) });
    assert.equal(back.success, true, back.error_message);

    // 3. Corrupt releases: each refused once, the shipped model keeps serving.
    await publish("learn-truncated", { model: MODEL.subarray(0, MODEL.length >> 1) });
    assert.match((await refusedLog("learn-truncated")).reason as string, /bytes, the card says/);
    const { export: _size, ...cardWithoutSize } = CARD;
    await publish("learn-torn", { model: MODEL.subarray(0, MODEL.length >> 1), card: { ...cardWithoutSize, version: "learn-torn" } });
    assert.match((await refusedLog("learn-torn")).reason as string, /ONNX/i);
    await publish("learn-3", { card: { ...CARD, version: "learn-4" } });
    assert.match((await refusedLog("learn-3")).reason as string, /card names version "learn-4"/);
    await releases.put(POINTER_KEY, json({ version: "learn-5" }));
    assert.match((await refusedLog(undefined)).reason as string, /model_key/);

    const still = await serving(SHIPPED);
    assert.equal(still.model_loaded, "true");
    const r = await client.call("ExtractNoseVector", bytes(photo(0, 0)));
    assert.equal(r.success, true, r.error_message);
    assert.equal(
      server.logs.filter((l) => l.msg === "model release refused; the running model stays" && l.version === "learn-3").length,
      1,
      "a refused release is reported once, not at every poll",
    );
    assert.equal(server.proc.exitCode, null);
  });
});

describe("MODEL_RELEASES=store: releases published in the S3-protocol object store", () => {
  let s3: TestS3 | undefined;
  let server: RunningServer | undefined;
  let client: GatewayClient | undefined;
  after(async () => {
    client?.close();
    await server?.stop();
    await s3?.dispose();
  });

  test("a release put in the bucket is adopted and reported by HealthCheck", async () => {
    s3 = await startS3("nose-bucket");
    const bucket = createS3Store(s3.config);
    server = await startServer({
      NCP_ENDPOINT: s3.config.endpoint,
      NCP_ACCESS_KEY: s3.config.accessKeyId,
      NCP_SECRET_KEY: s3.config.secretAccessKey,
      NCP_BUCKET_NAME: s3.config.bucket,
      MODEL_RELEASES: "store",
      MODEL_RELEASE_POLL_SECONDS: "0.3",
    });
    client = gatewayClient(server.address);
    const keys = releaseKeys("learn-s3");
    await bucket.put(keys.model_key, MODEL);
    await bucket.put(keys.card_key, json({ ...CARD, version: "learn-s3" }));
    await bucket.put(POINTER_KEY, json({ ...keys, promoted_at: new Date().toISOString(), previous: null }));
    const adopted = await server.waitForLog((l) => l.msg === "model release adopted" && l.version === "learn-s3", 30_000);
    assert.equal(adopted.source, "object store");
    const deadline = Date.now() + 20_000;
    let h: any;
    do {
      h = await client.call("HealthCheck", { service: "" });
      if (h.status === "SERVING" && h.message.includes("version learn-s3")) break;
      await new Promise((r) => setTimeout(r, 100));
    } while (Date.now() < deadline);
    assert.equal(h.status, "SERVING", JSON.stringify(h));
    assert.match(h.message, /version learn-s3/);
  });
});
