import * as grpc from "@grpc/grpc-js";
import type { GatewayClient } from "../test/support/grpc-client.js";

export interface TimedAnswer {
  res: { success: boolean; error_message: string; vector: number[]; vector_size: number };
  /** Client-side round trip: from the call to its callback. */
  ms: number;
  trailers: grpc.Metadata;
}

/**
 * ExtractNoseVector as the gateway sends it (image_data as a Buffer,
 * image_format "jpeg"), timed from the call to the callback, with the
 * answer's trailing metadata.
 */
export function extractNoseVector(client: GatewayClient, jpeg: Buffer, metadata = new grpc.Metadata()): Promise<TimedAnswer> {
  return new Promise((resolve, reject) => {
    let trailers = new grpc.Metadata();
    const t = performance.now();
    const call = client.raw.ExtractNoseVector(
      { image_data: jpeg, image_format: "jpeg" },
      metadata,
      { deadline: Date.now() + 60_000 },
      (err, res) => {
        const ms = performance.now() - t;
        if (err) return reject(err);
        // 'status' (with the trailers) follows the callback in the same tick.
        setImmediate(() => resolve({ res, ms, trailers }));
      },
    ) as unknown as grpc.ClientUnaryCall;
    call.on("status", (s: grpc.StatusObject) => (trailers = s.metadata));
  });
}

export async function waitServing(client: GatewayClient, timeoutMs = 60_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const r = await client.call("HealthCheck", { service: "" }).catch(() => undefined);
    if (r?.status === "SERVING") return;
    if (Date.now() > until) throw new Error(`server not SERVING within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
