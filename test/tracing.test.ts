import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { gunzipSync } from "node:zlib";
import * as grpc from "@grpc/grpc-js";
import { ConfigError, loadConfig } from "../server/config.js";
import { gatewayClient, type GatewayClient } from "./support/grpc-client.js";
import { jpeg } from "./support/images.js";
import { freePort } from "./support/s3.js";
import { makeTestModel, startServer, type RunningServer } from "./support/server.js";

test("tracing is off unless an OTLP endpoint is set; the traces path is appended to the base endpoint as OpenTelemetry's SDKs do", () => {
  const plain = loadConfig({});
  assert.equal(plain.otlpTracesUrl, undefined);
  assert.equal(plain.metricsEnabled, true);
  assert.equal(plain.otelServiceName, "nosepaw");
  assert.equal(loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318/" }).otlpTracesUrl, "http://collector:4318/v1/traces");
  assert.equal(
    loadConfig({
      OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318",
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "https://traces.example.com/in",
    }).otlpTracesUrl,
    "https://traces.example.com/in",
  );
  assert.equal(loadConfig({ METRICS_ENABLED: "false" }).metricsEnabled, false);
  assert.throws(
    () => loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: "collector:4318" }),
    (e: ConfigError) => /OTEL_EXPORTER_OTLP_ENDPOINT/.test(e.message),
  );
});

/** A span as OTLP/HTTP JSON carries it (ids in hex, times in nanoseconds as strings). */
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: Array<{ key: string; value: { stringValue?: string; intValue?: string | number; doubleValue?: number } }>;
  status?: { code?: number; message?: string };
}

/** A stand-in OpenTelemetry collector: receives OTLP/HTTP JSON on /v1/traces and keeps every span. */
async function startCollector() {
  const spans: Array<OtlpSpan & { service: string }> = [];
  const paths: string[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      paths.push(`${req.method} ${req.url} ${req.headers["content-type"]}`);
      let body = Buffer.concat(chunks);
      if (req.headers["content-encoding"] === "gzip") body = gunzipSync(body);
      const doc = JSON.parse(body.toString("utf8"));
      for (const rs of doc.resourceSpans ?? []) {
        const service = rs.resource?.attributes?.find((a: { key: string }) => a.key === "service.name")?.value?.stringValue;
        for (const ss of rs.scopeSpans ?? []) for (const s of ss.spans ?? []) spans.push({ ...s, service });
      }
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end("{}");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  return { spans, paths, url: `http://127.0.0.1:${port}`, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

const attr = (s: OtlpSpan, key: string) => {
  const v = s.attributes.find((a) => a.key === key)?.value;
  return v?.stringValue ?? (v?.intValue !== undefined ? Number(v.intValue) : v?.doubleValue);
};
const ns = (t: string) => BigInt(t);

describe("OpenTelemetry tracing to an OTLP/HTTP collector", () => {
  let collector: Awaited<ReturnType<typeof startCollector>>;
  let server: RunningServer;
  let client: GatewayClient;
  const callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736";
  const callerSpan = "00f067aa0ba902b7";

  before(async () => {
    collector = await startCollector();
    const modelPath = makeTestModel(path.join(mkdtempSync(path.join(tmpdir(), "nosepaw-model-")), "m.onnx"));
    server = await startServer({
      MODEL_PATH: modelPath,
      OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
      OTEL_SERVICE_NAME: "nosepaw-under-test",
      // Nothing is exported before the server stops: what arrives proves the flush on shutdown.
      OTEL_BSP_SCHEDULE_DELAY: "600000",
      METRICS_ENABLED: "false",
      // No registry is needed: a PostgreSQL address where nobody listens spares
      // opening the embedded database, which holds the event loop for a while.
      DB_HOST: "127.0.0.1",
      DB_PORT: String(await freePort()),
    });
    client = gatewayClient(server.address);
  });
  after(async () => {
    client?.close();
    await server?.stop();
    await collector?.close();
  });

  test("one server span per call with a child span per stage, the request id as attribute, the caller's trace continued, failures marked; exported when the server stops", async () => {
    const call = (req: unknown, headers: Record<string, string>) =>
      new Promise<any>((resolve, reject) => {
        const meta = new grpc.Metadata();
        for (const [k, v] of Object.entries(headers)) meta.set(k, v);
        client.raw.ExtractNoseVector(req, meta, { deadline: Date.now() + 20_000 }, (err, res) => (err ? reject(err) : resolve(res)));
      });
    const ok = await call(
      { image_data: await jpeg(640, 480, 7), image_format: "jpeg" },
      {
        "x-request-id": "trace-ok-1",
        traceparent: `00-${callerTrace}-${callerSpan}-01`,
      },
    );
    assert.equal(ok.success, true, ok.error_message);
    const bad = await call({ image_data: Buffer.from("not a photo"), image_format: "jpeg" }, { "x-request-id": "trace-bad-1" });
    assert.equal(bad.error_code, "INVALID_IMAGE_FORMAT");
    assert.equal((await fetch(`http://${server.address}/metrics`)).status, 404, "METRICS_ENABLED=false: no /metrics route");

    assert.equal(await server.stop(), 0);
    assert.ok(collector.paths.length > 0, "spans were posted on shutdown");
    assert.ok(
      collector.paths.every((p) => p.startsWith("POST /v1/traces application/json")),
      collector.paths.join("; "),
    );

    const rpc = (id: string) => {
      const found = collector.spans.filter((s) => s.kind === 2 && attr(s, "nosepaw.request_id") === id);
      assert.equal(found.length, 1, `one server span for ${id}`);
      return found[0];
    };
    const children = (parent: OtlpSpan) => collector.spans.filter((s) => s.parentSpanId === parent.spanId);

    const okSpan = rpc("trace-ok-1");
    assert.equal(okSpan.name, "nose_embedder.NoseEmbedderService/ExtractNoseVector");
    assert.equal(okSpan.service, "nosepaw-under-test");
    assert.equal(okSpan.traceId, callerTrace, "continues the caller's trace");
    assert.equal(okSpan.parentSpanId, callerSpan);
    assert.equal(attr(okSpan, "rpc.method"), "ExtractNoseVector");
    assert.equal(attr(okSpan, "nosepaw.result"), "OK");
    assert.notEqual(okSpan.status?.code, 2);
    const stages = children(okSpan);
    assert.deepEqual(stages.map((s) => s.name).sort(), ["batch_wait", "decode", "handoff", "inference", "queue", "resize", "tensor"]);
    for (const s of stages) {
      assert.equal(s.traceId, callerTrace);
      assert.equal(attr(s, "nosepaw.request_id"), "trace-ok-1");
      assert.ok(
        ns(s.startTimeUnixNano) >= ns(okSpan.startTimeUnixNano) && ns(s.endTimeUnixNano) <= ns(okSpan.endTimeUnixNano),
        `${s.name} lies inside the call`,
      );
      assert.ok(Number(attr(s, "nosepaw.stage_ms")) >= 0);
    }

    const badSpan = rpc("trace-bad-1");
    assert.notEqual(badSpan.traceId, callerTrace, "a call without traceparent starts its own trace");
    assert.equal(badSpan.parentSpanId ?? "", "");
    assert.equal(badSpan.status?.code, 2, "in-band failures are errors");
    assert.equal(badSpan.status?.message, "ML_4003");
    assert.deepEqual(
      children(badSpan).map((s) => s.name),
      ["queue"],
      "refused in the worker before decoding",
    );
  });
});
