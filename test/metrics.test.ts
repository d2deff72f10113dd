import assert from "node:assert/strict";
import { readFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { gatewayClient, type GatewayClient } from "./support/grpc-client.js";
import { nosePhotos } from "./support/nose-photos.js";
import { postgresUnavailable, startPostgres, type TestPostgres } from "./support/postgres.js";
import { INSTALL, requireSystem } from "./support/require-system.js";
import { remoteRegistryEnv } from "./support/registry-env.js";
import { startS3, type TestS3 } from "./support/s3.js";
import { makeTestModel, startServer, type RunningServer } from "./support/server.js";

/**
 * /metrics as Prometheus scrapes it, against a server started as `npm start`
 * starts it, on S3 and PostgreSQL so storage and database failures can be
 * caused for real. Calls are made one at a time, so every counter's increment
 * between two scrapes is known exactly.
 */

type Sample = { name: string; labels: Record<string, string>; value: number };

/** The exposition text's samples (comments skipped). */
function parse(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `unparsable exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

class Scrape {
  constructor(
    readonly samples: Sample[],
    readonly text: string,
  ) {}
  /** The sample with exactly these labels; a missing one fails the test (a metric renamed or never exported is not 0). */
  get(name: string, labels: Record<string, string> = {}): number {
    const hit = this.find(name, labels);
    assert.ok(
      hit,
      `no sample ${name}${JSON.stringify(labels)} on /metrics; ${name} samples: ${JSON.stringify(this.samples.filter((s) => s.name === name))}`,
    );
    return hit.value;
  }
  /**
   * Before an action: the sample, or 0 where a labelled counter has no series
   * yet because it was never incremented. The metric itself must be declared
   * (`# TYPE`), so a name that is not exported at all still fails.
   */
  before(name: string, labels: Record<string, string> = {}): number {
    this.assertDeclared(name);
    return this.find(name, labels)?.value ?? 0;
  }
  /** All samples of a declared metric added up, whatever their labels. */
  sum(name: string): number {
    this.assertDeclared(name);
    return this.samples.filter((s) => s.name === name).reduce((t, s) => t + s.value, 0);
  }
  /** The sample with exactly these labels, or undefined: to assert that a series does not exist. */
  sample(name: string, labels: Record<string, string> = {}): Sample | undefined {
    this.assertDeclared(name);
    return this.find(name, labels);
  }
  private find(name: string, labels: Record<string, string>): Sample | undefined {
    const keys = Object.keys(labels);
    return this.samples.find(
      (s) => s.name === name && Object.keys(s.labels).length === keys.length && keys.every((k) => s.labels[k] === labels[k]),
    );
  }
  private assertDeclared(name: string): void {
    const family = name.replace(/_(bucket|sum|count)$/, "");
    assert.ok(new RegExp(`^# TYPE (${name}|${family}) `, "m").test(this.text), `metric ${name} is not declared on /metrics`);
  }
  has(name: string, labels: Record<string, string> = {}): boolean {
    return this.samples.some((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  }
}

const skip = requireSystem("PostgreSQL with pgvector", postgresUnavailable(), INSTALL.postgres);

describe("Prometheus metrics at /metrics", { skip }, () => {
  const modelPath = makeTestModel(path.join(mkdtempSync(path.join(tmpdir(), "nosepaw-model-")), "pattern.onnx"), {
    kind: "pattern",
    card: true,
  });
  const version = JSON.parse(readFileSync(modelPath.replace(/\.onnx$/, ".json"), "utf8")).version as string;
  const photo = nosePhotos(2);
  const jpeg = (b: Buffer) => ({ image_data: b, image_format: "jpeg" });
  let s3: TestS3;
  let pg: TestPostgres;
  let server: RunningServer;
  let client: GatewayClient;
  let health: GatewayClient;
  let petDid = "";

  const scrape = async (): Promise<Scrape> => {
    const res = await fetch(`http://${server.address}/metrics`);
    assert.equal(res.status, 200);
    const text = await res.text();
    return new Scrape(parse(text), text);
  };
  const delta = (a: Scrape, b: Scrape, name: string, labels: Record<string, string> = {}) => b.get(name, labels) - a.before(name, labels);
  const requests = (method: string, result: string, grpc_code = "OK") => ({ method, result, grpc_code });

  before(async () => {
    [s3, pg] = await Promise.all([startS3(), startPostgres()]);
    server = await startServer({
      ...remoteRegistryEnv(s3, pg),
      MODEL_PATH: modelPath,
      // Every scrape counts the registry afresh, so a registration shows at once.
      METRICS_REGISTRY_CACHE_MS: "0",
      STORAGE_MAX_ATTEMPTS: "1",
      STORAGE_CONNECT_TIMEOUT_MS: "500",
      DB_CONNECT_TIMEOUT_MS: "1000",
    });
    await server.waitForLog((l) => l.msg === "database ready");
    client = gatewayClient(server.address);
    health = gatewayClient(server.address, "grpc/health/v1/health.proto", "grpc.health.v1.Health");
  });
  after(async () => {
    client?.close();
    health?.close();
    await server?.stop();
    await Promise.all([s3?.dispose(), pg?.dispose()]);
  });

  test("GET /metrics answers in the Prometheus text format with process metrics, the model's state and the registry's counts; tracing is off by default", async () => {
    const res = await fetch(`http://${server.address}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
    const m = new Scrape(parse(await res.text()), "");
    assert.ok(m.has("process_cpu_user_seconds_total"), "prom-client's default process metrics");
    assert.ok(m.has("nodejs_eventloop_lag_seconds"));
    assert.equal(m.get("nosepaw_model_state", { state: "ready", version }), 1);
    assert.equal(m.get("nosepaw_model_state", { state: "loading", version }), 0);
    assert.equal(m.get("nosepaw_model_state", { state: "failed", version }), 0);
    assert.ok(m.has("nosepaw_registry_pets", { status: "active" }));
    assert.equal(m.get("nosepaw_registry_pets", { status: "active" }), 0);
    assert.equal(m.get("nosepaw_registry_embeddings", { model_version: version }), 0);
    assert.equal(m.get("nosepaw_registry_count_error"), 0);
    assert.equal(m.get("nosepaw_preprocess_queue_depth"), 0);
    assert.ok(m.get("nosepaw_preprocess_workers", { state: "idle" }) >= 1);
    assert.equal(m.get("nosepaw_preprocess_refused_total"), 0);
    assert.equal((await fetch(`http://${server.address}/metrics`, { method: "POST" })).status, 405);
    const listening = server.logs.find((l) => l.msg === "listening")!;
    assert.equal(listening.metrics, "/metrics");
    assert.equal(listening.tracing, false);
  });

  test("three photos embedded one after another: +3 OK requests, three latency observations, +3 per photo stage, three model runs of batch size 1", async () => {
    const a = await scrape();
    for (let shot = 0; shot < 3; shot++) {
      const r = await client.call("ExtractNoseVector", jpeg(photo(0, shot)));
      assert.equal(r.success, true, r.error_message);
    }
    const b = await scrape();
    assert.equal(delta(a, b, "nosepaw_rpc_requests_total", requests("ExtractNoseVector", "OK")), 3);
    assert.equal(delta(a, b, "nosepaw_rpc_duration_seconds_count", { method: "ExtractNoseVector" }), 3);
    assert.ok(delta(a, b, "nosepaw_rpc_duration_seconds_sum", { method: "ExtractNoseVector" }) > 0);
    for (const stage of ["queue", "handoff", "decode", "resize", "tensor", "batch_wait", "inference"]) {
      assert.equal(delta(a, b, "nosepaw_rpc_stage_duration_seconds_count", { method: "ExtractNoseVector", stage }), 3, stage);
    }
    // Nothing was stored or queried for a bare embedding.
    assert.equal(
      b.sample("nosepaw_rpc_stage_duration_seconds_count", { method: "ExtractNoseVector", stage: "storage" }),
      undefined,
      "ExtractNoseVector has no storage stage",
    );
    assert.equal(delta(a, b, "nosepaw_inference_batch_size_count"), 3);
    assert.equal(delta(a, b, "nosepaw_inference_batch_size_sum"), 3);
    assert.equal(delta(a, b, "nosepaw_inference_batch_size_bucket", { le: "1" }), 3);
    assert.equal(delta(a, b, "nosepaw_inference_duration_seconds_count"), 3);
  });

  test("in-band failures count under their ML code with gRPC status OK, a transport failure under its gRPC code; a photo refused before decoding books no decode time", async () => {
    const a = await scrape();
    const notAnImage = await client.call("ExtractNoseVector", jpeg(Buffer.from("definitely not a photo")));
    assert.equal(notAnImage.error_code, "INVALID_IMAGE_FORMAT");
    const empty = await client.call("ExtractNoseVector", jpeg(Buffer.alloc(0)));
    assert.equal(empty.error_code, "INVALID_REQUEST");
    const unknownPet = await client.call("VerifyPet", { pet_did: `did:ethr:besu:0x${"ab".repeat(20)}`, photo: jpeg(photo(1, 0)) });
    assert.equal(unknownPet.error_code, "VECTOR_NOT_FOUND");
    await assert.rejects(health.call("Check", { service: "no.such.Service" }), (e: grpc.ServiceError) => e.code === grpc.status.NOT_FOUND);
    const b = await scrape();
    assert.equal(delta(a, b, "nosepaw_rpc_requests_total", requests("ExtractNoseVector", "ML_4003")), 1);
    assert.equal(delta(a, b, "nosepaw_rpc_requests_total", requests("ExtractNoseVector", "ML_4006")), 1);
    assert.equal(delta(a, b, "nosepaw_rpc_requests_total", requests("ExtractNoseVector", "OK")), 0);
    assert.equal(delta(a, b, "nosepaw_rpc_requests_total", requests("VerifyPet", "ML_4004")), 1);
    assert.equal(delta(a, b, "nosepaw_rpc_requests_total", requests("Check", "NotFound", "NOT_FOUND")), 1);
    assert.equal(delta(a, b, "nosepaw_rpc_duration_seconds_count", { method: "ExtractNoseVector" }), 2);
    assert.equal(delta(a, b, "nosepaw_rpc_stage_duration_seconds_count", { method: "ExtractNoseVector", stage: "decode" }), 0);
    // The unknown pet was looked up in the database before anything else.
    assert.equal(delta(a, b, "nosepaw_rpc_stage_duration_seconds_count", { method: "VerifyPet", stage: "database" }), 1);
    assert.equal(b.sum("nosepaw_storage_errors_total") - a.sum("nosepaw_storage_errors_total"), 0);
    assert.equal(
      b.sum("nosepaw_database_errors_total") - a.sum("nosepaw_database_errors_total"),
      0,
      "an unknown pet is not a database error",
    );
  });

  test("a registration and a verification book storage and database time, and the registry counts show the pet and its embeddings", async () => {
    const a = await scrape();
    const reg = await client.call("RegisterPet", { photos: [jpeg(photo(0, 0)), jpeg(photo(0, 1))], request_id: "metrics-reg-1" });
    assert.equal(reg.success, true, reg.error_message);
    petDid = reg.pet_did;
    const ver = await client.call("VerifyPet", { pet_did: petDid, photo: jpeg(photo(0, 2)) });
    assert.equal(ver.success, true, ver.error_message);
    const b = await scrape();
    assert.equal(delta(a, b, "nosepaw_rpc_requests_total", requests("RegisterPet", "OK")), 1);
    assert.equal(delta(a, b, "nosepaw_rpc_requests_total", requests("VerifyPet", "OK")), 1);
    for (const method of ["RegisterPet", "VerifyPet"]) {
      for (const stage of ["storage", "database", "decode", "inference"]) {
        assert.equal(delta(a, b, "nosepaw_rpc_stage_duration_seconds_count", { method, stage }), 1, `${method} ${stage}`);
        assert.ok(delta(a, b, "nosepaw_rpc_stage_duration_seconds_sum", { method, stage }) > 0, `${method} ${stage}`);
      }
    }
    // Two photos embedded for the registration, one for the verification.
    assert.equal(delta(a, b, "nosepaw_inference_batch_size_sum"), 3);
    assert.equal(b.get("nosepaw_registry_pets", { status: "active" }), 1);
    assert.equal(b.get("nosepaw_registry_embeddings", { model_version: version }), 2);
    assert.equal(b.get("nosepaw_registry_count_error"), 0);
  });

  test("request ids: the caller's x-request-id comes back in the response headers and is in every log line written during the call; a new one is made otherwise", async () => {
    const id = `metrics-rid-${process.pid}`;
    const meta = new grpc.Metadata();
    meta.set("x-request-id", id);
    const headers = await new Promise<grpc.Metadata>((resolve, reject) => {
      let got: grpc.Metadata | undefined;
      const call = client.raw.ExtractNoseVector(
        jpeg(Buffer.from("still not a photo")),
        meta,
        { deadline: Date.now() + 10_000 },
        (err, res) => (err ? reject(err) : res.success === false ? resolve(got!) : reject(new Error("expected an in-band failure"))),
      ) as unknown as grpc.ClientUnaryCall;
      call.on("metadata", (m: grpc.Metadata) => (got = m));
    });
    assert.deepEqual(headers.get("x-request-id"), [id]);
    // inBand's own line, which names no id itself.
    const rejected = await server.waitForLog((l) => l.msg === "request rejected" && l.requestId === id, 5000);
    assert.equal(rejected.code, "ML_4003");

    // A registry flow's lines carry it too, next to the caller's retry key.
    const regId = `metrics-reg-rid-${process.pid}`;
    const regMeta = new grpc.Metadata();
    regMeta.set("x-request-id", regId);
    const reg = await new Promise<any>((resolve, reject) =>
      client.raw.RegisterPet(
        { photos: [jpeg(photo(1, 0)), jpeg(photo(1, 1))], request_id: "metrics-reg-2" },
        regMeta,
        { deadline: Date.now() + 20_000 },
        (err, res) => (err ? reject(err) : resolve(res)),
      ),
    );
    assert.equal(reg.success, true, reg.error_message);
    const done = await server.waitForLog((l) => l.msg === "register.done" && l.requestId === regId, 5000);
    assert.equal(done.idempotencyKey, "metrics-reg-2");

    // Without one the server makes a UUID, and sends it back.
    const fresh = await new Promise<grpc.Metadata>((resolve, reject) => {
      const call = client.raw.HealthCheck(
        { service: "" },
        new grpc.Metadata(),
        { deadline: Date.now() + 5000 },
        (err) => err && reject(err),
      ) as unknown as grpc.ClientUnaryCall;
      call.on("metadata", resolve);
    });
    assert.match(String(fresh.get("x-request-id")[0]), /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  });

  test("request ids on failed calls and on the Connect and gRPC-Web protocols", async () => {
    // gRPC transport failure: the id travels in the trailers.
    const meta = new grpc.Metadata();
    meta.set("x-request-id", "grpc-failure-1");
    const err = await new Promise<grpc.ServiceError>((resolve) =>
      health.raw.Check({ service: "no.such.Service" }, meta, { deadline: Date.now() + 5000 }, (e) => resolve(e!)),
    );
    assert.equal(err.code, grpc.status.NOT_FOUND);
    assert.deepEqual(err.metadata.get("x-request-id"), ["grpc-failure-1"]);

    const base = `http://${server.address}`;
    // Connect, success and failure: response headers.
    const ok = await fetch(`${base}/nose_embedder.NoseEmbedderService/HealthCheck`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Request-Id": "connect-ok-1" },
      body: JSON.stringify({ service: "" }),
    });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get("x-request-id"), "connect-ok-1");
    const notFound = await fetch(`${base}/grpc.health.v1.Health/Check`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Request-Id": "connect-fail-1" },
      body: JSON.stringify({ service: "no.such.Service" }),
    });
    assert.equal(notFound.status, 404);
    assert.equal(notFound.headers.get("x-request-id"), "connect-fail-1");

    // gRPC-Web: an empty HealthCheckRequest in one frame.
    const web = await fetch(`${base}/nose_embedder.NoseEmbedderService/HealthCheck`, {
      method: "POST",
      headers: { "Content-Type": "application/grpc-web+proto", "X-Grpc-Web": "1", "X-Request-Id": "grpc-web-1" },
      body: new Uint8Array([0, 0, 0, 0, 0]),
    });
    assert.equal(web.status, 200);
    assert.equal(web.headers.get("x-request-id"), "grpc-web-1");
    await web.arrayBuffer();
  });

  test("object-store and database failures are counted at their layer, and with the database down the scrape still answers, reporting nosepaw_registry_count_error 1", async () => {
    const a = await scrape();
    await s3.stop();
    try {
      const r = await client.call("VerifyPet", { pet_did: petDid, photo: jpeg(photo(0, 3)) });
      assert.equal(r.error_code, "STORAGE_CONNECTION_ERROR", r.error_message);
    } finally {
      await s3.start();
    }
    const b = await scrape();
    assert.equal(delta(a, b, "nosepaw_rpc_requests_total", requests("VerifyPet", "ML_5003")), 1);
    // The first store operation of a verification, the probe for a free verify_{ms}.jpg name, failed and ended the call.
    assert.equal(delta(a, b, "nosepaw_storage_errors_total", { op: "exists", code: "ML_5003" }), 1);
    assert.equal(b.sum("nosepaw_storage_errors_total") - a.sum("nosepaw_storage_errors_total"), 1);
    assert.equal(b.get("nosepaw_registry_count_error"), 0);

    await pg.stop();
    try {
      const r = await client.call("VerifyPet", { pet_did: petDid, photo: jpeg(photo(0, 3)) });
      assert.equal(r.error_code, "SERVICE_UNAVAILABLE", r.error_message);
      const c = await scrape();
      assert.equal(delta(b, c, "nosepaw_rpc_requests_total", requests("VerifyPet", "ML_5005")), 1);
      // The failed lookup, and the scrape's own count if it ran first.
      assert.ok(delta(b, c, "nosepaw_database_errors_total", { op: "query", code: "ML_5005" }) >= 1);
      assert.equal(c.get("nosepaw_registry_count_error"), 1);
      // The last counts stay visible.
      assert.equal(c.get("nosepaw_registry_pets", { status: "active" }), b.get("nosepaw_registry_pets", { status: "active" }));
      assert.ok(c.get("nosepaw_registry_pets", { status: "active" }) > 0);
    } finally {
      await pg.start();
    }
    const d = await scrape();
    assert.equal(d.get("nosepaw_registry_count_error"), 0, "recovers with the database");
  });
});
