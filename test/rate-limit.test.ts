/**
 * Per-client rate limits. The token buckets are driven by a clock the test
 * moves, so trips and recoveries are counted in requests; the server is then
 * checked end to end with a refill so slow (one request per 20 s) that
 * nothing refills while the test runs.
 */
import assert from "node:assert/strict";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { createRateLimiter } from "../server/http/rate-limit.js";
import { gatewayClient } from "./support/grpc-client.js";
import { startServer, type RunningServer } from "./support/server.js";

describe("token buckets", () => {
  test("a burst is admitted, the next request is refused with a Retry-After hint, and each refilled token admits exactly one more", () => {
    let t = 0;
    const limiter = createRateLimiter({ rate: 2, burst: 3 }, { now: () => t });
    for (let i = 0; i < 3; i++) assert.deepEqual(limiter.take("a"), { ok: true }, `request ${i + 1} of the burst`);
    assert.deepEqual(limiter.take("a"), { ok: false, retryAfterS: 1 });
    t += 500; // one token at 2 per second
    assert.deepEqual(limiter.take("a"), { ok: true });
    assert.equal(limiter.take("a").ok, false);
    t += 250; // half a token: not yet
    assert.equal(limiter.take("a").ok, false);
    t += 250;
    assert.equal(limiter.take("a").ok, true);
    t += 60_000; // a long pause refills to the burst, never past it
    const admitted = Array.from({ length: 10 }, () => limiter.take("a").ok).filter(Boolean).length;
    assert.equal(admitted, 3);
  });

  test("clients have their own buckets", () => {
    const t = 0;
    const limiter = createRateLimiter({ rate: 1, burst: 2 }, { now: () => t });
    assert.equal(limiter.take("a").ok, true);
    assert.equal(limiter.take("a").ok, true);
    assert.equal(limiter.take("a").ok, false);
    assert.equal(limiter.take("b").ok, true, "b is not limited by a's requests");
    assert.equal(limiter.take("b").ok, true);
    assert.equal(limiter.take("b").ok, false);
  });

  test("Retry-After says when the next token is there, in whole seconds", () => {
    const t = 0;
    const slow = createRateLimiter({ rate: 0.1, burst: 1 }, { now: () => t });
    slow.take("a");
    assert.deepEqual(slow.take("a"), { ok: false, retryAfterS: 10 });
  });

  test("memory is bounded: idle buckets are dropped, and past the cap the least recently seen go first", () => {
    let t = 0;
    const limiter = createRateLimiter({ rate: 1, burst: 2 }, { maxClients: 100, now: () => t });
    for (let i = 0; i < 10_000; i++) limiter.take(`addr:${i}`);
    assert.ok(limiter.size() <= 100, `${limiter.size()} buckets`);
    // a client seen recently keeps its (empty) bucket while strangers come and go
    limiter.take("busy");
    limiter.take("busy");
    for (let i = 0; i < 50; i++) limiter.take(`stranger:${i}`);
    assert.equal(limiter.take("busy").ok, false, "the busy client's bucket was kept");
    // once every bucket has refilled (idle), the next newcomer sweeps them all away
    t += 3000;
    limiter.take("newcomer");
    assert.equal(limiter.size(), 1);
  });
});

const K1 = "k1-0123456789abcdef0123";
const K2 = "k2-fedcba9876543210fedc";
const HEALTH_CHECK = "/nose_embedder.NoseEmbedderService/HealthCheck";

describe("rate limits on the port", () => {
  let server: RunningServer;
  before(async () => {
    server = await startServer({
      MODEL_PATH: path.join(tmpdir(), "nosepaw-no-model.onnx"),
      API_KEYS: `${K1},${K2}`,
      BROWSER_RATE_LIMIT: "0.05",
      BROWSER_RATE_BURST: "3",
      GRPC_RATE_LIMIT: "0.05",
      GRPC_RATE_BURST: "2",
    });
    // the embedded database's migrations run on the server's main thread
    await server.waitForLog((l) => l.msg === "database ready");
  });
  after(async () => {
    await server?.stop();
  });

  const connect = (headers: Record<string, string>, contentType = "application/json") =>
    fetch(`http://${server.address}${HEALTH_CHECK}`, {
      method: "POST",
      headers: { "Content-Type": contentType, ...headers },
      body: contentType === "application/json" ? "{}" : new Uint8Array(5),
    });

  test("Connect and gRPC-Web share a key's bucket: the burst passes, then resource_exhausted (429, grpc-status 8) with Retry-After; another key is unaffected", async () => {
    const auth = { Authorization: `Bearer ${K1}` };
    for (let i = 0; i < 3; i++) {
      const ok = await connect(auth);
      assert.equal(ok.status, 200, `request ${i + 1}`);
      await ok.arrayBuffer();
    }
    const limited = await connect(auth);
    assert.equal(limited.status, 429);
    const body = await limited.json();
    assert.equal(body.code, "resource_exhausted");
    assert.match(body.message, /rate limit/);
    const retry = Number(limited.headers.get("retry-after"));
    assert.ok(Number.isInteger(retry) && retry >= 1 && retry <= 20, `Retry-After ${retry}`);

    const web = await connect({ "x-api-key": K1, "X-Grpc-Web": "1" }, "application/grpc-web+proto");
    assert.equal(web.status, 200);
    assert.equal(web.headers.get("grpc-status"), "8");
    assert.ok(Number(web.headers.get("retry-after")) >= 1);
    await web.arrayBuffer();

    const other = await connect({ Authorization: `Bearer ${K2}` });
    assert.equal(other.status, 200, "K2 has its own bucket");
    await other.arrayBuffer();
  });

  test("guessing keys is limited by address: wrong keys get 401 until the address's burst is spent, then 429", async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await connect({ Authorization: `Bearer guess-${i}-0123456789abcdef` });
      statuses.push(r.status);
      await r.arrayBuffer();
    }
    assert.deepEqual(statuses, [401, 401, 401, 429, 429]);
  });

  test("the gateway's gRPC has its own limit (GRPC_RATE_LIMIT): RESOURCE_EXHAUSTED (8) with retry-after metadata past it; health probes are never limited", async () => {
    const client = gatewayClient(server.address);
    const call = () =>
      new Promise<grpc.ServiceError | null>((resolve) =>
        client.raw.HealthCheck({ service: "" }, new grpc.Metadata(), { deadline: Date.now() + 30_000 }, (err) => resolve(err)),
      );
    const health = gatewayClient(server.address, "grpc/health/v1/health.proto", "grpc.health.v1.Health");
    try {
      assert.equal(await call(), null);
      assert.equal(await call(), null);
      const err = await call();
      assert.equal(err?.code, grpc.status.RESOURCE_EXHAUSTED);
      assert.match(err!.details, /rate limit/);
      assert.ok(Number(err!.metadata.get("retry-after")[0]) >= 1);
      for (let i = 0; i < 5; i++) assert.ok((await health.call("Check", { service: "" })).status);
    } finally {
      client.close();
      health.close();
    }
  });
});
