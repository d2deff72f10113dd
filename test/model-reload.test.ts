import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { gatewayClient, type GatewayClient } from "./support/grpc-client.js";
import { nosePhotos } from "./support/nose-photos.js";
import { makeTestModel, startServer, type RunningServer } from "./support/server.js";

/**
 * The model's life cycle in a real server process: a missing or corrupt file
 * at start-up leaves the server up and truthful (NOT_SERVING with the reason,
 * MODEL_NOT_LOADED on calls), a good file put in place is taken up on SIGHUP,
 * and a reload under load drops no call.
 */

const models = mkdtempSync(path.join(tmpdir(), "nosepaw-reload-"));
const good = makeTestModel(path.join(models, "pattern.onnx"), { kind: "pattern", card: true });
const card = JSON.parse(readFileSync(good.replace(/\.onnx$/, ".json"), "utf8"));
const bytes = (b: Buffer) => ({ image_data: b, image_format: "jpeg" });
const photo = nosePhotos(2);

/** Puts a model and its card at `file` as an operator should: written beside it, then renamed into place. */
function install(file: string, version: string) {
  copyFileSync(good, `${file}.tmp`);
  renameSync(`${file}.tmp`, file);
  writeFileSync(file.replace(/\.onnx$/, ".json"), JSON.stringify({ ...card, version }));
}

const serverPid = (s: RunningServer) => s.logs.find((l) => l.msg === "listening")!.pid as number;

interface Clients {
  seed: GatewayClient;
  health: GatewayClient;
  close(): void;
}
const clients = (s: RunningServer): Clients => {
  const seed = gatewayClient(s.address);
  const health = gatewayClient(s.address, "grpc/health/v1/health.proto", "grpc.health.v1.Health");
  return { seed, health, close: () => (seed.close(), health.close()) };
};

/** Polls the seed HealthCheck until it says SERVING (the model and the registry both ready). */
async function untilServing(c: Clients, timeoutMs = 30_000): Promise<any> {
  const deadline = Date.now() + timeoutMs;
  let last: any;
  while (Date.now() < deadline) {
    last = await c.seed.call("HealthCheck", { service: "" });
    if (last.status === "SERVING") return last;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`not SERVING within ${timeoutMs} ms: ${JSON.stringify(last)}`);
}

async function brokenAtStartThenFixed(broken: (file: string) => void, reason: RegExp) {
  const file = path.join(mkdtempSync(path.join(models, "m-")), "nose-embedder.onnx");
  broken(file);
  const server = await startServer({ MODEL_PATH: file });
  const c = clients(server);
  try {
    await server.waitForLog((l) => l.msg === "database ready");
    const h = await c.seed.call("HealthCheck", { service: "" });
    assert.equal(h.status, "NOT_SERVING");
    assert.equal(h.model_loaded, "false");
    assert.match(h.message, reason);
    assert.equal((await c.health.call("Check", { service: "" })).status, "NOT_SERVING");
    for (const [method, req] of [
      ["ExtractNoseVector", bytes(photo(0, 0))],
      ["RegisterPet", { photos: [bytes(photo(0, 0)), bytes(photo(0, 1))] }],
    ] as const) {
      const r = await c.seed.call(method, req);
      assert.equal(r.success, false, method);
      assert.equal(r.error_code, "MODEL_NOT_LOADED", r.error_message);
      assert.equal(r.retryable, true);
      assert.match(r.error_message, /^ML_5001: /);
      assert.match(r.error_message, reason);
    }

    install(file, "test-pattern-1");
    process.kill(serverPid(server), "SIGHUP");
    await server.waitForLog((l) => l.msg === "model loaded", 20_000);
    const serving = await untilServing(c);
    assert.equal(serving.model_loaded, "true");
    assert.match(serving.message, /version test-pattern-1/);
    assert.equal((await c.health.call("Check", { service: "" })).status, "SERVING");
    const r = await c.seed.call("ExtractNoseVector", bytes(photo(0, 0)));
    assert.equal(r.success, true, r.error_message);
    assert.equal(server.proc.exitCode, null, "the server stayed up throughout");
  } finally {
    c.close();
    await server.stop();
  }
}

describe("model life cycle: missing or corrupt at start-up, picked up on SIGHUP", () => {
  test("a missing model file: NOT_SERVING with the reason, ML_5001 on calls; SERVING after the file is put in place and SIGHUP", () =>
    brokenAtStartThenFixed(() => {}, /model file not found/));

  test("a corrupt model file: NOT_SERVING with the reason, ML_5001 on calls; SERVING after a good file and SIGHUP", () =>
    brokenAtStartThenFixed((file) => writeFileSync(file, "this is not an ONNX model"), /cannot load ONNX model/));
});

describe("model swap under load", () => {
  let server: RunningServer | undefined;
  after(async () => {
    await server?.stop();
  });

  test("calls in flight during SIGHUP all succeed; the old session is released after them; a new version re-embeds the registry", async () => {
    const file = path.join(mkdtempSync(path.join(models, "m-")), "nose-embedder.onnx");
    install(file, "test-pattern-1");
    server = await startServer({ MODEL_PATH: file });
    const c = clients(server);
    try {
      await untilServing(c);
      const reg = await c.seed.call("RegisterPet", { photos: [bytes(photo(0, 0)), bytes(photo(0, 1))] });
      assert.equal(reg.success, true, reg.error_message);
      const reg2 = await c.seed.call("RegisterPet", { photos: [bytes(photo(1, 0)), bytes(photo(1, 1))] });
      assert.equal(reg2.success, true, reg2.error_message);

      // Eight callers keep photos in every stage (decode, batch, model) until well after the swap.
      let swapped = false;
      let afterSwap = 0;
      const failures: string[] = [];
      const versions = new Set<string>();
      const caller = async (i: number) => {
        for (let n = 0; !swapped || afterSwap < 40; n++) {
          const r =
            n % 2 === 0
              ? await c.seed.call("ExtractNoseVector", bytes(photo(i % 2, 2 + (n % 2))))
              : await c.seed.call("VerifyPet", { pet_did: i % 2 ? reg2.pet_did : reg.pet_did, photo: bytes(photo(i % 2, 3)) });
          if (!r.success) failures.push(r.error_message);
          if (r.model_version) versions.add(r.model_version);
          if (swapped) afterSwap++;
        }
      };
      const load = Array.from({ length: 8 }, (_, i) => caller(i));
      await new Promise((r) => setTimeout(r, 300));
      install(file, "test-pattern-2");
      process.kill(serverPid(server), "SIGHUP");
      await server.waitForLog((l) => l.msg === "model loaded" && l.version === "test-pattern-2", 20_000);
      swapped = true;
      await Promise.all(load);

      assert.deepEqual(failures, [], "no call failed across the swap");
      assert.deepEqual([...versions].sort(), ["test-pattern-1", "test-pattern-2"], "calls ran on both models");
      const released = await server.waitForLog((l) => l.msg === "model released", 10_000);
      assert.equal(released.version, "test-pattern-1");
      const swept = await server.waitForLog((l) => l.msg === "embeddings re-embedded" && l.modelVersion === "test-pattern-2", 20_000);
      assert.equal(swept.count, 4, "two pets with two enrolled photos each");
      const h = await c.seed.call("HealthCheck", { service: "" });
      assert.equal(h.status, "SERVING");
      assert.match(h.message, /version test-pattern-2/);

      // A broken file put in place later is refused and the running model stays.
      writeFileSync(`${file}.tmp`, "garbage");
      renameSync(`${file}.tmp`, file);
      process.kill(serverPid(server), "SIGHUP");
      const refused = await server.waitForLog((l) => l.msg === "model reload failed; the running model stays", 20_000);
      assert.equal(refused.version, "test-pattern-2");
      const still = await c.seed.call("VerifyPet", { pet_did: reg.pet_did, photo: bytes(photo(0, 2)) });
      assert.equal(still.success, true, still.error_message);
      assert.equal(still.model_version, "test-pattern-2");
      assert.equal((await c.seed.call("HealthCheck", { service: "" })).status, "SERVING");
    } finally {
      c.close();
    }
  });
});
