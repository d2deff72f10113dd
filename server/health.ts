import { create } from "@bufbuild/protobuf";
import { ConnectError, Code, type ServiceImpl } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus as Status, HealthCheckResponseSchema } from "../gen/grpc/health/v1/health_pb.js";
import type { ModelHolder } from "./model/model-holder.js";

/** The names the gateway and probes use for our service; "" means the whole server. */
export const SERVICE_NAMES = new Set(["", "NoseEmbedderService", "nose_embedder.NoseEmbedderService"]);

/** Whether every RPC can be served now, and one line per part saying why (not). */
export interface ReadinessReport {
  serving: boolean;
  /** The model's and the registry's state, for the HealthCheck message. */
  parts: string[];
}

export interface Readiness {
  report(): Promise<ReadinessReport>;
  /** True once the server is shutting down: open Watch streams end then. */
  closed(): boolean;
  onChange(listener: () => void): () => void;
}

/** The registry's side of readiness: open, migrated, answering now, and on the registry's current model version. */
export interface RegistryReadiness {
  readiness(): Promise<{ ready: boolean; detail: string }>;
  onChange(listener: () => void): () => void;
}

/**
 * SERVING only when every RPC can be served: the model loaded and the
 * registry usable. Kubernetes routes traffic on this answer, so a server
 * that would answer MODEL_NOT_LOADED or SERVICE_UNAVAILABLE must not say it.
 */
export function createReadiness(model: ModelHolder, registry: RegistryReadiness): Readiness & { close(): void } {
  let closing = false;
  const listeners = new Set<() => void>();
  const notify = () => listeners.forEach((l) => l());
  model.onChange(notify);
  registry.onChange(notify);
  return {
    async report() {
      const state = model.state();
      const modelPart =
        state.status === "ready"
          ? `model ${model.path} version ${state.model.version}`
          : state.status === "loading"
            ? `model ${model.path} is loading`
            : `model ${model.path} failed to load: ${state.reason}`;
      const reg = await registry.readiness();
      const parts = closing ? ["shutting down", modelPart, reg.detail] : [modelPart, reg.detail];
      return { serving: !closing && state.status === "ready" && reg.ready, parts };
    },
    closed: () => closing,
    onChange(l) {
      listeners.add(l);
      return () => listeners.delete(l);
    },
    close() {
      closing = true;
      notify();
    },
  };
}

/** How often an open Watch looks again: the database can go away without any event here. */
const WATCH_RECHECK_MS = 1000;

/** Standard grpc.health.v1.Health, so Kubernetes gRPC probes and grpc_health_probe work. */
export function healthService(readiness: Readiness): ServiceImpl<typeof Health> {
  const statusOf = async (service: string) => {
    if (!SERVICE_NAMES.has(service)) return Status.SERVICE_UNKNOWN;
    return (await readiness.report()).serving ? Status.SERVING : Status.NOT_SERVING;
  };
  return {
    async check(req) {
      const status = await statusOf(req.service);
      // The health protocol answers NOT_FOUND for unknown services on Check.
      if (status === Status.SERVICE_UNKNOWN) throw new ConnectError(`unknown service ${JSON.stringify(req.service)}`, Code.NotFound);
      return create(HealthCheckResponseSchema, { status });
    },
    async *watch(req, ctx) {
      let last: Status | undefined;
      let wake: (() => void) | undefined;
      const off = readiness.onChange(() => wake?.());
      const aborted = new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve(), { once: true }));
      try {
        while (!ctx.signal.aborted) {
          const status = await statusOf(req.service);
          if (status !== last) {
            last = status;
            yield create(HealthCheckResponseSchema, { status });
          }
          if (readiness.closed()) return;
          let timer: ReturnType<typeof setTimeout> | undefined;
          await Promise.race([
            new Promise<void>((resolve) => ((wake = resolve), (timer = setTimeout(resolve, WATCH_RECHECK_MS)))),
            aborted,
          ]);
          clearTimeout(timer);
        }
      } finally {
        off();
      }
    },
  };
}
