/**
 * API keys on the port: browser protocols (Connect, gRPC-Web) need one when
 * keys are configured, plain gRPC (the gateway) only with GRPC_AUTH=required,
 * health probes never; an exposed port without keys starts and serves
 * browser calls from this machine only. Requests
 * go out as real clients send them: fetch, connect-node's Connect and
 * gRPC-Web transports, and @grpc/grpc-js with the gateway's loader options.
 */
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { NoseEmbedderService } from "../gen/nose_embedder_pb.js";
import { gatewayClient } from "./support/grpc-client.js";
import { addNonLoopbackAddress } from "./support/non-loopback.js";
import { INSTALL, requireSystem } from "./support/require-system.js";
import { startServer, type RunningServer } from "./support/server.js";

const K1 = "k1-0123456789abcdef0123";
const K2 = "k2-fedcba9876543210fedc";
const ORIGIN = "https://app.example.com";
const HEALTH_CHECK = "/nose_embedder.NoseEmbedderService/HealthCheck";
/** No model to load: health answers NOT_SERVING at once, and nothing here needs a model. */
const NO_MODEL = { MODEL_PATH: path.join(tmpdir(), "nosepaw-no-model.onnx") };

/**
 * A server that has finished starting: the embedded database's migrations
 * run on the server's main thread, so calls made meanwhile can wait seconds.
 */
async function started(env: Record<string, string>): Promise<RunningServer> {
  const server = await startServer({ ...NO_MODEL, ...env });
  await server.waitForLog((l) => l.msg === "database ready");
  return server;
}

/** A Connect unary call as a browser's fetch sends it (JSON). */
function connectCall(server: RunningServer, headers: Record<string, string> = {}, target = HEALTH_CHECK) {
  return fetch(`http://${server.address}${target}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", "Connect-Protocol-Version": "1", ...headers },
    body: JSON.stringify({ service: "NoseEmbedderService" }),
  });
}

const withHeaders =
  (headers: Record<string, string>): Interceptor =>
  (next) =>
  (req) => {
    for (const [k, v] of Object.entries(headers)) req.header.set(k, v);
    return next(req);
  };

/** Connect and gRPC-Web transports as connect-web builds them in a page, over HTTP/1.1. */
function transports(server: RunningServer, headers: Record<string, string> = {}): [string, Transport][] {
  const baseUrl = `http://${server.address}`;
  const interceptors = [withHeaders(headers)];
  return [
    ["connect", createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors })],
    ["grpc-web", createGrpcWebTransport({ baseUrl, httpVersion: "1.1", interceptors })],
  ];
}

/** One gateway call with metadata, through the gateway's own client. */
function grpcCall(
  server: RunningServer,
  metadata: Record<string, string> = {},
  method = "HealthCheck",
): Promise<{ err: grpc.ServiceError | null; res: any }> {
  const client = gatewayClient(server.address);
  const meta = new grpc.Metadata();
  for (const [k, v] of Object.entries(metadata)) meta.set(k, v);
  return new Promise((resolve) =>
    client.raw[method]({ service: "" }, meta, { deadline: Date.now() + 30_000 }, (err, res) => {
      client.close();
      resolve({ err, res });
    }),
  );
}

describe("API keys configured, gRPC open (GRPC_AUTH default)", () => {
  let server: RunningServer;
  before(async () => {
    server = await started({ API_KEYS: `${K1}, ${K2}`, CORS_ORIGINS: ORIGIN });
  });
  after(async () => {
    await server?.stop();
  });

  test("Connect over fetch: no key and a wrong key get 401 unauthenticated; either key, as Bearer or x-api-key, gets through", async () => {
    const none = await connectCall(server);
    assert.equal(none.status, 401);
    assert.equal(none.headers.get("content-type"), "application/json");
    assert.equal(none.headers.get("www-authenticate"), "Bearer");
    const body = await none.json();
    assert.equal(body.code, "unauthenticated");
    assert.match(body.message, /needs an API key: send Authorization: Bearer <key> or x-api-key/);

    const wrongs: Record<string, string>[] = [
      { Authorization: `Bearer ${K1}x` },
      { Authorization: `Bearer ${K1.slice(0, -1)}` },
      { "x-api-key": "wrong-key-0123456789" },
      { Authorization: K1 },
    ];
    for (const headers of wrongs) {
      const wrong = await connectCall(server, headers);
      assert.equal(wrong.status, 401, JSON.stringify(headers));
      const b = await wrong.json();
      assert.equal(b.code, "unauthenticated");
      assert.doesNotMatch(JSON.stringify(b), /k1-|k2-/, "the answer never echoes a key");
    }

    const rights: Record<string, string>[] = [
      { Authorization: `Bearer ${K1}` },
      { authorization: `bearer ${K2}` },
      { "x-api-key": K1 },
      { "X-Api-Key": K2 },
    ];
    for (const headers of rights) {
      const ok = await connectCall(server, headers);
      assert.equal(ok.status, 200, JSON.stringify(headers));
      assert.ok(["SERVING", "NOT_SERVING"].includes((await ok.json()).status));
    }
  });

  test("connect-es clients see Code.Unauthenticated over Connect and gRPC-Web (grpc-status 16), and pass with a key", async () => {
    for (const [name, transport] of transports(server)) {
      const err = await createClient(NoseEmbedderService, transport)
        .healthCheck({ service: "" })
        .then(
          () => undefined,
          (e: unknown) => ConnectError.from(e),
        );
      assert.equal(err?.code, Code.Unauthenticated, `${name}: ${err?.message}`);
      assert.match(err!.rawMessage, /needs an API key/, name);
    }
    for (const [name, transport] of transports(server, { Authorization: `Bearer ${K2}` })) {
      const res = await createClient(NoseEmbedderService, transport).healthCheck({ service: "" });
      assert.ok(res.modelLoaded === "true" || res.modelLoaded === "false", name);
    }
    // The wire form of the gRPC-Web refusal: trailers-only, grpc-status 16 in the headers.
    const raw = await fetch(`http://${server.address}${HEALTH_CHECK}`, {
      method: "POST",
      headers: { "Content-Type": "application/grpc-web+proto", "X-Grpc-Web": "1" },
      body: new Uint8Array([0, 0, 0, 0, 0]),
    });
    assert.equal(raw.status, 200);
    assert.equal(raw.headers.get("grpc-status"), "16");
    assert.match(decodeURIComponent(raw.headers.get("grpc-message") ?? ""), /needs an API key/);
    assert.equal((await raw.arrayBuffer()).byteLength, 0);
  });

  test("a Connect streaming request is refused with an end-of-stream message", async () => {
    const res = await fetch(`http://${server.address}${HEALTH_CHECK}`, {
      method: "POST",
      headers: { "Content-Type": "application/connect+json", "Connect-Protocol-Version": "1" },
      body: new Uint8Array([0, 0, 0, 0, 2, 0x7b, 0x7d]),
    });
    assert.equal(res.status, 200);
    const frame = Buffer.from(await res.arrayBuffer());
    assert.equal(frame[0], 0b10, "end-stream flag");
    assert.equal(frame.readUInt32BE(1), frame.length - 5);
    assert.equal(JSON.parse(frame.subarray(5).toString()).error.code, "unauthenticated");
  });

  test("the gateway's plain gRPC needs no key; health probes need none on any protocol", async () => {
    const { err, res } = await grpcCall(server);
    assert.equal(err, null);
    assert.ok(["SERVING", "NOT_SERVING"].includes(res.status));
    const health = await createClient(Health, transports(server)[0][1]).check({ service: "" });
    assert.ok(health.status !== undefined);
  });

  test("CORS: an allowed origin may preflight with Authorization and x-api-key and read the refusal; another origin is refused", async () => {
    const preflight = await fetch(`http://${server.address}${HEALTH_CHECK}`, {
      method: "OPTIONS",
      headers: {
        Origin: ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,x-api-key,content-type",
      },
    });
    assert.equal(preflight.status, 204);
    assert.equal(preflight.headers.get("access-control-allow-origin"), ORIGIN);
    const allowed = (preflight.headers.get("access-control-allow-headers") ?? "").toLowerCase().split(/,\s*/);
    assert.ok(allowed.includes("authorization") && allowed.includes("x-api-key"), allowed.join(","));
    assert.match(preflight.headers.get("vary") ?? "", /Origin/);

    const refused = await connectCall(server, { Origin: ORIGIN });
    assert.equal(refused.status, 401);
    assert.equal(refused.headers.get("access-control-allow-origin"), ORIGIN, "the page can read why it was refused");
    const exposed = (refused.headers.get("access-control-expose-headers") ?? "").toLowerCase();
    for (const h of ["grpc-status", "grpc-message", "retry-after", "www-authenticate"]) assert.ok(exposed.includes(h), h);
    await refused.arrayBuffer();

    const passed = await connectCall(server, { Origin: ORIGIN, Authorization: `Bearer ${K1}` });
    assert.equal(passed.status, 200);
    assert.equal(passed.headers.get("access-control-allow-origin"), ORIGIN);
    await passed.arrayBuffer();

    // Exact match only: scheme, port, and a suffix of the host all count.
    for (const origin of [
      "http://app.example.com",
      "https://app.example.com:8443",
      "https://evil-app.example.com",
      "https://app.example.com.evil.example",
      "null",
    ]) {
      const pre = await fetch(`http://${server.address}${HEALTH_CHECK}`, {
        method: "OPTIONS",
        headers: { Origin: origin, "Access-Control-Request-Method": "POST" },
      });
      assert.equal(pre.status, 403, origin);
      assert.equal(pre.headers.get("access-control-allow-origin"), null, origin);
      await pre.arrayBuffer();
      const call = await connectCall(server, { Origin: origin, Authorization: `Bearer ${K1}` });
      assert.equal(call.status, 403, `${origin}: a call from a foreign origin is refused even with a key`);
      assert.equal(call.headers.get("access-control-allow-origin"), null, origin);
      await call.arrayBuffer();
    }
    // The page's own origin needs no CORS entry.
    const own = await connectCall(server, { Origin: `http://${server.address}`, Authorization: `Bearer ${K1}` });
    assert.equal(own.status, 200);
    await own.arrayBuffer();
  });
});

describe("a gateway-only deployment: GRPC_HOST=0.0.0.0, BROWSER_PROTOCOLS=false, GRPC_AUTH=required, keys from API_KEYS_FILE", () => {
  let server: RunningServer;
  before(async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "nosepaw-keys-"));
    const file = path.join(dir, "keys");
    writeFileSync(file, `# gateway\n${K1}\n\n# capture app\n${K2}\n`);
    server = await started({ GRPC_HOST: "0.0.0.0", BROWSER_PROTOCOLS: "false", API_KEYS_FILE: file, GRPC_AUTH: "required" });
  });
  after(async () => {
    await server?.stop();
  });

  test("@grpc/grpc-js without a key or with a wrong one: UNAUTHENTICATED (16); with either key as bearer or x-api-key metadata: through", async () => {
    const cases: [Record<string, string>, RegExp][] = [
      [{}, /needs an API key/],
      [{ authorization: "Bearer not-the-key-0123456789" }, /API key not accepted/],
      [{ "x-api-key": `${K2}0` }, /API key not accepted/],
    ];
    for (const [meta, why] of cases) {
      const { err } = await grpcCall(server, meta);
      assert.equal(err?.code, grpc.status.UNAUTHENTICATED, JSON.stringify(meta));
      assert.match(err!.details, why);
    }
    const rights: Record<string, string>[] = [{ authorization: `Bearer ${K1}` }, { "x-api-key": K2 }];
    for (const meta of rights) {
      const { err, res } = await grpcCall(server, meta);
      assert.equal(err, null, JSON.stringify(meta));
      assert.ok(["SERVING", "NOT_SERVING"].includes(res.status));
    }
  });

  test("the kubelet's gRPC health probe (no metadata) still gets an answer", async () => {
    const health = gatewayClient(server.address, "grpc/health/v1/health.proto", "grpc.health.v1.Health");
    try {
      const res = await health.call("Check", { service: "" });
      assert.ok(["SERVING", "NOT_SERVING"].includes(res.status));
    } finally {
      health.close();
    }
  });

  test("Connect and gRPC-Web are off: the listening line says gRPC only, and a Connect call is not served", async () => {
    assert.deepEqual(server.logs.find((l) => l.msg === "listening")!.protocols, ["grpc"]);
    const connect = await connectCall(server, { Authorization: `Bearer ${K1}` });
    assert.notEqual(connect.status, 200);
    await connect.arrayBuffer();
  });
});

describe("a bare start: GRPC_HOST=0.0.0.0 (the default), no keys, BROWSER_AUTH=auto", () => {
  let server: RunningServer;
  before(async () => {
    // npm start runs server/main.ts itself; empty values count as unset, so
    // keys or settings in the calling environment cannot leak in.
    server = await started({
      GRPC_HOST: "0.0.0.0",
      API_KEYS: "",
      API_KEYS_FILE: "",
      BROWSER_AUTH: "",
      BROWSER_PROTOCOLS: "",
      GRPC_AUTH: "",
    });
  });
  after(async () => {
    await server?.stop();
  });

  test("it starts, says once that browser calls are served from this machine only, and the gateway's plain gRPC needs no key", async () => {
    const listening = server.logs.find((l) => l.msg === "listening")!;
    assert.equal(listening.host, "0.0.0.0");
    assert.deepEqual(listening.protocols, ["grpc", "grpc-web", "connect"]);
    const warnings = server.logs.filter((l) => l.level === "warn" && /no API keys configured/.test(String(l.msg)));
    assert.equal(warnings.length, 1, JSON.stringify(server.logs.filter((l) => l.level === "warn")));
    assert.match(String(warnings[0].msg), /this machine only/);
    for (const name of ["API_KEYS", "API_KEYS_FILE", "BROWSER_AUTH=off"]) assert.ok(String(warnings[0].msg).includes(name), name);

    const { err, res } = await grpcCall(server);
    assert.equal(err, null);
    assert.ok(["SERVING", "NOT_SERVING"].includes(res.status));
  });

  test("Connect and gRPC-Web from 127.0.0.1 are served without a key (the capture app opened on this machine)", async () => {
    const res = await connectCall(server);
    assert.equal(res.status, 200);
    assert.ok(["SERVING", "NOT_SERVING"].includes((await res.json()).status));
    for (const [name, transport] of transports(server)) {
      const health = await createClient(NoseEmbedderService, transport).healthCheck({ service: "" });
      assert.ok(health.modelLoaded === "true" || health.modelLoaded === "false", name);
    }
  });

  // The only test that proves a keyless server refuses browser calls from
  // other machines: it makes its own non-loopback address rather than
  // depending on the runner's network, and never skips under CI.
  const added = addNonLoopbackAddress();
  const skip = requireSystem("a non-loopback IPv4 address of this machine", added.ok ? false : added.missing, INSTALL.iproute);
  after(() => {
    if (added.ok) added.own.remove();
  });

  test(
    "from another address of this machine: Connect gets 401 naming API_KEYS, gRPC-Web UNAUTHENTICATED, plain gRPC is served",
    { skip },
    async () => {
      assert.ok(added.ok);
      const external = added.own.address;
      // A connection to one of the machine's own addresses comes from that address.
      const remote = { ...server, address: `${external}:${server.port}` };
      const res = await connectCall(remote);
      assert.equal(res.status, 401);
      assert.equal(res.headers.get("www-authenticate"), "Bearer");
      const body = await res.json();
      assert.equal(body.code, "unauthenticated");
      assert.match(body.message, /no API keys configured/);
      assert.match(body.message, /other machines only with a key/);
      for (const name of ["API_KEYS", "API_KEYS_FILE", "BROWSER_AUTH=off"]) assert.ok(body.message.includes(name), name);

      const withKey = await connectCall(remote, { Authorization: `Bearer ${K1}` });
      assert.equal(withKey.status, 401, "no key is accepted when none is configured");
      assert.match((await withKey.json()).message, /no API keys configured/);

      const err = await createClient(NoseEmbedderService, transports(remote)[1][1])
        .healthCheck({ service: "" })
        .then(
          () => undefined,
          (e: unknown) => ConnectError.from(e),
        );
      assert.equal(err?.code, Code.Unauthenticated, err?.message);

      const { err: grpcErr, res: grpcRes } = await grpcCall(remote);
      assert.equal(grpcErr, null, "the gateway reaches the server over the network without a key");
      assert.ok(["SERVING", "NOT_SERVING"].includes(grpcRes.status));
    },
  );
});
