import { existsSync } from "node:fs";
import { availableParallelism } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

/**
 * Repository (or image) root, so defaults work whatever the working
 * directory: the nearest folder above this file that holds package.json, the
 * same one whether the server runs from server/ or compiled into build/server/.
 */
export const ROOT = packageRoot(path.dirname(fileURLToPath(import.meta.url)));

function packageRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, "package.json"))) return dir;
    if (path.dirname(dir) === dir) return path.resolve(from, "..");
  }
}

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
  modelPath: string;
  /** Model card (calibration, version); optional for user models. */
  modelCardPath: string | undefined;
  modelInputSize: number;
  intraOpThreads: number;
  /** Worker threads that decode and resize photos. */
  preprocessWorkers: number;
  /** Photos that may wait for a worker before requests get SERVICE_UNAVAILABLE. */
  maxPending: number;
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
  logLevel: LogLevel;
  shutdownTimeoutMs: number;
  /** Cosine a client-computed embedding must reach against the server's own. */
  clientParityMinCosine: number;
  /** The built browser client, served at / when the folder exists. */
  clientDir: string;
  serveClient: boolean;
  /** Other origins allowed (CORS) on the RPC and model routes; empty: same origin only. */
  corsOrigins: string[];
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join("\n  - ")}`);
    this.name = "ConfigError";
  }
}

type Env = Record<string, string | undefined>;

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
  const modelPath = path.resolve(str("MODEL_PATH", path.join(ROOT, "models", "nose-embedder.onnx")));
  const cardEnv = env.MODEL_CARD_PATH?.trim();
  const modelCardPath = cardEnv
    ? path.resolve(cardEnv)
    : modelPath.endsWith(".onnx")
      ? modelPath.slice(0, -".onnx".length) + ".json"
      : undefined;

  const levelRaw = str("LOG_LEVEL", "info").toLowerCase();
  const levels: Record<string, LogLevel> = { debug: "debug", info: "info", warn: "warn", warning: "warn", error: "error", critical: "error" };
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
  for (const entry of (env.CORS_ORIGINS ?? "").split(",").map((o) => o.trim()).filter(Boolean)) {
    let origin: string | undefined;
    try {
      const u = new URL(entry);
      if ((u.protocol === "http:" || u.protocol === "https:") && u.origin === entry.replace(/\/$/, "")) origin = u.origin;
    } catch {
      /* reported below */
    }
    if (origin) corsOrigins.push(origin);
    else problems.push(`CORS_ORIGINS entry ${JSON.stringify(entry)} is not an origin (expected e.g. https://app.example.com, without a path)`);
  }

  const config: Config = {
    host: str("GRPC_HOST", "0.0.0.0"),
    port: int("GRPC_PORT", 50052, 0, 65535),
    modelPath,
    modelCardPath,
    modelInputSize: int("MODEL_INPUT_SIZE", 224, 32, 1024),
    intraOpThreads: int("MODEL_THREADS", 0, 0, 256),
    preprocessWorkers: int("PREPROCESS_WORKERS", Math.max(1, availableParallelism()), 1, 256),
    maxPending: int("MAX_PENDING_IMAGES", 64, 1, 100_000),
    batchWindowMs: int("BATCH_WINDOW_MS", 0, 0, 1000),
    maxBatch: int("MAX_BATCH", 16, 1, 256),
    maxImageBytes: int("MAX_IMAGE_BYTES", 10 * 1024 * 1024, 1024, 512 * 1024 * 1024),
    maxImagePixels: int("MAX_IMAGE_PIXELS", 50_000_000, 1024, 1_000_000_000),
    dataDir,
    s3,
    objectDir: path.resolve(str("OBJECT_STORE_DIR", path.join(dataDir, "objects"))),
    pg,
    pgliteDir: path.resolve(str("PGLITE_DIR", path.join(dataDir, "pg"))),
    logLevel: logLevel ?? "info",
    shutdownTimeoutMs: int("SHUTDOWN_TIMEOUT_MS", 15_000, 0, 600_000),
    clientParityMinCosine: num("CLIENT_PARITY_MIN_COSINE", 0.999, (n) => n > 0 && n <= 1, "in (0, 1]"),
    clientDir: path.resolve(str("CLIENT_DIR", path.join(ROOT, "dist", "client"))),
    serveClient: bool("SERVE_CLIENT", true),
    corsOrigins,
  };
  if (problems.length) throw new ConfigError(problems);
  return config;
}
