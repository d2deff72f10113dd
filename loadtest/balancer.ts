import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import path from "node:path";
import { GATEWAY_LOADER_OPTIONS } from "../test/support/grpc-client.js";
import { ROOT } from "../test/support/server.js";

type Callback = (err: grpc.ServiceError | null, res: any) => void;
type Method = (req: unknown, meta: grpc.Metadata, opts: grpc.CallOptions, cb: Callback) => void;
type ServiceClient = grpc.Client & Record<string, Method>;

let serviceCtor: typeof grpc.Client | undefined;
function NoseEmbedderService(): typeof grpc.Client {
  if (!serviceCtor) {
    const def = protoLoader.loadSync(path.join(ROOT, "proto/nose_embedder.proto"), GATEWAY_LOADER_OPTIONS);
    serviceCtor = (grpc.loadPackageDefinition(def) as any).nose_embedder.NoseEmbedderService;
  }
  return serviceCtor!;
}

/**
 * In-band codes that are a fault of the server, never a state to wait out: a
 * call answered with one fails, whatever its `retryable` flag says, so a
 * handler that throws now and then cannot be retried into a green run.
 */
export const SERVER_FAULTS: ReadonlySet<string> = new Set(["INTERNAL_SERVER_ERROR", "INFERENCE_ERROR"]);

/** Why a call went out again. */
export type RetryReason = `in-band ${string}` | "transport";

export interface CallOutcome {
  /** The final answer: a success or an in-band error that is not retryable. */
  res: any;
  /** Index of the replica that gave it. */
  replica: number;
  /** Calls sent, the first included. */
  attempts: number;
  retries: RetryReason[];
}

/** A call that could not be completed: a transport error where none is allowed, or retries exhausted. */
export class CallFailure extends Error {
  constructor(
    message: string,
    readonly retries: RetryReason[],
  ) {
    super(message);
    this.name = "CallFailure";
  }
}

export interface BalancerOptions {
  /**
   * Retry a transport failure (UNAVAILABLE: the replica is down or the
   * connection dropped) on the next replica, as a load balancer does. Off:
   * any transport error fails the call.
   */
  failover: boolean;
  /** Deadline of one attempt. */
  attemptDeadlineMs?: number;
  /** Give up retrying after this long. */
  giveUpAfterMs?: number;
  /** First backoff; doubled per retry up to maxBackoffMs, with jitter. */
  baseBackoffMs?: number;
  maxBackoffMs?: number;
  random?: () => number;
}

/**
 * One client of the service across replicas: its own @grpc/grpc-js channel
 * to each (a local subchannel pool, so its own HTTP/2 connection, as a
 * separate gateway process would have), calls spread round robin.
 *
 * Retries follow the contract: an in-band error with `retryable: true` is
 * sent again after a jittered exponential backoff (to the next replica in
 * turn); a non-retryable one is the answer. INTERNAL_SERVER_ERROR and
 * INFERENCE_ERROR fail the call (SERVER_FAULTS). Transport errors fail the
 * call unless `failover` is on.
 */
export interface Balancer {
  call(rpc: string, request: unknown): Promise<CallOutcome>;
  close(): void;
}

export function createBalancer(addresses: string[], options: BalancerOptions, start = 0): Balancer {
  const Ctor = NoseEmbedderService();
  const clients = addresses.map(
    (a) =>
      new Ctor(a, grpc.credentials.createInsecure(), {
        "grpc.use_local_subchannel_pool": 1,
        "grpc.max_send_message_length": 64 * 1024 * 1024,
        // A replica that comes back is tried again within a second, not after minutes of growing backoff.
        "grpc.initial_reconnect_backoff_ms": 200,
        "grpc.max_reconnect_backoff_ms": 1000,
      }) as ServiceClient,
  );
  const attemptDeadlineMs = options.attemptDeadlineMs ?? 30_000;
  const giveUpAfterMs = options.giveUpAfterMs ?? 60_000;
  const base = options.baseBackoffMs ?? 100;
  const cap = options.maxBackoffMs ?? 2000;
  const random = options.random ?? Math.random;
  let next = start;

  const once = (replica: number, rpc: string, request: unknown) =>
    new Promise<{ err: grpc.ServiceError | null; res: any }>((resolve) =>
      clients[replica][rpc](request, new grpc.Metadata(), { deadline: Date.now() + attemptDeadlineMs }, (err, res) =>
        resolve({ err, res }),
      ),
    );
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  return {
    async call(rpc, request) {
      const started = Date.now();
      const retries: RetryReason[] = [];
      let backoffs = 0;
      let transportInARow = 0;
      for (;;) {
        const replica = next;
        next = (next + 1) % clients.length;
        const { err, res } = await once(replica, rpc, request);
        const attempts = retries.length + 1;
        if (err) {
          const what = `${rpc} on ${addresses[replica]}: ${grpc.status[err.code]} ${err.details}`;
          if (!options.failover || err.code !== grpc.status.UNAVAILABLE)
            throw new CallFailure(`transport error after ${attempts} attempt(s): ${what}`, retries);
          retries.push("transport");
          // Every replica refused in a row: back off before going round again.
          if (++transportInARow % clients.length !== 0) continue;
        } else if (!res.success && SERVER_FAULTS.has(res.error_code)) {
          throw new CallFailure(
            `${rpc} on ${addresses[replica]} answered a server fault (${res.error_code}, retryable ${res.retryable}): ${res.error_message}`,
            retries,
          );
        } else if (!res.success && res.retryable === true) {
          transportInARow = 0;
          retries.push(`in-band ${res.error_code}`);
        } else {
          return { res, replica, attempts, retries };
        }
        if (Date.now() - started > giveUpAfterMs) {
          throw new CallFailure(
            `${rpc} still failing after ${attempts} attempts in ${Date.now() - started} ms: ${err ? err.details : res.error_message}`,
            retries,
          );
        }
        const backoff = Math.min(cap, base * 2 ** backoffs++);
        await sleep(backoff / 2 + (random() * backoff) / 2);
      }
    },
    close() {
      for (const c of clients) c.close();
    },
  };
}
