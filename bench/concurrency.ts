/**
 * Throughput and latency under concurrent callers, micro-batching on
 * (MAX_BATCH=16) and off (MAX_BATCH=1), against the server run as its own
 * process (`node --import tsx server/main.ts`), so its peak memory is its own.
 */
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { gatewayClient } from "../test/support/grpc-client.js";
import { freePort } from "../test/support/s3.js";
import { procStatusKiB, spawnServer } from "../test/support/server-process.js";
import { extractNoseVector, waitServing } from "./grpc-call.js";
import { summarize, type Summary } from "./stats.js";

export interface LoadLevel {
  clients: number;
  requests: number;
  failed: number;
  seconds: number;
  perSecond: number;
  latency: Summary;
  /** Model runs and photos during this level, from nosepaw:batch in the server. */
  batches: number;
  meanBatch: number;
  /** Largest model run since the server started. */
  largestBatch: number;
}

export interface ServerRun {
  maxBatch: number;
  levels: LoadLevel[];
  /** VmHWM of the server process after the last (largest) level, MiB. */
  peakRssMiB: number;
  /** VmRSS right after the largest level, MiB. */
  rssAfterMiB: number;
}

export interface ConcurrencyResult {
  photo: string;
  env: Record<string, string>;
  runs: ServerRun[];
  /** Batching on / off, req/s, at 16 clients. */
  speedupAt16: number;
  /** p95 at 16 clients / p95 at 1 client, batching on. */
  p95GrowthAt16: number;
}

export const CLIENT_LEVELS = [1, 4, 16, 64];

interface BatchStats {
  runs: number;
  items: number;
  maxSize: number;
}

function statusKiB(pid: number, field: "VmHWM" | "VmRSS"): number {
  return procStatusKiB(pid, field) ?? NaN;
}

async function startChild(
  env: Record<string, string>,
): Promise<{ proc: ChildProcess; stop(): Promise<void>; batchStats(): Promise<BatchStats> }> {
  const server = spawnServer({
    command: process.execPath,
    args: ["--import", "tsx", "--import", "./bench/server-probe.ts", "server/main.ts"],
    env: { ...process.env, ...env },
    readLogs: false,
    ipc: true,
  });
  const { proc } = server;
  proc.once(
    "exit",
    (code) => code && code !== 0 && console.error(`server (MAX_BATCH=${env.MAX_BATCH}) exited ${code}: ${server.stderr().slice(-2000)}`),
  );
  return {
    proc,
    batchStats: () =>
      new Promise<BatchStats>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("server probe did not answer")), 5000);
        proc.once("message", (m) => (clearTimeout(timer), resolve(m as BatchStats)));
        proc.send("batch-stats");
      }),
    async stop() {
      await server.stop({ killAfterMs: 20_000 });
      await server.exited;
    },
  };
}

export async function concurrency(
  photos: Buffer[],
  label: string,
  requestsPerClient: (clients: number) => number,
): Promise<ConcurrencyResult> {
  const runs: ServerRun[] = [];
  let env: Record<string, string> = {};
  for (const maxBatch of [16, 1]) {
    const dataDir = mkdtempSync(path.join(tmpdir(), "nosepaw-bench-"));
    env = {
      GRPC_PORT: String(await freePort()),
      GRPC_HOST: "127.0.0.1",
      DATA_DIR: dataDir,
      MAX_BATCH: String(maxBatch),
      LOG_LEVEL: "error",
    };
    const child = await startChild(env);
    const client = gatewayClient(`127.0.0.1:${env.GRPC_PORT}`);
    try {
      await waitServing(client);
      for (const p of photos) await extractNoseVector(client, p); // warm-up
      const levels: LoadLevel[] = [];
      for (const clients of CLIENT_LEVELS) {
        const each = requestsPerClient(clients);
        const before = await child.batchStats();
        const latencies: number[] = [];
        let failed = 0;
        const t = performance.now();
        // Closed-loop callers on one channel, as the gateway multiplexes its calls.
        await Promise.all(
          Array.from({ length: clients }, async (_, c) => {
            for (let i = 0; i < each; i++) {
              const a = await extractNoseVector(client, photos[(c + i) % photos.length]).catch(() => undefined);
              if (!a?.res.success) failed++;
              else latencies.push(a.ms);
            }
          }),
        );
        const seconds = (performance.now() - t) / 1000;
        const after = await child.batchStats();
        const runsDone = after.runs - before.runs;
        levels.push({
          clients,
          requests: clients * each,
          failed,
          seconds,
          perSecond: latencies.length / seconds,
          latency: summarize(latencies),
          batches: runsDone,
          meanBatch: runsDone ? (after.items - before.items) / runsDone : NaN,
          largestBatch: after.maxSize,
        });
      }
      runs.push({
        maxBatch,
        levels,
        peakRssMiB: statusKiB(child.proc.pid!, "VmHWM") / 1024,
        rssAfterMiB: statusKiB(child.proc.pid!, "VmRSS") / 1024,
      });
    } finally {
      client.close();
      await child.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  }
  const at = (run: ServerRun, c: number) => run.levels.find((l) => l.clients === c)!;
  const on = runs.find((r) => r.maxBatch === 16)!;
  const off = runs.find((r) => r.maxBatch === 1)!;
  return {
    photo: label,
    env: { ...env, GRPC_PORT: "(free port)", DATA_DIR: "(temp dir)", MAX_BATCH: "16 | 1" },
    runs,
    speedupAt16: at(on, 16).perSecond / at(off, 16).perSecond,
    p95GrowthAt16: at(on, 16).latency.p95 / at(on, 1).latency.p95,
  };
}
