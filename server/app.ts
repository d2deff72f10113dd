import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { NoseEmbedderService } from "../gen/nose_embedder_pb.js";
import { assertServable, type Config } from "./config.js";
import { createImageEmbedder } from "./embed-image.js";
import { preprocessPoolFromConfig } from "./image/preprocess-pool.js";
import { nativeJpegUnavailable } from "./image/jpeg-native.js";
import { createReadiness, healthService } from "./health.js";
import { listen } from "./listen.js";
import type { Logger } from "./log.js";
import { modelHolderFromConfig, type ReloadOutcome } from "./model/model-holder.js";
import { openRegistry } from "./registry/host.js";
import { noseEmbedderService } from "./rpc/nose-embedder.js";
import { createWebHandler } from "./web.js";
import { createKeyRing } from "./http/auth.js";
import { createRpcGuard } from "./http/rpc-guard.js";
import { mlCodeName } from "./errors.js";
import { createMetrics } from "./observe/metrics.js";
import { publishRpc, runWithContext, type RequestContext } from "./observe/request-context.js";
import { startTracing } from "./observe/tracing.js";
import { startReleaseWatcher } from "./learn/release-watcher.js";
import { createFolderStore } from "./storage/folder-store.js";
import { openObjectStore } from "./storage/open.js";

/** Ids from callers are echoed in logs and headers: keep them short and printable. */
function validRequestId(v: string | null): string | undefined {
  return v && /^[\x21-\x7e]{1,128}$/.test(v) ? v : undefined;
}

export interface App {
  port: number;
  /** Graceful: NOT_SERVING, stop accepting, finish in-flight requests, release resources. */
  close(): Promise<void>;
  /** Reads the model file again (SIGHUP) and switches to it without dropping calls; a bad file leaves the running model. */
  reloadModel(): Promise<ReloadOutcome>;
}

export async function startApp(config: Config, log: Logger): Promise<App> {
  assertServable(config);
  const model = modelHolderFromConfig(config, log);
  const pool = preprocessPoolFromConfig(config);
  const embedImage = createImageEmbedder(model, pool);
  // Metrics and traces count this instance's calls only (a process may run several).
  const origin = {};
  const metrics = config.metricsEnabled
    ? createMetrics({ origin, pool, model, registryCounts: () => registry.counts(), registryCountsTtlMs: config.metricsRegistryCacheMs })
    : undefined;
  const tracing = config.otlpTracesUrl
    ? startTracing({ url: config.otlpTracesUrl, serviceName: config.otelServiceName, exportDelayMs: config.otelExportDelayMs, origin, log })
    : undefined;
  const registry = openRegistry(config, model, embedImage, log, {
    storageError: metrics?.storageError,
    databaseError: metrics?.databaseError,
  });

  // SERVING only when every RPC can be: the model loaded and the registry usable now.
  const readiness = createReadiness(model, registry);

  // Every call runs inside a request context (id, stage timings, abort
  // signal) and is published on the `nosepaw:rpc` channel when it ends.
  const context: Interceptor = (next) => async (req) => {
    const id = validRequestId(req.header.get("x-request-id")) ?? randomUUID();
    const ctx: RequestContext = { id, method: req.method.name, started: performance.now(), stages: {}, signal: req.signal };
    let result = "OK";
    try {
      // The call keeps the model it started with, even across a reload.
      const res = await runWithContext(ctx, () => model.pinned(() => next(req)));
      res.header.set("x-request-id", id);
      if (!res.stream) {
        const m = res.message as { success?: boolean; errorCode?: number };
        if (m.success === false && m.errorCode !== undefined) result = mlCodeName(m.errorCode);
      }
      return res;
    } catch (e) {
      // Failed calls carry the id too: Connect sends error metadata as
      // headers, gRPC and gRPC-Web as trailers.
      const err = ConnectError.from(e);
      err.metadata.set("x-request-id", id);
      result = Code[err.code];
      throw err;
    } finally {
      const ms = performance.now() - ctx.started;
      log.debug("rpc", { requestId: id, method: ctx.method, result, ms: Math.round(ms * 10) / 10 });
      publishRpc({
        id,
        method: ctx.method,
        result,
        ms,
        stages: ctx.stages,
        batchSize: ctx.batchSize,
        path: ctx.path,
        service: req.service.typeName,
        origin,
        traceparent: req.header.get("traceparent") ?? undefined,
      });
    }
  };

  const rpc = connectNodeAdapter({
    routes: (router) => {
      router.service(NoseEmbedderService, noseEmbedderService({ model, embedImage, registry, readiness, log }));
      router.service(Health, healthService(readiness));
    },
    interceptors: [context],
    // Payloads over the image limit still reach the handler, which answers
    // IMAGE_TOO_LARGE in-band as the gateway expects; beyond this ceiling the
    // protocol layer refuses them (RESOURCE_EXHAUSTED) before buffering them.
    readMaxBytes: Math.max(64 * 1024 * 1024, config.maxImageBytes * 2),
    // Answers are not compressed (compressed requests are still accepted):
    // an embedding is 512 floats, which gzip shrinks by a few percent for
    // a zlib pass on both ends of every call (connect's default threshold,
    // 1 KiB, compressed every ExtractNoseVector answer a gRPC client that
    // offers gzip asked for, as grpc-js does).
    compressMinBytes: Number.MAX_SAFE_INTEGER,
    connect: config.browserProtocols,
    grpcWeb: config.browserProtocols,
  });

  // The same port serves the model, its card and the browser client over plain HTTP.
  const handler = createWebHandler({
    rpc,
    rpcPrefixes: [NoseEmbedderService, Health].map((s) => `/${s.typeName}/`),
    model,
    clientDir: config.clientDir,
    serveClient: config.serveClient,
    corsOrigins: config.corsOrigins,
    metrics,
    guard: createRpcGuard({
      keys: createKeyRing(config.apiKeys),
      browserAuth: config.browserAuth,
      browserLoopbackWithoutKey: config.browserLoopbackWithoutKey,
      grpcAuth: config.grpcAuth,
      browserLimit: config.browserRateLimit,
      grpcLimit: config.grpcRateLimit,
      openPrefixes: [`/${Health.typeName}/`],
      log,
    }),
    log,
  });

  const listener = await listen({ host: config.host, port: config.port, handler, log });
  log.info("listening", {
    pid: process.pid,
    host: config.host,
    port: listener.port,
    protocols: config.browserProtocols ? ["grpc", "grpc-web", "connect"] : ["grpc"],
    auth: { browser: config.browserAuth, grpc: config.grpcAuth, keys: config.apiKeys.length },
    rateLimit: { browser: config.browserRateLimit ?? false, grpc: config.grpcRateLimit ?? false },
    client: config.serveClient ? config.clientDir : false,
    corsOrigins: config.corsOrigins,
    metrics: config.metricsEnabled ? "/metrics" : false,
    tracing: config.otlpTracesUrl ?? false,
    jpegDecoder: nativeJpegUnavailable ? "sharp" : "libjpeg",
  });
  if (nativeJpegUnavailable) {
    // Still correct (sharp's pixels are Pillow's too), only slower: about 3 ms more per 1080 px photo.
    log.warn("libjpeg decoder addon not loaded; JPEGs are decoded with sharp", { reason: nativeJpegUnavailable });
  }
  if (config.browserLoopbackWithoutKey) {
    log.warn(
      "no API keys configured: Connect and gRPC-Web calls are served from this machine only and refused from other machines " +
        "(plain gRPC is open); set API_KEYS or API_KEYS_FILE to accept them with a key, or BROWSER_AUTH=off when a proxy in front authenticates callers",
      { host: config.host },
    );
  }
  void model.load();
  const releases = config.modelReleases
    ? startReleaseWatcher({
        source: config.modelReleases.source === "store" ? openObjectStore(config) : createFolderStore({ root: config.modelReleases.dir }),
        sourceName: config.modelReleases.source === "store" ? "object store" : config.modelReleases.dir,
        cacheDir: config.modelReleaseCacheDir,
        pollMs: config.modelReleasePollSeconds * 1000,
        model,
        log,
      })
    : undefined;

  return {
    port: listener.port,
    reloadModel: () => model.reload(),
    async close() {
      releases?.close();
      readiness.close();
      await listener.close(config.shutdownTimeoutMs);
      metrics?.close();
      await tracing?.close();
      await registry.close();
      await Promise.all([model.close(), pool.close()]);
    },
  };
}
