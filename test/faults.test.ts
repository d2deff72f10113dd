import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { gatewayClient, type GatewayClient } from "./support/grpc-client.js";
import { nosePhotos } from "./support/nose-photos.js";
import { postgresUnavailable, startPostgres, type TestPostgres } from "./support/postgres.js";
import { INSTALL, requireSystem } from "./support/require-system.js";
import { remoteRegistryEnv } from "./support/registry-env.js";
import { startS3, type TestS3 } from "./support/s3.js";
import { makeTestModel, startServer, type RunningServer } from "./support/server.js";
import { startTcpProxy, type TcpProxy } from "./support/tcp-proxy.js";

/**
 * The server between a slow or broken network and its dependencies: each
 * link (server -> s3rver, server -> PostgreSQL) runs through a TCP proxy that
 * adds latency, stalls (bytes accepted, none forwarded) or cuts connections,
 * while several registry calls are in flight. Every call must end within its
 * deadline with a success or a retryable in-band error, the connections the
 * fault left behind must be closed once the network is back, and the service
 * must be whole again within a few seconds.
 */

const STORAGE_TIMEOUT_MS = 1500;
const DB_TIMEOUT_MS = 1000;
const DB_CONNECT_TIMEOUT_MS = 1500;
const DB_POOL_MAX = 8;
/** Idle pooled connections close after this: at rest the database link must come down to none. */
const DB_IDLE_TIMEOUT_MS = 1000;
/** s3rver closes idle keep-alive connections after Node's default 5 s. */
const S3_KEEP_ALIVE_MS = 5000;
/** Every call is bounded: a gRPC deadline far above the timeouts above, so reaching it means a hang. */
const CALL_DEADLINE_MS = 12_000;
/** After a fault ends, full service again within this. */
const RECOVERY_MS = 5000;
const LATENCY_MS = 100;

const bytes = (b: Buffer) => ({ image_data: b, image_format: "jpeg" });
const RETRYABLE = new Set(["STORAGE_CONNECTION_ERROR", "SERVICE_UNAVAILABLE"]);

interface Outcome {
  method: string;
  ms: number;
  res?: any;
  err?: Error;
}

/** Polls `pred` until it holds; rejects after `ms` with what was last seen. */
async function waitFor(pred: () => boolean, ms: number, what: () => string): Promise<number> {
  const t0 = performance.now();
  while (!pred()) {
    if (performance.now() - t0 > ms) throw new Error(`not within ${ms} ms: ${what()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  return performance.now() - t0;
}

const pgMissing = requireSystem("PostgreSQL with pgvector", postgresUnavailable(), INSTALL.postgres);

describe("slow and failing dependencies under load (gRPC client, s3rver and PostgreSQL behind TCP proxies)", { skip: pgMissing }, () => {
  let s3: TestS3;
  let pg: TestPostgres;
  let s3Link: TcpProxy;
  let pgLink: TcpProxy;
  let server: RunningServer;
  let client: GatewayClient;
  let photo: (dog: number, shot: number) => Buffer;
  let petA = "";
  /** Open connections per link after the warm-up load: the pools' steady level under this load. */
  let steady: ReturnType<typeof counts>;
  const figures: Record<string, unknown> = {};

  const call = async (method: string, req: unknown): Promise<Outcome> => {
    const t0 = performance.now();
    try {
      const res = await client.call(method, req, CALL_DEADLINE_MS);
      return { method, ms: performance.now() - t0, res };
    } catch (err) {
      return { method, ms: performance.now() - t0, err: err as Error };
    }
  };
  const register = (dog: number) =>
    call("RegisterPet", { photos: [bytes(photo(dog, 0)), bytes(photo(dog, 1))], request_id: `faults-dog-${dog}` });
  /** Several calls at once, as the gateway sends them: two verifications, two searches, one registration. */
  const LOAD_CALLS = 5;
  const load = (newDog: number) =>
    Promise.all([
      call("VerifyPet", { pet_did: petA, photo: bytes(photo(0, 2)) }),
      call("VerifyPet", { pet_did: petA, photo: bytes(photo(0, 3)) }),
      call("IdentifyPet", { photo: bytes(photo(1, 2)), top_k: 3 }),
      call("IdentifyPet", { photo: bytes(photo(0, 2)), top_k: 3 }),
      register(newDog),
    ]);
  const summary = (outs: Outcome[]) =>
    outs
      .map((o) => `${o.method} ${Math.round(o.ms)} ms ${o.err ? `gRPC ${o.err.message}` : o.res.success ? "ok" : o.res.error_message}`)
      .join("; ");
  /** No call hung past its deadline, and each one either succeeded or failed retryably in-band. */
  const assertSettled = (outs: Outcome[]) => {
    for (const o of outs) {
      assert.equal(o.err, undefined, `${o.method} did not answer within ${CALL_DEADLINE_MS} ms: ${summary(outs)}`);
      if (o.res.success) continue;
      assert.ok(RETRYABLE.has(o.res.error_code), `${o.method}: ${o.res.error_code} ${o.res.error_message}`);
      assert.equal(o.res.retryable, true, o.res.error_message);
      assert.match(o.res.error_message, /^ML_500[35]: /);
    }
  };
  const assertAllSucceed = (outs: Outcome[]) => {
    assertSettled(outs);
    for (const o of outs) assert.equal(o.res.success, true, `${o.method}: ${o.res.error_message}`);
  };
  const counts = () => ({ s3: s3Link.open(), pg: pgLink.open() });
  /** Full service: a whole load succeeds; tried again until RECOVERY_MS has passed. */
  const recover = async (newDog: number) => {
    const t0 = performance.now();
    for (;;) {
      const outs = await load(newDog);
      if (outs.every((o) => o.res?.success)) return performance.now() - t0;
      assert.ok(performance.now() - t0 < RECOVERY_MS, `service not back within ${RECOVERY_MS} ms: ${summary(outs)}`);
      assertSettled(outs);
    }
  };
  /**
   * The connections a fault left behind are closed once the network is back:
   * each link at most one connection per call of a load (the calls reach each
   * dependency one operation at a time), whatever the fault opened meanwhile.
   * Whether any connection is held for good is checked at rest, at the end.
   */
  const assertNoLeak = async (label: string) => {
    const ms = await waitFor(
      () => {
        const c = counts();
        return Math.max(c.s3.upstream, c.s3.client, c.pg.upstream, c.pg.client) <= LOAD_CALLS;
      },
      RECOVERY_MS,
      () => `open connections ${JSON.stringify(counts())}, steady ${JSON.stringify(steady)}`,
    );
    figures[`${label}: connections settled after`] = `${Math.round(ms)} ms, ${JSON.stringify(counts())}`;
  };

  before(async () => {
    const model = makeTestModel(path.join(mkdtempSync(path.join(tmpdir(), "nosepaw-model-")), "pattern.onnx"), {
      kind: "pattern",
      card: true,
    });
    [s3, pg] = await Promise.all([startS3("faults"), startPostgres("faults")]);
    [s3Link, pgLink] = await Promise.all([startTcpProxy(Number(new URL(s3.config.endpoint).port)), startTcpProxy(pg.config.port)]);
    photo = nosePhotos(6);
    server = await startServer({
      MODEL_PATH: model,
      ...remoteRegistryEnv(s3, pg),
      NCP_ENDPOINT: `http://127.0.0.1:${s3Link.port}`,
      DB_PORT: String(pgLink.port),
      STORAGE_TIMEOUT_MS: String(STORAGE_TIMEOUT_MS),
      STORAGE_CONNECT_TIMEOUT_MS: "500",
      DB_TIMEOUT_MS: String(DB_TIMEOUT_MS),
      DB_CONNECT_TIMEOUT_MS: String(DB_CONNECT_TIMEOUT_MS),
      DB_POOL_MAX: String(DB_POOL_MAX),
      DB_IDLE_TIMEOUT_MS: String(DB_IDLE_TIMEOUT_MS),
      LOG_LEVEL: "info",
    });
    client = gatewayClient(server.address);
    await server.waitForLog((l) => l.msg === "database ready" && l.kind === "postgres");
    const reg = await register(0);
    assert.equal(reg.res?.success, true, reg.res?.error_message ?? reg.err?.message);
    petA = reg.res.pet_did;
    assertAllSucceed([await register(1)]);
    // Warm-up: the pools open what this load needs; that is the level to return to.
    assertAllSucceed(await load(2));
    assertAllSucceed(await load(2));
    steady = counts();
    figures.steady = steady;
    assert.ok(steady.pg.upstream <= LOAD_CALLS && steady.s3.upstream <= LOAD_CALLS, JSON.stringify(steady));
  });
  after(async () => {
    console.log(`# fault figures ${JSON.stringify(figures, null, 1)}`);
    client?.close();
    await server?.stop();
    await Promise.allSettled([s3Link?.close(), pgLink?.close()]);
    await Promise.allSettled([s3?.dispose(), pg?.dispose()]);
  });

  test(`with ${LATENCY_MS} ms added each way on both links, every call still succeeds`, async () => {
    s3Link.setLatency(LATENCY_MS);
    pgLink.setLatency(LATENCY_MS);
    try {
      const outs = await load(3);
      figures.latency = summary(outs);
      assertAllSucceed(outs);
    } finally {
      s3Link.setLatency(0);
      pgLink.setLatency(0);
    }
    await assertNoLeak("latency");
  });

  test("a stalled object store: every call ends within its deadline, successful or ML_5003 retryable; no connection leaks; full service within seconds", async () => {
    s3Link.stall();
    let outs: Outcome[];
    try {
      const pending = load(4);
      // The fault must meet requests in flight, not an idle link.
      await waitFor(
        () => s3Link.holding() > 0,
        CALL_DEADLINE_MS,
        () => "no request reached the object store",
      );
      outs = await pending;
      figures["storage stall: calls"] = summary(outs);
      figures["storage stall: open connections at the end of the stall"] = counts();
    } finally {
      s3Link.resume();
    }
    assertSettled(outs);
    assert.ok(
      outs.some((o) => o.res.error_code === "STORAGE_CONNECTION_ERROR"),
      `calls that wrote to the stalled store must have failed: ${summary(outs)}`,
    );
    await assertNoLeak("storage stall");
    figures["storage stall: full service after"] = `${Math.round(await recover(4))} ms`;
    // A registration refused during the stall completes when retried with its request id.
    const retried = await register(4);
    assertAllSucceed([retried]);
  });

  test("a stalled database: every call ends within its deadline, successful or ML_5005 retryable; no connection leaks; full service within seconds", async () => {
    pgLink.stall();
    let outs: Outcome[];
    try {
      const pending = load(5);
      await waitFor(
        () => pgLink.holding() > 0,
        CALL_DEADLINE_MS,
        () => "no request reached the database",
      );
      outs = await pending;
      figures["database stall: calls"] = summary(outs);
      figures["database stall: open connections at the end of the stall"] = counts();
    } finally {
      pgLink.resume();
    }
    assertSettled(outs);
    assert.ok(
      outs.some((o) => o.res.error_code === "SERVICE_UNAVAILABLE"),
      `calls that queried the stalled database must have failed: ${summary(outs)}`,
    );
    await assertNoLeak("database stall");
    figures["database stall: full service after"] = `${Math.round(await recover(5))} ms`;
    assertAllSucceed([await register(5)]);
  });

  test("connections cut mid-request on both links: calls succeed or fail retryably, and the next load succeeds", async () => {
    s3Link.stall();
    pgLink.stall();
    let outs: Outcome[];
    try {
      const pending = load(3);
      // Requests held on both links, then every connection reset under them.
      await waitFor(
        () => s3Link.holding() > 0 || pgLink.holding() > 0,
        CALL_DEADLINE_MS,
        () => "no request in flight",
      );
      s3Link.cut();
      pgLink.cut();
      s3Link.resume();
      pgLink.resume();
      outs = await pending;
    } finally {
      s3Link.resume();
      pgLink.resume();
    }
    figures["cut: calls"] = summary(outs);
    assertSettled(outs);
    await assertNoLeak("cut");
    figures["cut: full service after"] = `${Math.round(await recover(3))} ms`;
  });

  test("at rest after all the faults, no connection is held on either link", async () => {
    // Idle pooled connections close after DB_IDLE_TIMEOUT_MS and s3rver drops
    // idle keep-alive ones after 5 s; one still open after that is held by
    // someone: a checked-out client never released, or a socket never destroyed.
    const ms = await waitFor(
      () => {
        const c = counts();
        return c.s3.upstream + c.s3.client + c.pg.upstream + c.pg.client === 0;
      },
      S3_KEEP_ALIVE_MS + DB_IDLE_TIMEOUT_MS + 3000,
      () => `still open: ${JSON.stringify(counts())}`,
    );
    figures["at rest: every connection closed after"] = `${Math.round(ms)} ms`;
    figures["upstream connections opened in all"] = { s3: s3Link.opened(), pg: pgLink.opened() };
  });
});
