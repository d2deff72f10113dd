import { createReadStream } from "node:fs";
import { realpath, stat } from "node:fs/promises";
import type http from "node:http";
import type http2 from "node:http2";
import path from "node:path";
import { cors as connectCors } from "@connectrpc/connect";
import type { Logger } from "./log.js";
import type { RpcGuard } from "./http/rpc-guard.js";
import { CLIENT_SECURITY_HEADERS } from "./http/security-headers.js";
import type { ModelHolder } from "./model/model-holder.js";

type Req = http.IncomingMessage | http2.Http2ServerRequest;
type Res = http.ServerResponse | http2.Http2ServerResponse;
export type Handler = (req: Req, res: Res) => void;

/** Ends a response, with the body unless it answers HEAD. */
const finish = (res: Res, body: string | Uint8Array, head: boolean) => (head ? res.end() : res.end(body));

export const MODEL_ROUTE = "/model/nose-embedder.onnx";
export const CARD_ROUTE = "/model/card.json";
export const METRICS_ROUTE = "/metrics";

export interface WebOptions {
  /** Serves the RPCs (Connect, gRPC, gRPC-Web) and answers everything else it does not know with 404. */
  rpc: Handler;
  /** Path prefixes of the RPC services, e.g. "/nose_embedder.NoseEmbedderService/". */
  rpcPrefixes: string[];
  model: ModelHolder;
  clientDir: string;
  serveClient: boolean;
  /** Other origins allowed on the RPC and model routes. */
  corsOrigins: string[];
  /** Admits or refuses each RPC (API keys, rate limits) before its body is read. */
  guard?: RpcGuard;
  /** Prometheus exposition at /metrics; undefined: the route is not served. */
  metrics?: { contentType: string; scrape(): Promise<string> };
  log: Logger;
}

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".wasm": "application/wasm",
  ".json": "application/json",
  ".map": "application/json",
  ".webmanifest": "application/manifest+json",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".svg": "image/svg+xml",
  ".ico": "image/x-icon",
  ".webp": "image/webp",
  ".txt": "text/plain; charset=utf-8",
  ".woff2": "font/woff2",
  ".onnx": "application/octet-stream",
};

const MODEL_CORS = {
  methods: ["GET", "HEAD"],
  headers: ["If-None-Match"],
  exposed: ["ETag", "X-Model-Version", "Content-Length"],
};

const RPC_CORS = {
  methods: connectCors.allowedMethods,
  headers: [...connectCors.allowedHeaders, "Authorization", "X-Api-Key", "X-Request-Id"],
  exposed: [...connectCors.exposedHeaders, "Retry-After", "WWW-Authenticate", "X-Request-Id"],
};

/** A small uncached answer of the non-RPC routes (errors, hints). */
function sendSmall(res: Res, status: number, contentType: string, body: string, headers: Record<string, string>, head: boolean) {
  res.writeHead(status, {
    "Content-Type": contentType,
    "Content-Length": String(Buffer.byteLength(body)),
    "Cache-Control": "no-store",
    ...headers,
  });
  finish(res, body, head);
}

/** One line of JSON with an error, as every non-RPC route answers failures. */
function sendJson(res: Res, status: number, body: unknown, headers: Record<string, string> = {}, head = false) {
  sendSmall(res, status, "application/json", JSON.stringify(body), headers, head);
}

function sendText(res: Res, status: number, text: string, headers: Record<string, string> = {}, head = false) {
  sendSmall(res, status, "text/plain; charset=utf-8", `${text}\n`, headers, head);
}

/** True when If-None-Match names the entity tag (weak comparison, as for GET). */
function notModified(req: Req, etag: string): boolean {
  const header = req.headers["if-none-match"];
  if (typeof header !== "string") return false;
  const bare = (t: string) => t.trim().replace(/^W\//, "");
  return header.split(",").some((t) => t.trim() === "*" || bare(t) === bare(etag));
}

/**
 * Everything the port serves over plain HTTP besides the RPCs: the model
 * (so browsers can embed on the device with exactly the server's weights),
 * its card, and the built browser client. CORS applies to the RPC and model
 * routes only; the client page is same-origin by definition.
 */
export function createWebHandler(opts: WebOptions): Handler {
  const allowed = new Set(opts.corsOrigins);
  const clientRoot = path.resolve(opts.clientDir);

  /**
   * Adds CORS headers for an allowed origin. Returns true when the request
   * was a preflight and has been answered.
   */
  const applyCors = (
    req: Req,
    res: Res,
    policy: { methods: readonly string[]; headers: readonly string[]; exposed: readonly string[] },
  ): boolean => {
    const origin = req.headers.origin;
    const preflight = req.method === "OPTIONS" && typeof origin === "string" && req.headers["access-control-request-method"] !== undefined;
    if (allowed.size > 0) res.setHeader("Vary", "Origin");
    const ok = typeof origin === "string" && allowed.has(origin);
    if (preflight) {
      if (!ok) {
        sendText(res, 403, `origin ${origin} is not allowed (CORS_ORIGINS)`);
        return true;
      }
      res.writeHead(204, {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": policy.methods.join(", "),
        "Access-Control-Allow-Headers": policy.headers.join(", "),
        "Access-Control-Max-Age": "7200",
        "Content-Length": "0",
      });
      res.end();
      return true;
    }
    if (ok) {
      res.setHeader("Access-Control-Allow-Origin", origin);
      res.setHeader("Access-Control-Expose-Headers", policy.exposed.join(", "));
    }
    return false;
  };

  /**
   * A browser's call from an origin that is neither allowed nor this
   * server's own (its host is not the Host the request was sent to):
   * refused outright rather than answered for the browser to withhold.
   */
  const foreignOrigin = (req: Req): boolean => {
    const origin = req.headers.origin;
    if (typeof origin !== "string" || allowed.has(origin)) return false;
    const host = req.headers.host ?? req.headers[":authority"];
    try {
      return new URL(origin).host !== host;
    } catch {
      return true; // "null" (sandboxed frames, files) and anything unparsable
    }
  };

  const serveModel = (req: Req, res: Res, route: string) => {
    const head = req.method === "HEAD";
    if (req.method !== "GET" && !head) {
      return sendJson(res, 405, { error: `${req.method} is not supported on ${route}; use GET or HEAD` }, { Allow: "GET, HEAD" });
    }
    const state = opts.model.state();
    if (state.status !== "ready") {
      const error = state.status === "loading" ? "model is still loading" : `model could not be loaded: ${state.reason}`;
      return sendJson(res, 503, { error, status: state.status }, { "Retry-After": "5" }, head);
    }
    const m = state.model;
    const common = {
      "Cache-Control": "no-cache",
      "X-Model-Version": encodeURI(m.version),
      "Cross-Origin-Resource-Policy": "same-origin",
      "X-Content-Type-Options": "nosniff",
    };
    if (route === MODEL_ROUTE) {
      const etag = `"${m.embedder.sha256}"`;
      if (notModified(req, etag)) {
        res.writeHead(304, { ETag: etag, ...common });
        return res.end();
      }
      res.writeHead(200, {
        ...common,
        ETag: etag,
        "Content-Type": "application/octet-stream",
        "Content-Length": String(m.embedder.modelBytes.length),
      });
      return finish(res, m.embedder.modelBytes, head);
    }
    // The card the model was loaded with; without one, the contract and the fingerprint version.
    const size = m.embedder.inputSize;
    const card = {
      ...(m.card ?? {
        input: { name: "input", shape: [null, 3, size, size], dtype: "float32", range: [0, 1], layout: "NCHW RGB" },
        output: { name: "embedding", shape: [null, 512], dtype: "float32" },
      }),
      version: m.version,
      sha256: m.embedder.sha256,
      model_url: MODEL_ROUTE,
    };
    const text = JSON.stringify(card);
    const etag = `"${m.embedder.sha256.slice(0, 16)}-${Buffer.from(m.version).toString("base64url")}"`;
    if (notModified(req, etag)) {
      res.writeHead(304, { ETag: etag, ...common });
      return res.end();
    }
    res.writeHead(200, { ...common, ETag: etag, "Content-Type": "application/json", "Content-Length": String(Buffer.byteLength(text)) });
    finish(res, text, head);
  };

  /** The file under clientRoot that a request path names, or an HTTP status explaining why not. */
  const resolveClientPath = async (rawPath: string): Promise<string | 400 | 404> => {
    let decoded: string;
    try {
      decoded = decodeURIComponent(rawPath);
    } catch {
      return 400;
    }
    // Encoded twice (%252e), backslashes, NULs: never a file name this app builds.
    if (/%[0-9a-f]{2}/i.test(decoded) || decoded.includes("\\") || decoded.includes("\0")) return 400;
    const segments = decoded.split("/").filter((s) => s !== "");
    if (segments.some((s) => s === "..")) return 400;
    if (segments.some((s) => s.startsWith("."))) return 404;
    let file = path.join(clientRoot, ...segments);
    if (file !== clientRoot && !file.startsWith(clientRoot + path.sep)) return 400;
    try {
      let st = await stat(file);
      if (st.isDirectory()) {
        file = path.join(file, "index.html");
        st = await stat(file);
      }
      if (!st.isFile()) return 404;
      // A symbolic link inside the folder must not lead out of it.
      const [real, realRoot] = await Promise.all([realpath(file), realpath(clientRoot)]);
      if (!real.startsWith(realRoot + path.sep)) return 404;
      return real;
    } catch {
      return 404;
    }
  };

  const serveClient = async (req: Req, res: Res, rawPath: string) => {
    const head = req.method === "HEAD";
    if (!opts.serveClient) return sendText(res, 404, "not found (serving the browser client is off: SERVE_CLIENT=false)", {}, head);
    const root = await stat(clientRoot).catch(() => undefined);
    if (!root?.isDirectory()) {
      return sendText(res, 404, `not found: no browser client built at ${clientRoot} (build it there or set CLIENT_DIR)`, {}, head);
    }
    const file = await resolveClientPath(rawPath);
    if (file === 400) return sendText(res, 400, "bad path", CLIENT_SECURITY_HEADERS, head);
    if (file === 404) return sendText(res, 404, "not found", CLIENT_SECURITY_HEADERS, head);
    const st = await stat(file);
    const etag = `W/"${st.size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"`;
    const headers = {
      ...CLIENT_SECURITY_HEADERS,
      "Cache-Control": "no-cache",
      ETag: etag,
    };
    if (notModified(req, etag)) {
      res.writeHead(304, headers);
      return res.end();
    }
    res.writeHead(200, {
      ...headers,
      "Content-Type": CONTENT_TYPES[path.extname(file).toLowerCase()] ?? "application/octet-stream",
      "Content-Length": String(st.size),
    });
    if (head) return res.end();
    const stream = createReadStream(file);
    stream.on("error", (e) => {
      opts.log.warn("static file read failed", { file, err: e });
      res.destroy();
    });
    stream.pipe(res as NodeJS.WritableStream);
  };

  return (req, res) => {
    const url = req.url ?? "/";
    const rawPath = url.split(/[?#]/, 1)[0];
    if (opts.rpcPrefixes.some((p) => rawPath.startsWith(p))) {
      if (applyCors(req, res, RPC_CORS)) return;
      if (foreignOrigin(req)) return sendText(res, 403, `origin ${req.headers.origin} is not allowed (CORS_ORIGINS)`);
      if (opts.guard?.(req, res, rawPath)) return;
      return opts.rpc(req, res);
    }
    // For the scraper inside the cluster, like the health probes: no API key, no CORS.
    if (rawPath === METRICS_ROUTE && opts.metrics) {
      const head = req.method === "HEAD";
      if (req.method !== "GET" && !head)
        return sendText(res, 405, `${req.method} is not supported on ${METRICS_ROUTE}; use GET`, { Allow: "GET, HEAD" });
      opts.metrics.scrape().then(
        (text) => sendSmall(res, 200, opts.metrics!.contentType, text, {}, head),
        (e: unknown) => {
          opts.log.error("metrics scrape failed", { err: e });
          sendText(res, 500, "metrics unavailable");
        },
      );
      return;
    }
    if (rawPath === MODEL_ROUTE || rawPath === CARD_ROUTE) {
      if (applyCors(req, res, MODEL_CORS)) return;
      if (req.method === "OPTIONS") {
        res.writeHead(204, { Allow: "GET, HEAD, OPTIONS", "Content-Length": "0" });
        return res.end();
      }
      return serveModel(req, res, rawPath);
    }
    if (req.method === "GET" || req.method === "HEAD") {
      serveClient(req, res, rawPath).catch((e) => {
        opts.log.error("static file failed", { path: rawPath, err: e });
        if (!res.headersSent) sendText(res, 500, "internal server error");
        else res.destroy();
      });
      return;
    }
    opts.rpc(req, res);
  };
}
