import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import http2 from "node:http2";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { gatewayClient } from "./support/grpc-client.js";
import { makeTestModel, startServer, type RunningServer } from "./support/server.js";

/**
 * The plain-HTTP routes of the port: the model and its card for clients that
 * embed on the device, the built browser client, CORS. Requests go out as a
 * browser's would (fetch over HTTP/1.1) and over h2c; traversal attempts are
 * sent as raw request targets, since fetch would normalise them away.
 */

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** One HTTP/1.1 request with the request target exactly as given. */
function raw(
  port: number,
  target: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: "127.0.0.1", port, path: target, method: opts.method ?? "GET", headers: opts.headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(opts.body);
  });
}

/** One request over HTTP/2 with prior knowledge (h2c), as gRPC clients connect. */
function h2(port: number, target: string, method = "GET", headers: Record<string, string> = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on("error", reject);
    const req = session.request({ ":path": target, ":method": method, ...headers });
    let head: Record<string, string | string[] | undefined> = {};
    const chunks: Buffer[] = [];
    req.on("response", (h) => (head = h as typeof head));
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      session.close();
      resolve({ status: Number(head[":status"]), headers: head, body: Buffer.concat(chunks) });
    });
    req.on("error", reject);
    req.end();
  });
}

const ORIGIN = "https://app.example.com";
const modelDir = mkdtempSync(path.join(tmpdir(), "nosepaw-model-"));
const CARDED = makeTestModel(path.join(modelDir, "pattern.onnx"), { kind: "pattern", card: true });
const BARE = makeTestModel(path.join(modelDir, "bare.onnx"), { kind: "pattern" });
const sha256 = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex");

/** A built client: dist/client-like folder, and a file beside it that must stay unreachable. */
function clientBuild(): string {
  const base = mkdtempSync(path.join(tmpdir(), "nosepaw-web-"));
  writeFileSync(path.join(base, "secret.txt"), "TOP-SECRET");
  const dir = path.join(base, "client");
  mkdirSync(path.join(dir, "assets"), { recursive: true });
  writeFileSync(path.join(dir, "index.html"), "<!doctype html><title>nosepaw</title>");
  writeFileSync(path.join(dir, "assets", "app.js"), "console.log('nose');");
  writeFileSync(path.join(dir, "assets", "worker.mjs"), "export {};");
  writeFileSync(path.join(dir, "assets", "app.css"), "body{}");
  writeFileSync(path.join(dir, "assets", "ort.wasm"), Buffer.from([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]));
  writeFileSync(path.join(dir, "assets", "data.json"), "{}");
  writeFileSync(path.join(dir, "assets", "logo.svg"), "<svg xmlns='http://www.w3.org/2000/svg'/>");
  writeFileSync(path.join(dir, "assets", "icon.png"), Buffer.from([0x89, 0x50, 0x4e, 0x47]));
  writeFileSync(path.join(dir, ".env"), "SECRET=1");
  return dir;
}

describe("model, card, browser client and CORS on the gRPC port", () => {
  let server: RunningServer;
  let base: string;
  const clientDir = clientBuild();

  before(async () => {
    server = await startServer({ MODEL_PATH: CARDED, CLIENT_DIR: clientDir, CORS_ORIGINS: `${ORIGIN}, http://localhost:5173` });
    base = `http://${server.address}`;
  });
  after(async () => {
    await server?.stop();
  });

  test("GET /model/nose-embedder.onnx over HTTP/1.1 and h2: the file's bytes, ETag = sha256, 304 on If-None-Match, HEAD", async () => {
    const file = readFileSync(CARDED);
    const etag = `"${sha256(CARDED)}"`;
    const res = await fetch(`${base}/model/nose-embedder.onnx`);
    assert.equal(res.status, 200);
    assert.ok(Buffer.from(await res.arrayBuffer()).equals(file), "the bytes of MODEL_PATH");
    assert.equal(res.headers.get("etag"), etag);
    assert.equal(res.headers.get("cache-control"), "no-cache");
    assert.equal(res.headers.get("content-type"), "application/octet-stream");
    assert.equal(res.headers.get("x-model-version"), "test-pattern-1");
    assert.equal(res.headers.get("cross-origin-resource-policy"), "same-origin");

    const again = await fetch(`${base}/model/nose-embedder.onnx`, { headers: { "If-None-Match": etag } });
    assert.equal(again.status, 304);
    assert.equal((await again.arrayBuffer()).byteLength, 0);
    const changed = await fetch(`${base}/model/nose-embedder.onnx`, { headers: { "If-None-Match": '"0000"' } });
    assert.equal(changed.status, 200);
    await changed.arrayBuffer();

    const head = await raw(server.port, "/model/nose-embedder.onnx", { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.equal(head.headers["content-length"], String(file.length));
    assert.equal(head.headers.etag, etag);
    assert.equal(head.body.length, 0);

    const viaH2 = await h2(server.port, "/model/nose-embedder.onnx");
    assert.equal(viaH2.status, 200);
    assert.ok(viaH2.body.equals(file));
    assert.equal(viaH2.headers.etag, etag);
    assert.equal((await h2(server.port, "/model/nose-embedder.onnx", "GET", { "if-none-match": etag })).status, 304);
    assert.equal((await h2(server.port, "/model/card.json", "HEAD")).status, 200);

    assert.equal((await fetch(`${base}/model/nose-embedder.onnx`, { method: "POST", body: "x" })).status, 405);
  });

  test("GET /model/card.json is the loaded card with the running version", async () => {
    const loaded = await server.waitForLog((l) => l.msg === "model loaded");
    const res = await fetch(`${base}/model/card.json`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "application/json");
    assert.equal(res.headers.get("cache-control"), "no-cache");
    const card = await res.json();
    const onDisk = JSON.parse(readFileSync(CARDED.replace(/\.onnx$/, ".json"), "utf8"));
    assert.equal(card.version, loaded.version);
    assert.equal(card.version, "test-pattern-1");
    assert.deepEqual(card.calibration, onDisk.calibration);
    assert.equal(card.sha256, sha256(CARDED));
    assert.equal(res.headers.get("x-model-version"), card.version);
  });

  test("the built client at /: index.html, content types, COOP/COEP, HEAD, 404s", async () => {
    const index = await fetch(`${base}/`);
    assert.equal(index.status, 200);
    assert.equal(await index.text(), "<!doctype html><title>nosepaw</title>");
    assert.equal(index.headers.get("content-type"), "text/html; charset=utf-8");
    assert.equal(index.headers.get("cross-origin-opener-policy"), "same-origin");
    assert.equal(index.headers.get("cross-origin-embedder-policy"), "require-corp");
    // Security headers: a strict CSP (the app's files only, WASM compilation allowed), no framing, no sniffing, no referrer.
    const csp = index.headers.get("content-security-policy") ?? "";
    for (const directive of [
      "default-src 'self'",
      "script-src 'self' 'wasm-unsafe-eval'",
      "worker-src 'self'",
      "connect-src 'self'",
      "img-src 'self' blob: data:",
      "object-src 'none'",
      "frame-ancestors 'none'",
    ]) {
      assert.ok(csp.split(/;\s*/).includes(directive), `CSP lacks ${directive}: ${csp}`);
    }
    assert.doesNotMatch(csp, /unsafe-inline|'unsafe-eval'/);
    assert.equal(index.headers.get("x-content-type-options"), "nosniff");
    assert.equal(index.headers.get("referrer-policy"), "no-referrer");
    assert.equal(index.headers.get("x-frame-options"), "DENY");
    const types: Record<string, string> = {
      "/index.html": "text/html; charset=utf-8",
      "/assets/app.js": "text/javascript; charset=utf-8",
      "/assets/worker.mjs": "text/javascript; charset=utf-8",
      "/assets/app.css": "text/css; charset=utf-8",
      "/assets/ort.wasm": "application/wasm",
      "/assets/data.json": "application/json",
      "/assets/logo.svg": "image/svg+xml",
      "/assets/icon.png": "image/png",
    };
    for (const [p, type] of Object.entries(types)) {
      const r = await fetch(`${base}${p}?v=1`);
      assert.equal(r.status, 200, p);
      assert.equal(r.headers.get("content-type"), type, p);
      assert.equal(r.headers.get("cross-origin-embedder-policy"), "require-corp", p);
      // workers take their policy from their own script's response
      assert.equal(r.headers.get("content-security-policy"), csp, p);
      assert.ok(Buffer.from(await r.arrayBuffer()).equals(readFileSync(path.join(clientDir, p))), p);
    }
    const etag = (await fetch(`${base}/assets/app.js`)).headers.get("etag")!;
    assert.equal((await fetch(`${base}/assets/app.js`, { headers: { "If-None-Match": etag } })).status, 304);
    const head = await raw(server.port, "/assets/ort.wasm", { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.equal(head.headers["content-length"], "8");
    assert.equal(head.body.length, 0);
    assert.equal((await h2(server.port, "/assets/app.js")).body.toString(), "console.log('nose');");
    assert.equal((await fetch(`${base}/missing.js`)).status, 404);
    assert.equal((await fetch(`${base}/.env`)).status, 404, "dotfiles are not served");
  });

  test("path traversal is refused, encoded forms included", async () => {
    const attempts = [
      "/../secret.txt",
      "/assets/../../secret.txt",
      "/%2e%2e/secret.txt",
      "/%2E%2E%2Fsecret.txt",
      "/..%2fsecret.txt",
      "/assets/..%2f..%2fsecret.txt",
      "/assets/..%5c..%5csecret.txt",
      "/..\\secret.txt",
      "/%252e%252e/secret.txt",
      "/.%2e/secret.txt",
      "/%c0%ae%c0%ae/secret.txt",
      "/assets%00/../../secret.txt",
      "//../secret.txt",
    ];
    for (const target of attempts) {
      const r = await raw(server.port, target);
      assert.ok(r.status === 400 || r.status === 404, `${target} answered ${r.status}`);
      assert.ok(!r.body.toString().includes("TOP-SECRET"), target);
    }
    const viaH2 = await h2(server.port, "/%2e%2e/secret.txt");
    assert.equal(viaH2.status, 400);
    assert.ok(!viaH2.body.toString().includes("TOP-SECRET"));
  });

  test("CORS: a configured origin may preflight and call the RPCs and the model; another may not", async () => {
    const rpc = "/nose_embedder.NoseEmbedderService/HealthCheck";
    const preflight = (
      origin: string,
      target: string,
      method = "POST",
      headers = "content-type,connect-protocol-version,connect-timeout-ms",
    ) =>
      raw(server.port, target, {
        method: "OPTIONS",
        headers: { Origin: origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers },
      });
    const ok = await preflight(ORIGIN, rpc);
    assert.equal(ok.status, 204);
    assert.equal(ok.headers["access-control-allow-origin"], ORIGIN);
    const methods = String(ok.headers["access-control-allow-methods"]).split(/,\s*/);
    assert.ok(methods.includes("POST") && methods.includes("GET"));
    const allowedHeaders = String(ok.headers["access-control-allow-headers"]).toLowerCase().split(/,\s*/);
    for (const h of ["content-type", "connect-protocol-version", "connect-timeout-ms", "x-grpc-web", "x-user-agent", "grpc-timeout"]) {
      assert.ok(allowedHeaders.includes(h), h);
    }
    assert.match(String(ok.headers.vary), /Origin/);
    assert.equal((await preflight("http://localhost:5173", rpc)).status, 204);

    const denied = await preflight("https://evil.example", rpc);
    assert.equal(denied.status, 403);
    assert.equal(denied.headers["access-control-allow-origin"], undefined);

    // The actual call: allowed origin sees the CORS headers, another gets none (its browser withholds the answer).
    const call = (origin: string) =>
      fetch(`${base}${rpc}`, {
        method: "POST",
        headers: { "Content-Type": "application/json", "Connect-Protocol-Version": "1", Origin: origin },
        body: JSON.stringify({ service: "NoseEmbedderService" }),
      });
    const allowed = await call(ORIGIN);
    assert.equal(allowed.status, 200);
    assert.equal((await allowed.json()).status, "SERVING");
    assert.equal(allowed.headers.get("access-control-allow-origin"), ORIGIN);
    assert.match(allowed.headers.get("access-control-expose-headers") ?? "", /Grpc-Status/);
    const other = await call("https://evil.example");
    await other.arrayBuffer();
    assert.equal(other.headers.get("access-control-allow-origin"), null);

    const model = await preflight(ORIGIN, "/model/nose-embedder.onnx", "GET", "if-none-match");
    assert.equal(model.status, 204);
    assert.equal(model.headers["access-control-allow-origin"], ORIGIN);
    assert.equal((await preflight("https://evil.example", "/model/card.json", "GET")).status, 403);
    const fetched = await fetch(`${base}/model/card.json`, { headers: { Origin: ORIGIN } });
    await fetched.arrayBuffer();
    assert.equal(fetched.headers.get("access-control-allow-origin"), ORIGIN);
    assert.match(fetched.headers.get("access-control-expose-headers") ?? "", /ETag/);

    // gRPC over h2 still reaches the services through the same handler.
    const client = gatewayClient(server.address);
    try {
      assert.equal((await client.call("HealthCheck", { service: "" })).status, "SERVING");
    } finally {
      client.close();
    }
  });
});

describe("without a card, a client build or CORS origins; with the model missing", () => {
  test("a model without a card: minimal card with the fingerprint version; / explains the missing build; no origin may preflight", async () => {
    const server = await startServer({ MODEL_PATH: BARE, CLIENT_DIR: path.join(modelDir, "no-such-build") });
    try {
      const loaded = await server.waitForLog((l) => l.msg === "model loaded");
      const card = await (await fetch(`http://${server.address}/model/card.json`)).json();
      assert.equal(card.version, loaded.version);
      assert.equal(card.version, `sha256:${loaded.fingerprint}`);
      assert.equal(card.sha256, sha256(BARE));
      assert.deepEqual(card.input.shape, [null, 3, 224, 224]);
      assert.deepEqual(card.output.shape, [null, 512]);
      const model = await fetch(`http://${server.address}/model/nose-embedder.onnx`);
      assert.ok(Buffer.from(await model.arrayBuffer()).equals(readFileSync(BARE)));
      assert.equal(model.headers.get("x-model-version"), card.version);

      const root = await fetch(`http://${server.address}/`);
      assert.equal(root.status, 404);
      const hint = await root.text();
      assert.match(hint, /no browser client built at .*no-such-build .*CLIENT_DIR/);
      assert.equal(hint.trim().split("\n").length, 1);

      const preflight = await raw(server.port, "/nose_embedder.NoseEmbedderService/HealthCheck", {
        method: "OPTIONS",
        headers: { Origin: ORIGIN, "Access-Control-Request-Method": "POST" },
      });
      assert.equal(preflight.status, 403);
      assert.equal(preflight.headers["access-control-allow-origin"], undefined);
    } finally {
      await server.stop();
    }
  });

  test("the model routes answer 503 with a JSON error while no model is loaded; SERVE_CLIENT=false turns / off", async () => {
    const server = await startServer({ MODEL_PATH: path.join(modelDir, "missing.onnx"), CLIENT_DIR: clientBuild(), SERVE_CLIENT: "false" });
    try {
      for (const route of ["/model/nose-embedder.onnx", "/model/card.json"]) {
        const res = await fetch(`http://${server.address}${route}`);
        assert.equal(res.status, 503, route);
        assert.equal(res.headers.get("content-type"), "application/json");
        const body = await res.json();
        assert.match(body.error, /model could not be loaded: model file not found/);
        assert.equal((await raw(server.port, route, { method: "HEAD" })).status, 503);
      }
      const root = await fetch(`http://${server.address}/`);
      assert.equal(root.status, 404);
      assert.match(await root.text(), /SERVE_CLIENT=false/);
    } finally {
      await server.stop();
    }
  });
});
