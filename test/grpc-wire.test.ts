import assert from "node:assert/strict";
import http2 from "node:http2";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { NoseEmbedderService, NoseImageRequestSchema } from "../gen/nose_embedder_pb.js";
import { gatewayClient, type GatewayClient } from "./support/grpc-client.js";
import { jpeg, png, pngHeaderOnly } from "./support/images.js";
import { makeTestModel, ROOT, startServer, type RunningServer } from "./support/server.js";

/** The error fields as the gateway sees them; `_error_code` proves the optional field was really sent. */
function assertError(res: any, code: string, retryable: boolean, ml: string) {
  assert.equal(res.success, false, JSON.stringify(res).slice(0, 300));
  assert.equal(res._error_code, "error_code", "error_code must be present on the wire");
  assert.equal(res.error_code, code);
  assert.equal(res._retryable, "retryable");
  assert.equal(res.retryable, retryable);
  assert.match(res.error_message, new RegExp(`^${ml}: `));
}

/** The bundled model unless TEST_MODEL_PATH points elsewhere (local runs against another model). */
const defaults: Record<string, string> = process.env.TEST_MODEL_PATH ? { MODEL_PATH: process.env.TEST_MODEL_PATH } : {};

const norm = (v: number[]) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));

describe("NoseEmbedderService over the gateway's @grpc/grpc-js client (default configuration)", () => {
  let server: RunningServer;
  let client: GatewayClient;
  let photo: Buffer;

  before(async () => {
    server = await startServer(defaults);
    client = gatewayClient(server.address);
    photo = await jpeg(320, 300, 1);
  });
  after(async () => {
    client?.close();
    await server?.stop();
  });

  test("HealthCheck answers SERVING for the gateway's names and SERVICE_UNKNOWN otherwise", async () => {
    for (const service of ["NoseEmbedderService", "", "nose_embedder.NoseEmbedderService"]) {
      const res = await client.call("HealthCheck", { service });
      assert.equal(res.status, "SERVING", service);
      assert.equal(res.model_loaded, "true");
      assert.match(res.message, /nose-embedder\.onnx version \S+; registry (on pglite|database unavailable)/);
      assert.ok(!Number.isNaN(Date.parse(res.timestamp)) && res.timestamp.endsWith("Z"));
    }
    const other = await client.call("HealthCheck", { service: "SomethingElse" });
    assert.equal(other.status, "SERVICE_UNKNOWN");
  });

  test("answers are not compressed, even for a client that offers gzip (as grpc-js does)", async () => {
    // Raw HTTP/2, since grpc-js hides the message's compressed flag: request field 1 (image_data), uncompressed.
    const session = http2.connect(`http://${server.address}`);
    try {
      const len: number[] = [];
      for (let n = photo.length; ; n >>>= 7) {
        if (n < 128) {
          len.push(n);
          break;
        }
        len.push((n & 127) | 128);
      }
      const msg = Buffer.concat([Buffer.from([0x0a, ...len]), photo]);
      const prefix = Buffer.alloc(5);
      prefix.writeUInt32BE(msg.length, 1);
      const req = session.request({
        ":method": "POST",
        ":path": "/nose_embedder.NoseEmbedderService/ExtractNoseVector",
        "content-type": "application/grpc",
        te: "trailers",
        "grpc-accept-encoding": "identity,deflate,gzip",
      });
      req.end(Buffer.concat([prefix, msg]));
      const chunks: Buffer[] = [];
      req.on("data", (d: Buffer) => chunks.push(d));
      await new Promise((resolve, reject) => (req.on("end", resolve), req.on("error", reject)));
      const body = Buffer.concat(chunks);
      assert.ok(body.length > 5 + 512 * 4, `answer of ${body.length} bytes`);
      assert.equal(body[0], 0, "the answer's message is sent uncompressed");
    } finally {
      session.close();
    }
  });

  test("ExtractNoseVector returns 512 L2-normalised floats for a Buffer and for Array.from(buffer)", async () => {
    const a = await client.call("ExtractNoseVector", { image_data: photo, image_format: "jpeg" });
    const b = await client.call("ExtractNoseVector", { image_data: Array.from(photo), image_format: "jpeg" });
    assert.equal(a.success, true, a.error_message);
    assert.equal(a.vector_size, 512);
    assert.equal(a.vector.length, 512);
    assert.ok(Math.abs(norm(a.vector) - 1) < 1e-4);
    assert.deepEqual(b.vector, a.vector);
  });

  test("the bundled model scores re-takes of one nose above every other nose", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "nosepaw-noses-"));
    execFileSync("/usr/bin/python3", [path.join(ROOT, "test/support/nose_photos.py"), dir, "4"], { stdio: "pipe" });
    const vec = async (d: number, k: number) =>
      (await client.call("ExtractNoseVector", { image_data: readFileSync(path.join(dir, `dog${d}_${k}.jpg`)) })).vector as number[];
    const dot = (a: number[], b: number[]) => a.reduce((s, x, i) => s + x * b[i], 0);
    const first = await Promise.all([0, 1, 2, 3].map((d) => vec(d, 0)));
    const retake = await Promise.all([0, 1, 2, 3].map((d) => vec(d, 1)));
    for (let d = 0; d < 4; d++) {
      const genuine = dot(first[d], retake[d]);
      for (let o = 0; o < 4; o++) if (o !== d) assert.ok(genuine > dot(first[d], first[o]), `dog ${d}: re-take ${genuine} vs dog ${o}`);
    }
  });

  test("the format field is a hint: PNG bytes labelled jpeg still embed", async () => {
    const p = await png(200, 200, 2);
    const res = await client.call("ExtractNoseVector", { image_data: p, image_format: "jpeg" });
    assert.equal(res.success, true, res.error_message);
    assert.equal(res.vector.length, 512);
  });

  test("concurrent requests (micro-batched) give the same vectors as one-by-one requests", async () => {
    // The server runs in its own process, as in production, so its model
    // and preprocessing worker threads never share the test process (V8 on
    // Node 24 can abort a process churning WebAssembly code across worker
    // threads). The batches are read from its own records: the
    // nosepaw_inference_batch_size histogram on /metrics. Concurrent requests
    // must really have run as batches of more than one (MAX_BATCH=1 in the
    // environment makes this test fail).
    const batches = async () => {
      const text = await (await fetch(`http://${server.address}/metrics`)).text();
      const read = (name: string) => {
        const m = new RegExp(`^nosepaw_inference_batch_size_${name}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(text);
        assert.ok(m, `nosepaw_inference_batch_size_${name} is not on /metrics`);
        return Number(m[1]);
      };
      return { runs: read("count"), photos: read("sum") };
    };
    const since = async (before: { runs: number; photos: number }) => {
      const now = await batches();
      return { runs: now.runs - before.runs, photos: now.photos - before.photos };
    };
    const photos = await Promise.all([0, 1, 2, 3, 4, 5, 6, 7].map((i) => jpeg(180 + i * 20, 180 + i * 20, 10 + i)));
    const one: number[][] = [];
    let before = await batches();
    for (const p of photos) one.push((await client.call("ExtractNoseVector", { image_data: p })).vector);
    assert.deepEqual(await since(before), { runs: photos.length, photos: photos.length }, "one by one: batches of one");
    before = await batches();
    const many = await Promise.all(photos.map((p) => client.call("ExtractNoseVector", { image_data: p })));
    many.forEach((r, i) => r.vector.forEach((x: number, j: number) => assert.ok(Math.abs(x - one[i][j]) < 1e-5)));
    const concurrent = await since(before);
    assert.equal(concurrent.photos, photos.length, `every photo ran once: ${JSON.stringify(concurrent)}`);
    assert.ok(
      concurrent.runs < photos.length,
      `concurrent photos must form a batch of more than one: ${concurrent.runs} model runs for ${photos.length} photos`,
    );
    assert.ok(server.logs.some((l) => l.msg === "model loaded" && l.dynamicBatch === true));
  });

  test("empty image_data is INVALID_REQUEST (ML_4006), not retryable", async () => {
    assertError(
      await client.call("ExtractNoseVector", { image_data: Buffer.alloc(0), image_format: "jpeg" }),
      "INVALID_REQUEST",
      false,
      "ML_4006",
    );
  });

  test("a truncated JPEG is INVALID_IMAGE (ML_4001): code 0 is still sent", async () => {
    const res = await client.call("ExtractNoseVector", { image_data: photo.subarray(0, Math.floor(photo.length / 2)) });
    assertError(res, "INVALID_IMAGE", false, "ML_4001");
  });

  test("GIF bytes are INVALID_IMAGE_FORMAT (ML_4003)", async () => {
    const gif = Buffer.from("474946383961010001000000002c00000000010001000002024401003b", "hex");
    assertError(await client.call("ExtractNoseVector", { image_data: gif, image_format: "gif" }), "INVALID_IMAGE_FORMAT", false, "ML_4003");
  });

  test("a payload over 10 MB is IMAGE_TOO_LARGE (ML_4002)", async () => {
    const big = Buffer.concat([photo, Buffer.alloc(10 * 1024 * 1024)]);
    assertError(await client.call("ExtractNoseVector", { image_data: big }), "IMAGE_TOO_LARGE", false, "ML_4002");
  });

  test("a 40 MB payload is still answered in-band; one past the 64 MB ceiling gets RESOURCE_EXHAUSTED, and the server lives on", async () => {
    assertError(
      await client.call("ExtractNoseVector", { image_data: Buffer.alloc(40 * 1024 * 1024, 1) }),
      "IMAGE_TOO_LARGE",
      false,
      "ML_4002",
    );
    await assert.rejects(client.call("ExtractNoseVector", { image_data: Buffer.alloc(65 * 1024 * 1024, 1) }), (e: any) => e.code === 8);
    assert.equal((await client.call("ExtractNoseVector", { image_data: photo })).success, true);
  });

  test("a PNG header declaring 60000x60000 pixels (decompression bomb) is IMAGE_TOO_LARGE", async () => {
    assertError(await client.call("ExtractNoseVector", { image_data: pngHeaderOnly(60000, 60000) }), "IMAGE_TOO_LARGE", false, "ML_4002");
  });

  test("the standard grpc.health.v1 Check and Watch answer SERVING", async () => {
    const h = gatewayClient(server.address, "grpc/health/v1/health.proto", "grpc.health.v1.Health");
    try {
      assert.equal((await h.call("Check", { service: "" })).status, "SERVING");
      assert.equal((await h.call("Check", { service: "nose_embedder.NoseEmbedderService" })).status, "SERVING");
      await assert.rejects(h.call("Check", { service: "nope" }), (e: any) => e.code === 5);
      const first = await new Promise<any>((resolve, reject) => {
        const stream = (h.raw as any).Watch({ service: "" });
        stream.on("data", (m: any) => {
          resolve(m);
          stream.cancel();
        });
        stream.on("error", (e: any) => (e.code === 1 ? undefined : reject(e)));
      });
      assert.equal(first.status, "SERVING");
    } finally {
      h.close();
    }
  });

  test("Connect, gRPC-Web (HTTP/1.1) and connect-node's gRPC clients reach the same port", async () => {
    const baseUrl = `http://${server.address}`;
    const req = create(NoseImageRequestSchema, { imageData: photo, imageFormat: "jpeg" });
    const ref = await client.call("ExtractNoseVector", { image_data: photo });
    for (const transport of [
      createConnectTransport({ baseUrl, httpVersion: "1.1" }),
      createGrpcWebTransport({ baseUrl, httpVersion: "1.1" }),
      createGrpcTransport({ baseUrl }),
    ]) {
      const res = await createClient(NoseEmbedderService, transport).extractNoseVector(req);
      assert.equal(res.success, true, res.errorMessage);
      res.vector.forEach((x, i) => assert.ok(Math.abs(x - ref.vector[i]) < 1e-6));
    }
  });

  test("SIGTERM lets in-flight requests finish, then the process exits 0", async () => {
    const s = await startServer(defaults);
    const c = gatewayClient(s.address);
    try {
      const big = await jpeg(2400, 1600, 7);
      assert.equal((await c.call("HealthCheck", { service: "" })).status, "SERVING"); // connection is up
      let answered = 0;
      const inflight = Promise.all([1, 2, 3, 4].map(() => c.call("ExtractNoseVector", { image_data: big }).then((r) => (answered++, r))));
      await new Promise((r) => setTimeout(r, 100));
      const answeredBeforeSignal = answered;
      const code = await s.stop("SIGTERM");
      const results = await inflight;
      results.forEach((r) => assert.equal(r.success, true, r.error_message));
      assert.ok(answeredBeforeSignal < results.length, "some request was still in flight at SIGTERM");
      assert.equal(code, 0);
      assert.ok(s.logs.some((l) => l.msg === "stopped"));
    } finally {
      c.close();
      await s.stop("SIGKILL");
    }
  });
});

describe("model problems", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "nosepaw-models-"));

  test("a missing model: NOT_SERVING, and requests get MODEL_NOT_LOADED (ML_5001), retryable", async () => {
    const s = await startServer({ MODEL_PATH: path.join(dir, "missing.onnx") });
    const c = gatewayClient(s.address);
    try {
      const h = await c.call("HealthCheck", { service: "NoseEmbedderService" });
      assert.equal(h.status, "NOT_SERVING");
      assert.equal(h.model_loaded, "false");
      assert.match(h.message, /model file not found/);
      assertError(await c.call("ExtractNoseVector", { image_data: await jpeg(100, 100, 1) }), "MODEL_NOT_LOADED", true, "ML_5001");
    } finally {
      c.close();
      await s.stop();
    }
  });

  test("a model whose tensors differ from MODEL_INPUT_SIZE and 512 is refused with the exact mismatch", async () => {
    const s = await startServer({ MODEL_PATH: makeTestModel(path.join(dir, "wrong.onnx"), { size: 128, dim: 128 }) });
    const c = gatewayClient(s.address);
    try {
      const h = await c.call("HealthCheck", { service: "" });
      assert.equal(h.status, "NOT_SERVING");
      assert.match(h.message, /input 'input' has shape \(N,3,128,128\), expected \(N,3,224,224\)/);
      assert.match(h.message, /output 'embedding' has shape \(N,128\), expected \(N,512\)/);
    } finally {
      c.close();
      await s.stop();
    }
  });

  test("a user model without a card works with MODEL_INPUT_SIZE, including a fixed batch of 1", async () => {
    const s = await startServer({
      MODEL_PATH: makeTestModel(path.join(dir, "user.onnx"), { size: 128, batch: "1" }),
      MODEL_INPUT_SIZE: "128",
    });
    const c = gatewayClient(s.address);
    try {
      const photos = await Promise.all([1, 2, 3].map((i) => jpeg(150, 150, i)));
      const res = await Promise.all(photos.map((p) => c.call("ExtractNoseVector", { image_data: p })));
      res.forEach((r) => assert.equal(r.success, true, r.error_message));
      assert.ok(s.logs.some((l) => l.msg === "model loaded" && l.dynamicBatch === false && l.calibrated === false));
    } finally {
      c.close();
      await s.stop();
    }
  });

  test("a model that emits NaN gives INFERENCE_ERROR (ML_5002), not retryable: the same photo meets the same model", async () => {
    const s = await startServer({ MODEL_PATH: makeTestModel(path.join(dir, "nan.onnx"), { nan: true }) });
    const c = gatewayClient(s.address);
    try {
      assertError(await c.call("ExtractNoseVector", { image_data: await jpeg(100, 100, 1) }), "INFERENCE_ERROR", false, "ML_5002");
    } finally {
      c.close();
      await s.stop();
    }
  });

  test("invalid configuration stops start-up with every problem listed", async () => {
    const s = startServer({ GRPC_PORT: "abc", LOG_LEVEL: "loud", NCP_ENDPOINT: "https://example.invalid" }, "listening", 15_000);
    await assert.rejects(s, (e: Error) => {
      // Exactly these three problems, each on its own line, nothing else.
      const listed = e.message
        .split("\n")
        .filter((l) => /^\s+- /.test(l))
        .map((l) => l.replace(/^\s+- /, ""));
      assert.deepEqual(listed.sort(), [
        'GRPC_PORT="abc" must be an integer between 0 and 65535',
        'LOG_LEVEL="loud" must be one of debug, info, warn, error',
        "NCP_ENDPOINT is set, so NCP_ACCESS_KEY, NCP_SECRET_KEY, NCP_BUCKET_NAME must be set too",
      ]);
      return true;
    });
  });
});
