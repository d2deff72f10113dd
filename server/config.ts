import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import path from "node:path";
import { isLoopback } from "./http/auth.js";
import type { RateLimit } from "./http/rate-limit.js";

import { ROOT } from "./package-root.js";

export { ROOT };

export type LogLevel = "debug" | "info" | "warn" | "error";

export interface S3Config {
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  bucket: string;
}

export interface PgConfig {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
}

export interface Config {
  host: string;
  port: number;
  /** The model file loaded: MODEL_PATH, or its variant when MODEL_PRECISION names one (with "auto", MODEL_PATH: the holder picks). */
  modelPath: string;
  /**
   * Which variant of MODEL_PATH runs: "fp32" the file itself, "int8"/"fp16" <name>.int8.onnx / <name>.fp16.onnx
   * (`npm run model:quantize`), "auto" the int8 one where <name>.variants.json records it for this very file, else fp32.
   */
  modelPrecision: ModelPrecision;
  /** Model card (calibration, version); optional for user models. */
  modelCardPath: string | undefined;
  modelInputSize: number;
  intraOpThreads: number;
  /** ONNX Runtime's intra-op threads spin between the operators of a run instead of sleeping (its own default). */
  modelThreadSpinning: boolean;
  /** Worker threads that decode and resize photos. */
  preprocessWorkers: number;
  /** Photos that may wait for a worker before requests get SERVICE_UNAVAILABLE. */
  maxPending: number;
  /** Decode every photo at full size (Pillow-exact tensors) instead of shrinking large JPEGs while decoding. */
  exactPreprocess: boolean;
  /** Keypoint geometry as a second factor of SAME, transfer approval and duplicate refusal (GEOMETRY, default on). */
  geometry: boolean;
  batchWindowMs: number;
  maxBatch: number;
  maxImageBytes: number;
  maxImagePixels: number;
  dataDir: string;
  /** Set when NCP_ENDPOINT is: S3-compatible storage; else a local folder. */
  s3: S3Config | undefined;
  objectDir: string;
  /** Set when DB_HOST is: PostgreSQL server; else embedded PGlite. */
  pg: PgConfig | undefined;
  pgliteDir: string;
  /** Object store (S3): deadline for one operation, retries included; TCP connect limit; attempts. */
  storageTimeoutMs: number;
  storageConnectTimeoutMs: number;
  storageMaxAttempts: number;
  /** PostgreSQL: limit for one statement; for opening (or waiting for) a connection; pool size; idle close. */
  dbTimeoutMs: number;
  dbConnectTimeoutMs: number;
  dbPoolMax: number;
  dbIdleTimeoutMs: number;
  /** hnsw.ef_search of nearest-pet queries: recall of 1:N identification against its cost. */
  hnswEfSearch: number;
  logLevel: LogLevel;
  /** Prometheus metrics at GET /metrics on the service port. */
  metricsEnabled: boolean;
  /** How long registry counts are reused between scrapes. */
  metricsRegistryCacheMs: number;
  /** OTLP/HTTP URL spans are posted to; undefined: tracing off. */
  otlpTracesUrl: string | undefined;
  /** service.name of the spans. */
  otelServiceName: string;
  /** Milliseconds between span exports. */
  otelExportDelayMs: number;
  shutdownTimeoutMs: number;
  /** Cosine a client-computed embedding must reach against the server's own. */
  clientParityMinCosine: number;
  /** The built browser client, served at / when the folder exists. */
  clientDir: string;
  serveClient: boolean;
  /** Other origins allowed (CORS) on the RPC and model routes; empty: same origin only. */
  corsOrigins: string[];
  /** API keys accepted on the RPCs (API_KEYS, API_KEYS_FILE); empty: none configured. */
  apiKeys: string[];
  /** Connect and gRPC-Web on the port (browsers, curl); false: plain gRPC only. */
  browserProtocols: boolean;
  /**
   * Connect and gRPC-Web calls need an API key: when BROWSER_AUTH=required,
   * or (BROWSER_AUTH=auto) when keys are configured or GRPC_HOST is not loopback.
   */
  browserAuth: boolean;
  /**
   * BROWSER_AUTH=auto, no keys, bound beyond loopback: Connect and gRPC-Web
   * calls from this machine (loopback peer) are served without a key, the
   * rest are refused, so a bare start serves the capture app on localhost
   * and the gateway's gRPC without exposing the browser protocols.
   */
  browserLoopbackWithoutKey: boolean;
  browserAuthSetting: "auto" | "required" | "off";
  /** Plain gRPC calls (the gateway) need an API key. */
  grpcAuth: boolean;
  /**
   * Where promoted model releases are watched (MODEL_RELEASES): the object
   * store, or a folder with the same layout; undefined (off, the default):
   * MODEL_PATH only.
   */
  modelReleases: { source: "store" } | { source: "folder"; dir: string } | undefined;
  /** Seconds between looks at the release pointer, each jittered to 0.5x..1.5x. */
  modelReleasePollSeconds: number;
  /** Local folder the adopted releases are downloaded to. */
  modelReleaseCacheDir: string;
  /** Days the photos of refused registrations (with training consent) are kept. */
  refusedPhotoRetentionDays: number;
  /** Per-client limits; undefined: unlimited. */
  browserRateLimit: RateLimit | undefined;
  grpcRateLimit: RateLimit | undefined;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join("\n  - ")}`);
    this.name = "ConfigError";
  }
}

type Env = Record<string, string | undefined>;

export const MODEL_PRECISIONS = ["auto", "fp32", "int8", "fp16"] as const;
export type ModelPrecision = (typeof MODEL_PRECISIONS)[number];

/** The file of a model's variant: models/x.onnx -> models/x.int8.onnx; fp32 (and auto, until the holder picks) is the file itself. */
export function modelVariantPath(modelPath: string, precision: ModelPrecision): string {
  if (precision === "fp32" || precision === "auto") return modelPath;
  const stem = modelPath.endsWith(".onnx") ? modelPath.slice(0, -".onnx".length) : modelPath;
  return `${stem}.${precision}.onnx`;
}

/**
 * Reads the old server's variables (GRPC_PORT, MODEL_PATH, MODEL_INPUT_SIZE,
 * NCP_*, DB_*, LOG_LEVEL) and ours, and reports every problem at once so an
 * operator fixes a deployment in one go.
 */
export function loadConfig(env: Env = process.env): Config {
  const problems: string[] = [];
  const str = (name: string, fallback: string) => {
    const v = env[name];
    return v === undefined || v.trim() === "" ? fallback : v.trim();
  };
  const int = (name: string, fallback: number, min: number, max: number) => {
    const raw = env[name];
    if (raw === undefined || raw.trim() === "") return fallback;
    const n = Number(raw.trim());
    if (!Number.isInteger(n) || n < min || n > max) {
      problems.push(`${name}=${JSON.stringify(raw)} must be an integer between ${min} and ${max}`);
      return fallback;
    }
    return n;
  };
  const num = (name: string, fallback: number, ok: (n: number) => boolean, range: string) => {
    const raw = env[name];
    if (raw === undefined || raw.trim() === "") return fallback;
    const n = Number(raw.trim());
    if (!Number.isFinite(n) || !ok(n)) {
      problems.push(`${name}=${JSON.stringify(raw)} must be a number ${range}`);
      return fallback;
    }
    return n;
  };
  const bool = (name: string, fallback: boolean) => {
    const raw = env[name]?.trim().toLowerCase();
    if (raw === undefined || raw === "") return fallback;
    if (["true", "1", "yes", "on"].includes(raw)) return true;
    if (["false", "0", "no", "off"].includes(raw)) return false;
    problems.push(`${name}=${JSON.stringify(env[name])} must be true or false`);
    return fallback;
  };

  const dataDir = path.resolve(str("DATA_DIR", path.join(ROOT, "data")));
  const basePath = path.resolve(str("MODEL_PATH", path.join(ROOT, "models", "nose-embedder.onnx")));
  const precisionRaw = str("MODEL_PRECISION", "auto").toLowerCase();
  let modelPrecision: ModelPrecision = "auto";
  if ((MODEL_PRECISIONS as readonly string[]).includes(precisionRaw)) modelPrecision = precisionRaw as ModelPrecision;
  else problems.push(`MODEL_PRECISION=${JSON.stringify(env.MODEL_PRECISION)} must be one of ${MODEL_PRECISIONS.join(", ")}`);
  const modelPath = modelVariantPath(basePath, modelPrecision);
  const cardEnv = env.MODEL_CARD_PATH?.trim();
  // A variant keeps the card of the model it was made from (same version, calibration).
  const modelCardPath = cardEnv
    ? path.resolve(cardEnv)
    : basePath.endsWith(".onnx")
      ? basePath.slice(0, -".onnx".length) + ".json"
      : undefined;

  const levelRaw = str("LOG_LEVEL", "info").toLowerCase();
  const levels: Record<string, LogLevel> = {
    debug: "debug",
    info: "info",
    warn: "warn",
    warning: "warn",
    error: "error",
    critical: "error",
  };
  const logLevel = levels[levelRaw];
  if (!logLevel) problems.push(`LOG_LEVEL=${JSON.stringify(env.LOG_LEVEL)} must be one of debug, info, warn, error`);

  let s3: S3Config | undefined;
  const endpoint = env.NCP_ENDPOINT?.trim();
  if (endpoint) {
    try {
      new URL(endpoint);
    } catch {
      problems.push(`NCP_ENDPOINT=${JSON.stringify(endpoint)} is not a URL (expected e.g. https://kr.object.ncloudstorage.com)`);
    }
    const need = ["NCP_ACCESS_KEY", "NCP_SECRET_KEY", "NCP_BUCKET_NAME"].filter((k) => !env[k]?.trim());
    if (need.length) problems.push(`NCP_ENDPOINT is set, so ${need.join(", ")} must be set too`);
    s3 = {
      endpoint,
      region: str("NCP_REGION", "kr-standard"),
      accessKeyId: str("NCP_ACCESS_KEY", ""),
      secretAccessKey: str("NCP_SECRET_KEY", ""),
      bucket: str("NCP_BUCKET_NAME", ""),
    };
  }

  let pg: PgConfig | undefined;
  const dbHost = env.DB_HOST?.trim();
  if (dbHost) {
    pg = {
      host: dbHost,
      port: int("DB_PORT", 5432, 1, 65535),
      user: str("DB_USERNAME", "postgres"),
      password: env.DB_PASSWORD ?? "",
      database: str("DB_DATABASE", "nosepaw"),
    };
  }

  const corsOrigins: string[] = [];
  for (const entry of (env.CORS_ORIGINS ?? "")
    .split(",")
    .map((o) => o.trim())
    .filter(Boolean)) {
    let origin: string | undefined;
    try {
      const u = new URL(entry);
      if ((u.protocol === "http:" || u.protocol === "https:") && u.origin === entry.replace(/\/$/, "")) origin = u.origin;
    } catch {
      /* reported below */
    }
    if (origin) corsOrigins.push(origin);
    else
      problems.push(`CORS_ORIGINS entry ${JSON.stringify(entry)} is not an origin (expected e.g. https://app.example.com, without a path)`);
  }

  // API keys: a comma list and/or a file with one key per line (a mounted
  // secret). Problems name the source and the length, never the key.
  const apiKeys: string[] = [];
  const addKeys = (source: string, keys: string[]) =>
    keys.forEach((k, i) => {
      if (k.length >= 16 && /^[\x21-\x7e]+$/.test(k) && !k.includes(",")) apiKeys.push(k);
      else problems.push(`${source}: key ${i + 1} must be at least 16 printable characters without spaces or commas (it has ${k.length})`);
    });
  addKeys(
    "API_KEYS",
    (env.API_KEYS ?? "")
      .split(",")
      .map((k) => k.trim())
      .filter(Boolean),
  );
  const keysFile = env.API_KEYS_FILE?.trim();
  if (keysFile) {
    let lines: string[] = [];
    try {
      lines = readFileSync(path.resolve(keysFile), "utf8")
        .split(/\r?\n/)
        .map((l) => l.trim())
        .filter((l) => l !== "" && !l.startsWith("#"));
    } catch (e) {
      problems.push(
        `API_KEYS_FILE=${JSON.stringify(keysFile)} cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
      );
    }
    addKeys(`API_KEYS_FILE ${keysFile}`, lines);
  }
  const choice = <T extends string>(name: string, fallback: T, options: readonly T[]): T => {
    const raw = env[name]?.trim().toLowerCase();
    if (raw === undefined || raw === "") return fallback;
    if ((options as readonly string[]).includes(raw)) return raw as T;
    problems.push(`${name}=${JSON.stringify(env[name])} must be one of ${options.join(", ")}`);
    return fallback;
  };
  const host = str("GRPC_HOST", "0.0.0.0");
  const browserProtocols = bool("BROWSER_PROTOCOLS", true);
  const browserAuthMode = choice("BROWSER_AUTH", "auto", ["auto", "required", "off"] as const);
  const rateLimit = (rateName: string, burstName: string, rate: number, burst: number): RateLimit | undefined => {
    const r = num(rateName, rate, (n) => n >= 0, ">= 0 (requests per second; 0: no limit)");
    const b = int(burstName, burst, 1, 1_000_000);
    return r > 0 ? { rate: r, burst: b } : undefined;
  };

  // Tracing follows OpenTelemetry's own variables: on when an OTLP endpoint
  // is set, the traces path appended to the base endpoint as the SDKs do.
  const otlpUrl = (name: string, suffix: string): string | undefined => {
    const raw = env[name]?.trim();
    if (!raw) return undefined;
    try {
      const u = new URL(raw);
      if (u.protocol === "http:" || u.protocol === "https:") return suffix ? `${raw.replace(/\/+$/, "")}${suffix}` : raw;
    } catch {
      /* reported below */
    }
    problems.push(`${name}=${JSON.stringify(raw)} is not an http(s) URL (expected e.g. http://otel-collector:4318)`);
    return undefined;
  };
  const otlpTracesUrl = otlpUrl("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "") ?? otlpUrl("OTEL_EXPORTER_OTLP_ENDPOINT", "/v1/traces");

  let modelReleases: Config["modelReleases"];
  const releases = env.MODEL_RELEASES?.trim();
  if (releases && releases.toLowerCase() !== "off") {
    if (releases.toLowerCase() === "store") modelReleases = { source: "store" };
    else if (path.isAbsolute(releases)) modelReleases = { source: "folder", dir: path.resolve(releases) };
    else problems.push(`MODEL_RELEASES=${JSON.stringify(releases)} must be off, store (the object store) or an absolute folder path`);
  }

  const browserAuth =
    browserProtocols && browserAuthMode !== "off" && (browserAuthMode === "required" || apiKeys.length > 0 || !isLoopback(host));

  const config: Config = {
    host,
    port: int("GRPC_PORT", 50052, 0, 65535),
    modelPath,
    modelPrecision,
    modelCardPath,
    modelInputSize: int("MODEL_INPUT_SIZE", 224, 32, 1024),
    intraOpThreads: int("MODEL_THREADS", 0, 0, 256),
    modelThreadSpinning: bool("MODEL_THREAD_SPINNING", true),
    preprocessWorkers: int("PREPROCESS_WORKERS", Math.max(1, availableParallelism()), 1, 256),
    maxPending: int("MAX_PENDING_IMAGES", 64, 1, 100_000),
    exactPreprocess: bool("EXACT_PREPROCESS", false),
    geometry: bool("GEOMETRY", true),
    batchWindowMs: int("BATCH_WINDOW_MS", 0, 0, 1000),
    maxBatch: int("MAX_BATCH", 16, 1, 256),
    maxImageBytes: int("MAX_IMAGE_BYTES", 10 * 1024 * 1024, 1024, 512 * 1024 * 1024),
    maxImagePixels: int("MAX_IMAGE_PIXELS", 50_000_000, 1024, 1_000_000_000),
    dataDir,
    s3,
    objectDir: path.resolve(str("OBJECT_STORE_DIR", path.join(dataDir, "objects"))),
    pg,
    pgliteDir: path.resolve(str("PGLITE_DIR", path.join(dataDir, "pg"))),
    storageTimeoutMs: int("STORAGE_TIMEOUT_MS", 8000, 100, 600_000),
    storageConnectTimeoutMs: int("STORAGE_CONNECT_TIMEOUT_MS", 2000, 100, 600_000),
    storageMaxAttempts: int("STORAGE_MAX_ATTEMPTS", 2, 1, 10),
    dbTimeoutMs: int("DB_TIMEOUT_MS", 10_000, 100, 600_000),
    dbConnectTimeoutMs: int("DB_CONNECT_TIMEOUT_MS", 3000, 100, 600_000),
    dbPoolMax: int("DB_POOL_MAX", 10, 1, 1000),
    dbIdleTimeoutMs: int("DB_IDLE_TIMEOUT_MS", 30_000, 1000, 3_600_000),
    // pgvector accepts 1..1000.
    hnswEfSearch: int("HNSW_EF_SEARCH", 200, 1, 1000),
    logLevel: logLevel ?? "info",
    metricsEnabled: bool("METRICS_ENABLED", true),
    metricsRegistryCacheMs: int("METRICS_REGISTRY_CACHE_MS", 10_000, 0, 3_600_000),
    otlpTracesUrl,
    otelServiceName: str("OTEL_SERVICE_NAME", "nosepaw"),
    otelExportDelayMs: int("OTEL_BSP_SCHEDULE_DELAY", 5000, 1, 600_000),
    shutdownTimeoutMs: int("SHUTDOWN_TIMEOUT_MS", 15_000, 0, 600_000),
    clientParityMinCosine: num("CLIENT_PARITY_MIN_COSINE", 0.999, (n) => n > 0 && n <= 1, "in (0, 1]"),
    clientDir: path.resolve(str("CLIENT_DIR", path.join(ROOT, "dist", "client"))),
    serveClient: bool("SERVE_CLIENT", true),
    corsOrigins,
    apiKeys,
    browserProtocols,
    browserAuth,
    browserLoopbackWithoutKey: browserAuth && browserAuthMode === "auto" && apiKeys.length === 0,
    browserAuthSetting: browserAuthMode,
    grpcAuth: choice("GRPC_AUTH", "off", ["off", "required"] as const) === "required",
    modelReleases,
    modelReleasePollSeconds: num("MODEL_RELEASE_POLL_SECONDS", 60, (n) => n >= 0.1 && n <= 86_400, "between 0.1 and 86400"),
    modelReleaseCacheDir: path.resolve(str("MODEL_RELEASE_CACHE_DIR", path.join(dataDir, "model-releases"))),
    refusedPhotoRetentionDays: int("REFUSED_PHOTO_RETENTION_DAYS", 90, 1, 3650),
    browserRateLimit: rateLimit("BROWSER_RATE_LIMIT", "BROWSER_RATE_BURST", 10, 60),
    grpcRateLimit: rateLimit("GRPC_RATE_LIMIT", "GRPC_RATE_BURST", 0, 200),
  };
  if (problems.length) throw new ConfigError(problems);
  return config;
}

/**
 * Refuses to serve a configuration that asks for API keys explicitly
 * (BROWSER_AUTH=required, GRPC_AUTH=required) and has none: every such call
 * would be refused. Without keys, BROWSER_AUTH=auto serves browser calls
 * from this machine only (browserLoopbackWithoutKey) rather than refusing
 * to start, so a bare start works and exposes nothing new.
 * Apart from loadConfig because tools read the same settings without serving.
 */
export function assertServable(c: Config): void {
  const problems: string[] = [];
  if (c.apiKeys.length === 0 && c.browserAuth && !c.browserLoopbackWithoutKey)
    problems.push("BROWSER_AUTH=required needs API_KEYS or API_KEYS_FILE");
  if (c.apiKeys.length === 0 && c.grpcAuth) problems.push("GRPC_AUTH=required needs API_KEYS or API_KEYS_FILE");
  if (problems.length) throw new ConfigError(problems);
}
