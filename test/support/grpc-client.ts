import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import path from "node:path";
import { ROOT } from "./server.js";

/** Exactly how the platform's NestJS gateway loads the contract. */
export const GATEWAY_LOADER_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true } as const;

type Callback = (err: grpc.ServiceError | null, res: any) => void;
type Method = (req: unknown, meta: grpc.Metadata, opts: grpc.CallOptions, cb: Callback) => void;

export interface GatewayClient {
  call(method: string, req: unknown, deadlineMs?: number): Promise<any>;
  raw: grpc.Client & Record<string, Method>;
  close(): void;
}

export function gatewayClient(
  address: string,
  proto = "nose_embedder.proto",
  service = "nose_embedder.NoseEmbedderService",
): GatewayClient {
  const def = protoLoader.loadSync(path.join(ROOT, "proto", proto), { ...GATEWAY_LOADER_OPTIONS, includeDirs: [path.join(ROOT, "proto")] });
  const pkg = grpc.loadPackageDefinition(def) as any;
  const Ctor = service.split(".").reduce((o, k) => o[k], pkg) as typeof grpc.Client;
  const raw = new Ctor(address, grpc.credentials.createInsecure(), {
    "grpc.max_send_message_length": 64 * 1024 * 1024,
  }) as grpc.Client & Record<string, Method>;
  return {
    raw,
    call: (method, req, deadlineMs = 30_000) =>
      new Promise((resolve, reject) =>
        raw[method](req, new grpc.Metadata(), { deadline: Date.now() + deadlineMs }, (err, res) => (err ? reject(err) : resolve(res))),
      ),
    close: () => raw.close(),
  };
}

/** An in-band failure as the gateway reads it: success false, the ML error code, and whether to retry. */
export function assertError(res: any, code: string, retryable: boolean): void {
  assert.equal(res.success, false, `expected ${code}, got ${JSON.stringify(res).slice(0, 300)}`);
  assert.equal(res.error_code, code, res.error_message);
  assert.equal(res.retryable, retryable);
}
