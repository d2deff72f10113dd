import assert from "node:assert/strict";
import { test } from "node:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { assertServable, ConfigError, loadConfig } from "./config.js";

test("defaults: port 50052, bundled model and card, local folder store, embedded PostgreSQL", () => {
  const c = loadConfig({});
  assert.equal(c.port, 50052);
  assert.match(c.modelPath, /models\/nose-embedder\.onnx$/);
  assert.match(c.modelCardPath!, /models\/nose-embedder\.json$/);
  assert.equal(c.modelInputSize, 224);
  assert.equal(c.maxImageBytes, 10 * 1024 * 1024);
  assert.equal(c.s3, undefined);
  assert.equal(c.pg, undefined);
  assert.match(c.objectDir, /data\/objects$/);
  assert.equal(c.logLevel, "info");
});

test("MODEL_PRECISION picks the quantised variant next to MODEL_PATH and keeps MODEL_PATH's card", () => {
  assert.equal(loadConfig({}).modelPrecision, "auto");
  assert.match(loadConfig({}).modelPath, /models\/nose-embedder\.onnx$/);
  const c = loadConfig({ MODEL_PATH: "/models/embedder_model.onnx", MODEL_PRECISION: "INT8" });
  assert.equal(c.modelPrecision, "int8");
  assert.equal(c.modelPath, "/models/embedder_model.int8.onnx");
  assert.equal(c.modelCardPath, "/models/embedder_model.json");
  assert.match(loadConfig({ MODEL_PRECISION: "fp16" }).modelPath, /models\/nose-embedder\.fp16\.onnx$/);
  assert.throws(() => loadConfig({ MODEL_PRECISION: "int4" }), /MODEL_PRECISION="int4" must be one of auto, fp32, int8, fp16/);
});

test("MODEL_THREAD_SPINNING: on by default (ONNX Runtime's own default), off on request, a bad value named", () => {
  assert.equal(loadConfig({}).modelThreadSpinning, true);
  assert.equal(loadConfig({ MODEL_THREAD_SPINNING: "false" }).modelThreadSpinning, false);
  assert.throws(() => loadConfig({ MODEL_THREAD_SPINNING: "sometimes" }), /MODEL_THREAD_SPINNING="sometimes" must be true or false/);
});

test("the old server's variables are honoured", () => {
  const c = loadConfig({
    GRPC_PORT: "6000",
    MODEL_PATH: "/models/embedder_model.onnx",
    MODEL_INPUT_SIZE: "256",
    NCP_ACCESS_KEY: "ak",
    NCP_SECRET_KEY: "sk",
    NCP_BUCKET_NAME: "bucket",
    NCP_ENDPOINT: "https://kr.object.ncloudstorage.com",
    DB_HOST: "db",
    DB_PORT: "5433",
    DB_USERNAME: "ml",
    DB_PASSWORD: "pw",
    DB_DATABASE: "ml_server",
    LOG_LEVEL: "WARNING",
  });
  assert.equal(c.port, 6000);
  assert.equal(c.modelPath, "/models/embedder_model.onnx");
  assert.equal(c.modelCardPath, "/models/embedder_model.json");
  assert.equal(c.modelInputSize, 256);
  assert.deepEqual(c.s3, {
    endpoint: "https://kr.object.ncloudstorage.com",
    region: "kr-standard",
    accessKeyId: "ak",
    secretAccessKey: "sk",
    bucket: "bucket",
  });
  assert.deepEqual(c.pg, { host: "db", port: 5433, user: "ml", password: "pw", database: "ml_server" });
  assert.equal(c.logLevel, "warn");
});

test("every problem is reported at once", () => {
  assert.throws(
    () => loadConfig({ GRPC_PORT: "70000", MODEL_INPUT_SIZE: "big", NCP_ENDPOINT: "not a url", LOG_LEVEL: "chatty" }),
    (e: unknown) => e instanceof ConfigError && e.problems.length === 5,
  );
});

test("browser client: parity bound, client folder, CORS origins", () => {
  const d = loadConfig({});
  assert.equal(d.clientParityMinCosine, 0.999);
  assert.match(d.clientDir, /dist\/client$/);
  assert.equal(d.serveClient, true);
  assert.deepEqual(d.corsOrigins, []);
  const c = loadConfig({
    CLIENT_PARITY_MIN_COSINE: "0.995",
    CLIENT_DIR: "/srv/app",
    SERVE_CLIENT: "false",
    CORS_ORIGINS: " https://app.example.com, http://localhost:5173/ ",
  });
  assert.equal(c.clientParityMinCosine, 0.995);
  assert.equal(c.clientDir, "/srv/app");
  assert.equal(c.serveClient, false);
  assert.deepEqual(c.corsOrigins, ["https://app.example.com", "http://localhost:5173"]);
  assert.throws(
    () =>
      loadConfig({
        CLIENT_PARITY_MIN_COSINE: "1.5",
        SERVE_CLIENT: "maybe",
        CORS_ORIGINS: "https://ok.example, *, https://x.example/path, ftp://y.example",
      }),
    (e: unknown) => e instanceof ConfigError && e.problems.length === 5,
  );
});

test("dependency timeouts and pool size: defaults, overrides, and out-of-range values reported by name", () => {
  const d = loadConfig({});
  assert.deepEqual(
    [
      d.storageTimeoutMs,
      d.storageConnectTimeoutMs,
      d.storageMaxAttempts,
      d.dbTimeoutMs,
      d.dbConnectTimeoutMs,
      d.dbPoolMax,
      d.dbIdleTimeoutMs,
    ],
    [8000, 2000, 2, 10_000, 3000, 10, 30_000],
  );
  const c = loadConfig({
    STORAGE_TIMEOUT_MS: "1500",
    STORAGE_MAX_ATTEMPTS: "3",
    DB_TIMEOUT_MS: "1000",
    DB_POOL_MAX: "4",
    DB_IDLE_TIMEOUT_MS: "1000",
  });
  assert.deepEqual([c.storageTimeoutMs, c.storageMaxAttempts, c.dbTimeoutMs, c.dbPoolMax, c.dbIdleTimeoutMs], [1500, 3, 1000, 4, 1000]);
  assert.throws(
    () => loadConfig({ STORAGE_TIMEOUT_MS: "0", DB_POOL_MAX: "many" }),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.deepEqual([...e.problems].sort(), [
        'DB_POOL_MAX="many" must be an integer between 1 and 1000',
        'STORAGE_TIMEOUT_MS="0" must be an integer between 100 and 600000',
      ]);
      return true;
    },
  );
});

test("API keys: a comma list and a file (comments, blank lines); a weak key is refused without being printed", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "nosepaw-keys-"));
  const file = path.join(dir, "keys");
  writeFileSync(file, "# platform gateway\nfile-key-0123456789abcdef\n\n  other-file-key-0123456789  \n");
  const c = loadConfig({ GRPC_HOST: "127.0.0.1", API_KEYS: " env-key-0123456789abcdef ,", API_KEYS_FILE: file });
  assert.deepEqual(c.apiKeys, ["env-key-0123456789abcdef", "file-key-0123456789abcdef", "other-file-key-0123456789"]);
  assert.equal(c.browserAuth, true, "configured keys are required on the browser protocols, even on loopback");
  assert.equal(c.grpcAuth, false, "the gateway's gRPC stays open unless GRPC_AUTH=required");
  assert.throws(
    () => loadConfig({ API_KEYS: "tooshort,has space in it 0123456789", API_KEYS_FILE: path.join(dir, "missing") }),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      const text = e.problems.join("\n");
      assert.match(text, /API_KEYS: key 1 must be at least 16 printable characters/);
      assert.match(text, /API_KEYS: key 2 must be/);
      assert.match(text, /API_KEYS_FILE=".*missing" cannot be read \(ENOENT\)/);
      assert.doesNotMatch(text, /tooshort|has space/, "keys are never echoed");
      return true;
    },
  );
});

test("exposure: beyond loopback with Connect/gRPC-Web on and no keys starts, serving browser calls from this machine only; keys, BROWSER_AUTH=off or BROWSER_PROTOCOLS=false as configured; explicit requirements without keys are refused", () => {
  for (const host of ["0.0.0.0", "::", "10.0.0.5"]) {
    const c = loadConfig({ GRPC_HOST: host });
    assert.equal(c.browserAuth, true, host);
    assert.equal(c.browserLoopbackWithoutKey, true, `${host}: browser calls from other machines are refused, from this one served`);
    assert.equal(c.grpcAuth, false, `${host}: the gateway's gRPC stays open`);
    assertServable(c);
  }
  assert.equal(loadConfig({}).browserLoopbackWithoutKey, true, "the default bind (0.0.0.0) without keys");
  for (const host of ["127.0.0.1", "127.0.0.53", "::1", "[::1]", "localhost"]) {
    const c = loadConfig({ GRPC_HOST: host });
    assert.equal(c.browserAuth, false, host);
    assert.equal(c.browserLoopbackWithoutKey, false, host);
    assertServable(c);
  }
  const keyed = loadConfig({ API_KEYS: "a-key-0123456789abcdef" });
  assert.equal(keyed.browserAuth, true);
  assert.equal(keyed.browserLoopbackWithoutKey, false, "with keys, calls from this machine need one too");
  assertServable(keyed);
  const proxied = loadConfig({ BROWSER_AUTH: "off" });
  assert.equal(proxied.browserAuth, false);
  assert.equal(proxied.browserLoopbackWithoutKey, false);
  assertServable(proxied);
  const grpcOnly = loadConfig({ BROWSER_PROTOCOLS: "false" });
  assert.equal(grpcOnly.browserProtocols, false);
  assert.equal(grpcOnly.browserAuth, false);
  assert.equal(grpcOnly.browserLoopbackWithoutKey, false);
  assertServable(grpcOnly);

  for (const host of ["127.0.0.1", "0.0.0.0"]) {
    assert.throws(
      () => assertServable(loadConfig({ GRPC_HOST: host, BROWSER_AUTH: "required" })),
      /BROWSER_AUTH=required needs API_KEYS or API_KEYS_FILE/,
      host,
    );
    assert.throws(
      () => assertServable(loadConfig({ GRPC_HOST: host, GRPC_AUTH: "required" })),
      /GRPC_AUTH=required needs API_KEYS or API_KEYS_FILE/,
      host,
    );
  }
  assert.throws(
    () => loadConfig({ BROWSER_AUTH: "maybe", GRPC_AUTH: "yes" }),
    (e: unknown) => e instanceof ConfigError && e.problems.length === 2,
  );
});

test("rate limits: browsers limited by default, the gateway not; 0 turns a limit off", () => {
  const d = loadConfig({});
  assert.deepEqual(d.browserRateLimit, { rate: 10, burst: 60 });
  assert.equal(d.grpcRateLimit, undefined);
  const c = loadConfig({ BROWSER_RATE_LIMIT: "0", GRPC_RATE_LIMIT: "200", GRPC_RATE_BURST: "400" });
  assert.equal(c.browserRateLimit, undefined);
  assert.deepEqual(c.grpcRateLimit, { rate: 200, burst: 400 });
  assert.throws(
    () => loadConfig({ BROWSER_RATE_LIMIT: "-1", BROWSER_RATE_BURST: "0" }),
    (e: unknown) => e instanceof ConfigError && e.problems.length === 2,
  );
});

test("model releases and refused photos: off by default; store or an absolute folder; bad values named", () => {
  const d = loadConfig({});
  assert.equal(d.modelReleases, undefined);
  assert.equal(d.modelReleasePollSeconds, 60);
  assert.equal(d.modelReleaseCacheDir, path.resolve(d.dataDir, "model-releases"));
  assert.equal(d.refusedPhotoRetentionDays, 90);
  assert.deepEqual(loadConfig({ MODEL_RELEASES: "store" }).modelReleases, { source: "store" });
  assert.deepEqual(loadConfig({ MODEL_RELEASES: "OFF" }).modelReleases, undefined);
  assert.deepEqual(loadConfig({ MODEL_RELEASES: "/srv/releases/" }).modelReleases, { source: "folder", dir: "/srv/releases" });
  assert.equal(loadConfig({ MODEL_RELEASE_POLL_SECONDS: "0.5", REFUSED_PHOTO_RETENTION_DAYS: "7" }).modelReleasePollSeconds, 0.5);
  assert.throws(
    () => loadConfig({ MODEL_RELEASES: "releases", MODEL_RELEASE_POLL_SECONDS: "0", REFUSED_PHOTO_RETENTION_DAYS: "0" }),
    (e: ConfigError) =>
      e.problems.length === 3 &&
      /MODEL_RELEASES="releases" must be off, store .* or an absolute folder path/.test(e.problems.join("\n")) &&
      /MODEL_RELEASE_POLL_SECONDS/.test(e.problems.join("\n")) &&
      /REFUSED_PHOTO_RETENTION_DAYS/.test(e.problems.join("\n")),
  );
});
