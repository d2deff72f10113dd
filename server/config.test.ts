import assert from "node:assert/strict";
import { test } from "node:test";
import { ConfigError, loadConfig } from "./config.js";

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
  assert.deepEqual(c.s3, { endpoint: "https://kr.object.ncloudstorage.com", region: "kr-standard", accessKeyId: "ak", secretAccessKey: "sk", bucket: "bucket" });
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
    () => loadConfig({ CLIENT_PARITY_MIN_COSINE: "1.5", SERVE_CLIENT: "maybe", CORS_ORIGINS: "https://ok.example, *, https://x.example/path, ftp://y.example" }),
    (e: unknown) => e instanceof ConfigError && e.problems.length === 5,
  );
});

test("dependency timeouts and pool size: defaults, overrides, and out-of-range values reported by name", () => {
  const d = loadConfig({});
  assert.deepEqual(
    [d.storageTimeoutMs, d.storageConnectTimeoutMs, d.storageMaxAttempts, d.dbTimeoutMs, d.dbConnectTimeoutMs, d.dbPoolMax, d.dbIdleTimeoutMs],
    [8000, 2000, 2, 10_000, 3000, 10, 30_000],
  );
  const c = loadConfig({ STORAGE_TIMEOUT_MS: "1500", STORAGE_MAX_ATTEMPTS: "3", DB_TIMEOUT_MS: "1000", DB_POOL_MAX: "4", DB_IDLE_TIMEOUT_MS: "1000" });
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
