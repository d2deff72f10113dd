import { create } from "@bufbuild/protobuf";
import { ConnectError, Code, type ServiceImpl } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus as Status, HealthCheckResponseSchema } from "../gen/grpc/health/v1/health_pb.js";

/** The names the gateway and probes use for our service; "" means the whole server. */
export const SERVICE_NAMES = new Set(["", "NoseEmbedderService", "nose_embedder.NoseEmbedderService"]);

export interface Readiness {
  serving(): boolean;
  /** True once the server is shutting down: open Watch streams end then. */
  closed(): boolean;
  onChange(listener: () => void): () => void;
}

/** Standard grpc.health.v1.Health, so Kubernetes gRPC probes and grpc_health_probe work. */
export function healthService(readiness: Readiness): ServiceImpl<typeof Health> {
  const statusOf = (service: string) => {
    if (!SERVICE_NAMES.has(service)) return Status.SERVICE_UNKNOWN;
    return readiness.serving() ? Status.SERVING : Status.NOT_SERVING;
  };
  return {
    check(req) {
      const status = statusOf(req.service);
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
          const status = statusOf(req.service);
          if (status !== last) {
            last = status;
            yield create(HealthCheckResponseSchema, { status });
          }
          if (readiness.closed()) return;
          await Promise.race([new Promise<void>((resolve) => (wake = resolve)), aborted]);
        }
      } finally {
        off();
      }
    },
  };
}
