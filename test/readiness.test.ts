import type { ClientReadableStream } from "@grpc/grpc-js";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import pg from "pg";
import { gatewayClient, type GatewayClient } from "./support/grpc-client.js";
import { nosePhotos } from "./support/nose-photos.js";
import { postgresUnavailable, startPostgres, type TestPostgres } from "./support/postgres.js";
import { INSTALL, requireSystem } from "./support/require-system.js";
import { makeTestModel, startServer } from "./support/server.js";

/**
 * SERVING means every RPC can be served: HealthCheck is polled as tightly as
 * possible from the moment the server listens, and the moment it says
 * SERVING every RPC is called at once; none may answer with a server-side
 * (ML_5xxx) error. Repeated on fresh PGlite folders and fresh PostgreSQL
 * databases, where the model is often ready before the registry.
 */

const RUNS = 3;
const MODEL = makeTestModel(path.join(mkdtempSync(path.join(tmpdir(), "nosepaw-model-")), "pattern.onnx"), { kind: "pattern", card: true });
const photo = nosePhotos(2);
const bytes = (b: Buffer) => ({ image_data: b, image_format: "jpeg" });
const UNKNOWN = `did:ethr:besu:0x${"ab".repeat(20)}`;

interface Clients {
  seed: GatewayClient;
  health: GatewayClient;
  close(): void;
}
const connect = (address: string): Clients => {
  const seed = gatewayClient(address);
  const health = gatewayClient(address, "grpc/health/v1/health.proto", "grpc.health.v1.Health");
  return { seed, health, close: () => (seed.close(), health.close()) };
};

/** Answers that say the server could not serve the call (ML_5001..ML_5005), as opposed to a verdict on the request. */
const unserved = (method: string, r: any) => (r.success === false && r.retryable ? [`${method}: ${r.error_message}`] : []);

async function startPollAndCallEverything(env: Record<string, string>) {
  const server = await startServer({ ...env, MODEL_PATH: MODEL }, "listening");
  const c = connect(server.address);
  try {
    const seen = new Set<string>();
    const deadline = Date.now() + 30_000;
    let h: any;
    for (;;) {
      h = await c.seed.call("HealthCheck", { service: "" });
      seen.add(h.status);
      if (h.status === "SERVING") break;
      assert.ok(Date.now() < deadline, `not SERVING within 30 s: ${h.message}`);
    }
    const calls: Array<[string, Promise<any>]> = [
      ["health.Check", c.health.call("Check", { service: "" })],
      ["ExtractNoseVector", c.seed.call("ExtractNoseVector", bytes(photo(0, 0)))],
      ["RegisterPet", c.seed.call("RegisterPet", { photos: [bytes(photo(0, 0)), bytes(photo(0, 1))] })],
      ["IdentifyPet", c.seed.call("IdentifyPet", { photo: bytes(photo(1, 0)) })],
      ["VerifyPet", c.seed.call("VerifyPet", { pet_did: UNKNOWN, photo: bytes(photo(1, 0)) })],
      [
        "CompareWithStoredImage",
        c.seed.call("CompareWithStoredImage", { pet_did: UNKNOWN, image_key: `nose-print-photo/${UNKNOWN}/verify_1.jpg` }),
      ],
      [
        "ApproveTransfer",
        c.seed.call("ApproveTransfer", { pet_did: UNKNOWN, photo: bytes(photo(1, 0)), from_guardian: "0xa", to_guardian: "0xb" }),
      ],
      ["SetTrainingConsent", c.seed.call("SetTrainingConsent", { pet_did: UNKNOWN, training_consent: true })],
    ];
    const answers = await Promise.all(calls.map(([, p]) => p));
    const problems = calls.flatMap(([method], i) => unserved(method, answers[i]));
    assert.deepEqual(problems, [], `right after SERVING (${h.message}), seen before: ${[...seen]}`);
    assert.equal(answers[0].status, "SERVING");
    assert.equal(answers[1].success, true);
    assert.equal(answers[2].success, true, answers[2].error_message);
    assert.equal(answers[4].error_code, "VECTOR_NOT_FOUND", "a served refusal, not an outage");
    const verified = await c.seed.call("VerifyPet", { pet_did: answers[2].pet_did, photo: bytes(photo(0, 2)) });
    assert.equal(verified.verdict, "SAME", verified.error_message);
    return { seen };
  } finally {
    c.close();
    await server.stop();
  }
}

describe("readiness tells the truth from the first moment", () => {
  for (let run = 1; run <= RUNS; run++) {
    test(`PGlite, fresh data folder, run ${run}: every RPC is served right after HealthCheck says SERVING`, async () => {
      // A folder that does not exist yet: PGlite creates and initialises it, slower than the model loads.
      await startPollAndCallEverything({ DATA_DIR: path.join(mkdtempSync(path.join(tmpdir(), "nosepaw-ready-")), "data") });
    });
  }
});

const pgMissing = requireSystem("PostgreSQL with pgvector", postgresUnavailable(), INSTALL.postgres);

describe("readiness on PostgreSQL", { skip: pgMissing }, () => {
  let pgServer: TestPostgres;
  let admin: pg.Client;
  before(async () => {
    pgServer = await startPostgres("ready_admin");
    admin = new pg.Client({ ...pgServer.config, user: pgServer.config.username });
    admin.on("error", () => {});
    await admin.connect();
  });
  after(async () => {
    await admin?.end();
    await pgServer?.dispose();
  });
  const env = (database: string) => ({
    DB_HOST: pgServer.config.host,
    DB_PORT: String(pgServer.config.port),
    DB_USERNAME: pgServer.config.username,
    DB_PASSWORD: pgServer.config.password,
    DB_DATABASE: database,
  });

  for (let run = 1; run <= RUNS; run++) {
    test(`fresh database, run ${run}: every RPC is served right after HealthCheck says SERVING`, async () => {
      await admin.query(`CREATE DATABASE ready_${run}`);
      await startPollAndCallEverything(env(`ready_${run}`));
    });
  }

  test("HealthCheck and grpc.health.v1 (Check and Watch) report the database as it is now, not as at start-up", async () => {
    await admin.query("CREATE DATABASE ready_outage");
    const server = await startServer({ ...env("ready_outage"), MODEL_PATH: MODEL });
    const c = connect(server.address);
    const watched: string[] = [];
    const watch = (c.health.raw as unknown as { Watch(req: unknown): ClientReadableStream<{ status: string }> }).Watch({ service: "" });
    watch.on("data", (m) => watched.push(m.status));
    watch.on("error", () => {});
    const until = async (want: string, timeoutMs = 10_000) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const h = await c.seed.call("HealthCheck", { service: "" });
        if (h.status === want) return h;
        assert.ok(Date.now() < deadline, `HealthCheck not ${want} within ${timeoutMs} ms: ${h.message}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    try {
      await until("SERVING", 30_000);
      await pgServer.stop();
      const down = await until("NOT_SERVING", 5000);
      assert.match(down.message, /registry database not answering/);
      assert.equal((await c.health.call("Check", { service: "" })).status, "NOT_SERVING");
      await pgServer.start();
      await until("SERVING");
      assert.equal((await c.health.call("Check", { service: "" })).status, "SERVING");
      const deadline = Date.now() + 5000;
      while (watched.at(-1) !== "SERVING" && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(watched.slice(-3), ["SERVING", "NOT_SERVING", "SERVING"], "Watch followed the outage");
    } finally {
      watch.cancel();
      c.close();
      await server.stop();
      // The admin connection was cut by the stop: open a fresh one for the cleanup.
      await admin.end().catch(() => {});
      admin = new pg.Client({ ...pgServer.config, user: pgServer.config.username });
      admin.on("error", () => {});
      await admin.connect();
    }
  });
});
