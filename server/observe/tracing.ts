/**
 * Optional OpenTelemetry tracing: one server span per RPC with a child span
 * per stage, exported over OTLP/HTTP (JSON) in batches.
 *
 * Spans are made after the fact from the `nosepaw:rpc` record of a finished
 * call, so tracing adds nothing to the request path. The RPC span's start and
 * end are measured. A stage is a sum (a registration decodes several photos,
 * on several workers at once), not one interval, so its child span has the
 * stage's measured total as duration but a placement that is not: stages are
 * laid end to end in the order a photo flows (queue, handoff, decode, ...)
 * from the call's start, cut off at the call's end; `nosepaw.stage_ms` keeps
 * the exact total.
 */
import { subscribe, unsubscribe } from "node:diagnostics_channel";
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { parseTraceParent } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BasicTracerProvider, BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";
import type { Logger } from "../log.js";
import { STAGES, type RpcRecord } from "./request-context.js";

const CLOSE_TIMEOUT_MS = 3000;

export interface TracingOptions {
  /** Where spans are posted, e.g. http://collector:4318/v1/traces. */
  url: string;
  serviceName: string;
  /** Milliseconds between exports (OTEL_BSP_SCHEDULE_DELAY). */
  exportDelayMs: number;
  /** Only calls of this server instance are traced. */
  origin: object;
  log: Logger;
}

export interface Tracing {
  /** Stops tracing and exports the spans still buffered. */
  close(): Promise<void>;
}

export function startTracing(opts: TracingOptions): Tracing {
  const exporter = new OTLPTraceExporter({ url: opts.url });
  // Not registered as the global provider: each server instance has its own.
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ "service.name": opts.serviceName }),
    spanProcessors: [new BatchSpanProcessor(exporter, { scheduledDelayMillis: opts.exportDelayMs })],
  });
  const tracer = provider.getTracer("nosepaw");

  const onRpc = (message: unknown) => {
    const r = message as RpcRecord;
    if (r.origin !== opts.origin) return;
    const end = performance.timeOrigin + performance.now();
    const start = end - r.ms;
    const caller = r.traceparent ? parseTraceParent(r.traceparent) : null;
    const parent = caller ? trace.setSpanContext(ROOT_CONTEXT, caller) : ROOT_CONTEXT;
    const span = tracer.startSpan(
      r.service ? `${r.service}/${r.method}` : r.method,
      {
        kind: SpanKind.SERVER,
        startTime: start,
        attributes: {
          "rpc.system": "connect_rpc",
          "rpc.service": r.service ?? "",
          "rpc.method": r.method,
          "nosepaw.request_id": r.id,
          "nosepaw.result": r.result,
          ...(r.batchSize !== undefined ? { "nosepaw.batch_size": r.batchSize } : {}),
        },
      },
      parent,
    );
    if (r.result !== "OK") span.setStatus({ code: SpanStatusCode.ERROR, message: r.result });
    const inCall = trace.setSpan(parent, span);
    let at = start;
    for (const stage of STAGES) {
      const ms = r.stages[stage];
      if (ms === undefined) continue;
      const from = Math.min(at, end);
      const to = Math.min(at + ms, end);
      tracer
        .startSpan(
          stage,
          {
            kind: SpanKind.INTERNAL,
            startTime: from,
            attributes: { "nosepaw.stage": stage, "nosepaw.stage_ms": ms, "nosepaw.request_id": r.id },
          },
          inCall,
        )
        .end(to);
      at += ms;
    }
    span.end(end);
  };
  subscribe("nosepaw:rpc", onRpc);
  opts.log.info("tracing on", { url: opts.url, serviceName: opts.serviceName });

  return {
    async close() {
      unsubscribe("nosepaw:rpc", onRpc);
      // A collector that is down must not hold up the shutdown for the exporter's own timeout.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const gaveUp = new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), CLOSE_TIMEOUT_MS)));
      const outcome = await Promise.race([provider.shutdown().then(() => "done" as const), gaveUp]).catch((e: unknown) => e);
      clearTimeout(timer);
      if (outcome !== "done")
        opts.log.warn("tracing: the last spans were not exported", {
          err: outcome === "timeout" ? `no answer within ${CLOSE_TIMEOUT_MS} ms` : outcome,
        });
    },
  };
}
