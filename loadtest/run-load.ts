import { createBalancer, CallFailure, type RetryReason } from "./balancer.js";
import type { OpKind, RpcName, Workload } from "./workload.js";

/** Something done to the system while the load runs (an outage), started when call `atCall` is sent. */
export interface Disruption {
  atCall: number;
  describe: string;
  /** Resolves when the system is whole again, with what to report about it. */
  run(): Promise<Record<string, unknown>>;
}

export interface LoadOptions {
  addresses: string[];
  concurrency: number;
  workload: Workload;
  failover: boolean;
  disruption?: Disruption;
  /** Called every `calls / 10` answers with the count so far. */
  progress?: (done: number) => void;
}

export interface CallRecord {
  index: number;
  kind: OpKind;
  rpc: RpcName;
  replica: number;
  /** From sending the first attempt to the final answer, retries and backoff included. */
  ms: number;
  retries: RetryReason[];
  /** When the call was sent, ms after the load started. */
  sentAt: number;
}

export interface LoadResult {
  wallMs: number;
  records: CallRecord[];
  /** Calls that did not end as the workload says they must, with why. */
  failures: string[];
  disruption?: { describe: string; atCall: number; startedAtMs: number; endedAtMs: number; report: Record<string, unknown> };
}

/**
 * Sends `workload.calls` calls from `concurrency` clients, each its own
 * gRPC connection(s) sending its next call once the previous one is
 * answered. Every call runs to a final answer through the balancer's
 * retries; the workload judges each answer.
 */
export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const { workload, concurrency, disruption } = options;
  const records: CallRecord[] = [];
  const failures: string[] = [];
  const t0 = performance.now();
  let nextIndex = 0;
  let done = 0;
  const step = Math.max(1, Math.floor(workload.calls / 10));
  let disrupted: Promise<LoadResult["disruption"]> | undefined;

  const worker = async (w: number) => {
    // Staggered starting replicas, so the clients do not move round the replicas in step.
    const balancer = createBalancer(options.addresses, { failover: options.failover }, w % options.addresses.length);
    try {
      for (;;) {
        const index = nextIndex++;
        if (index >= workload.calls) return;
        if (disruption && index === disruption.atCall) {
          const startedAtMs = performance.now() - t0;
          disrupted = disruption.run().then((report) => ({
            describe: disruption.describe,
            atCall: disruption.atCall,
            startedAtMs,
            endedAtMs: performance.now() - t0,
            report,
          }));
          // Judged after the load; until then a failure must not count as unhandled.
          disrupted.catch(() => {});
        }
        const op = await workload.op(index);
        const sentAt = performance.now();
        try {
          const out = await balancer.call(op.rpc, op.request);
          records.push({
            index,
            kind: op.kind,
            rpc: op.rpc,
            replica: out.replica,
            ms: performance.now() - sentAt,
            retries: out.retries,
            sentAt: sentAt - t0,
          });
          const wrong = workload.settle(op, out.res, out.replica);
          if (wrong) failures.push(`call ${index} (${op.kind}): ${wrong}`);
        } catch (e) {
          if (!(e instanceof CallFailure)) throw e;
          records.push({
            index,
            kind: op.kind,
            rpc: op.rpc,
            replica: -1,
            ms: performance.now() - sentAt,
            retries: e.retries,
            sentAt: sentAt - t0,
          });
          failures.push(`call ${index} (${op.kind}): ${e.message}`);
        }
        if (++done % step === 0) options.progress?.(done);
      }
    } finally {
      balancer.close();
    }
  };

  await Promise.all(Array.from({ length: concurrency }, (_, w) => worker(w)));
  const wallMs = performance.now() - t0;
  const disruptionReport = disrupted ? await disrupted : undefined;
  return { wallMs, records, failures, disruption: disruptionReport };
}
