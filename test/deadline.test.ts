/**
 * A client's deadline (grpc-timeout, as @grpc/grpc-js sends it) ends the
 * server's work for the call: a photo still waiting for a worker is dropped
 * without being decoded, no inference runs for it and a registration writes
 * nothing. The work is counted from the server's own per-call records
 * (`nosepaw:rpc`) and model runs (`nosepaw:batch`), not inferred from timing.
 */
import assert from "node:assert/strict";
import { subscribe, unsubscribe } from "node:diagnostics_channel";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { startApp, type App } from "../server/app.js";
import { loadConfig } from "../server/config.js";
import { createLogger } from "../server/log.js";
import type { BatchRecord } from "../server/model/micro-batcher.js";
import type { RpcRecord } from "../server/observe/request-context.js";
import { gatewayClient, type GatewayClient } from "./support/grpc-client.js";
import sharp from "sharp";
import { nosePhotos } from "./support/nose-photos.js";

let app: App;
let client: GatewayClient;
let dataDir: string;
let bigPhoto: Buffer;
let smallPhoto: Buffer;
const records = new Map<string, RpcRecord>();
let inferred = 0;
const onRpc = (m: unknown) => records.set((m as RpcRecord).id, m as RpcRecord);
const onBatch = (m: unknown) => (inferred += (m as BatchRecord).size);

before(async () => {
  subscribe("nosepaw:rpc", onRpc);
  subscribe("nosepaw:batch", onBatch);
  dataDir = mkdtempSync(path.join(tmpdir(), "nosepaw-deadline-"));
  // One worker and the exact path: a queue of 12 MP PNGs (about 80 ms each:
  // decode and the WebAssembly resize) keeps that worker busy for far longer
  // than the short deadlines below, so later calls must wait.
  const env = { GRPC_PORT: "0", GRPC_HOST: "127.0.0.1", DATA_DIR: dataDir, PREPROCESS_WORKERS: "1", EXACT_PREPROCESS: "true" };
  app = await startApp(loadConfig(env), createLogger("error"));
  client = gatewayClient(`127.0.0.1:${app.port}`);
  for (let i = 0; i < 300 && (await client.call("HealthCheck", { service: "" })).status !== "SERVING"; i++)
    await new Promise((r) => setTimeout(r, 100));
  // Flat, so it uploads in an instant, yet its exact 12 MP decode and resize
  // cost about what any photo's do.
  bigPhoto = await sharp({ create: { width: 4032, height: 3024, channels: 3, background: { r: 90, g: 60, b: 50 } } })
    .png()
    .toBuffer();
  smallPhoto = nosePhotos(1)(0, 0);
});

after(async () => {
  unsubscribe("nosepaw:rpc", onRpc);
  unsubscribe("nosepaw:batch", onBatch);
  client?.close();
  await app?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

/** A call with its own request id and deadline; resolves with the gRPC status code (0 = OK). */
function call(method: string, req: unknown, id: string, deadlineMs: number): Promise<number> {
  const meta = new grpc.Metadata();
  meta.set("x-request-id", id);
  return new Promise((resolve) =>
    client.raw[method](req, meta, { deadline: Date.now() + deadlineMs }, (err) => resolve(err ? err.code : grpc.status.OK)),
  );
}

async function recordsFor(ids: string[], boundMs = 120_000): Promise<RpcRecord[]> {
  const until = Date.now() + boundMs;
  while (ids.some((id) => !records.has(id))) {
    assert.ok(Date.now() < until, `the server never finished calls ${ids.filter((id) => !records.has(id))}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return ids.map((id) => records.get(id)!);
}

test("calls whose deadline passes while their photo waits are never decoded or embedded", async () => {
  const inferredBefore = inferred;
  // 20 x ~80 ms of work ahead of the short calls, well past their 300 ms.
  const long = Array.from({ length: 20 }, (_, i) => `long-${i}`);
  const short = Array.from({ length: 6 }, (_, i) => `short-${i}`);
  const longCalls = long.map((id) => call("ExtractNoseVector", { image_data: bigPhoto, image_format: "png" }, id, 120_000));
  // Queued behind the long ones (which then hold the only worker for over a second).
  await new Promise((r) => setTimeout(r, 200));
  const shortCodes = await Promise.all(short.map((id) => call("ExtractNoseVector", { image_data: smallPhoto }, id, 300)));
  assert.deepEqual(
    shortCodes,
    short.map(() => grpc.status.DEADLINE_EXCEEDED),
  );
  assert.deepEqual(
    await Promise.all(longCalls),
    long.map(() => grpc.status.OK),
  );

  for (const r of await recordsFor(short)) {
    assert.equal(r.result, "ML_5005", `${r.id} ended with ${r.result}`);
    assert.equal(r.stages.decode, undefined, `${r.id} was decoded after its deadline`);
    assert.equal(r.stages.inference, undefined, `${r.id} was embedded after its deadline`);
  }
  for (const r of await recordsFor(long)) {
    assert.equal(r.result, "OK");
    assert.ok(r.stages.decode! > 0 && r.stages.inference! > 0, `${r.id} did not do the work`);
  }
  assert.equal(inferred - inferredBefore, long.length, "the model ran for calls nobody waited for");
});

test("a registration past its deadline writes no object and no pet", async () => {
  const photo = nosePhotos(1);
  const blockers = Array.from({ length: 16 }, (_, i) => call("ExtractNoseVector", { image_data: bigPhoto }, `block-${i}`, 120_000));
  await new Promise((r) => setTimeout(r, 200));
  const code = await call(
    "RegisterPet",
    { photos: [{ image_data: photo(0, 0) }, { image_data: photo(0, 1) }], request_id: "late-registration" },
    "late-registration",
    300,
  );
  assert.equal(code, grpc.status.DEADLINE_EXCEEDED);
  await Promise.all(blockers);
  const [r] = await recordsFor(["late-registration"]);
  assert.equal(r.result, "ML_5005");
  assert.equal(r.stages.inference, undefined);
  const objects = path.join(dataDir, "objects");
  const written = existsSync(objects)
    ? readdirSync(objects, { recursive: true }).filter((f) => String(f).endsWith(".jpg") || String(f).endsWith(".npy"))
    : [];
  assert.deepEqual(written, []);
  // The same registration with time to spare succeeds: nothing half made stands in its way.
  const ok = await client.call(
    "RegisterPet",
    { photos: [{ image_data: photo(0, 0) }, { image_data: photo(0, 1) }], request_id: "late-registration" },
    120_000,
  );
  assert.equal(ok.success, true, ok.error_message);
});
