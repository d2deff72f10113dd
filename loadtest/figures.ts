import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { LoadResult } from "./run-load.js";

/** Nearest-rank percentile (p in 0..100); NaN for no values. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

const ms = (v: number) => Math.round(v * 10) / 10;

export interface RpcFigures {
  calls: number;
  /** Latency the caller saw, retries and backoff included, in ms. */
  p50: number;
  p95: number;
  max: number;
  /** Calls sent again (all causes). */
  retries: number;
}

export interface LoadFigures {
  calls: number;
  wallSeconds: number;
  /** Answered calls per second over the whole run. */
  throughput: number;
  perRpc: Record<string, RpcFigures>;
  retries: { total: number; callsRetried: number; byReason: Record<string, number> };
  failures: number;
}

export function loadFigures(result: LoadResult): LoadFigures {
  const byRpc = new Map<string, LoadResult["records"]>();
  for (const r of result.records) byRpc.set(r.rpc, [...(byRpc.get(r.rpc) ?? []), r]);
  const perRpc: Record<string, RpcFigures> = {};
  for (const [rpc, recs] of [...byRpc].sort(([a], [b]) => a.localeCompare(b))) {
    const lat = recs.map((r) => r.ms);
    perRpc[rpc] = {
      calls: recs.length,
      p50: ms(percentile(lat, 50)),
      p95: ms(percentile(lat, 95)),
      max: ms(Math.max(...lat)),
      retries: recs.reduce((s, r) => s + r.retries.length, 0),
    };
  }
  const byReason: Record<string, number> = {};
  for (const r of result.records) for (const why of r.retries) byReason[why] = (byReason[why] ?? 0) + 1;
  return {
    calls: result.records.length,
    wallSeconds: Math.round(result.wallMs / 100) / 10,
    throughput: Math.round((result.records.length / (result.wallMs / 1000)) * 10) / 10,
    perRpc,
    retries: {
      total: Object.values(byReason).reduce((s, v) => s + v, 0),
      callsRetried: result.records.filter((r) => r.retries.length > 0).length,
      byReason,
    },
    failures: result.failures.length,
  };
}

export function machine() {
  return {
    cpu: os.cpus()[0]?.model.trim() ?? "unknown",
    cores: os.availableParallelism(),
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    load1AtStart: Math.round(os.loadavg()[0] * 100) / 100,
  };
}

/** The figures as lines for a terminal. */
export function formatFigures(f: LoadFigures): string {
  const lines = [
    `${f.calls} calls in ${f.wallSeconds} s: ${f.throughput} calls/s; ${f.retries.total} retries over ${f.retries.callsRetried} calls ${JSON.stringify(f.retries.byReason)}; ${f.failures} failures`,
    `${"rpc".padEnd(18)} ${"calls".padStart(6)} ${"p50 ms".padStart(8)} ${"p95 ms".padStart(8)} ${"max ms".padStart(8)} ${"retries".padStart(8)}`,
  ];
  for (const [rpc, r] of Object.entries(f.perRpc)) {
    lines.push(
      `${rpc.padEnd(18)} ${String(r.calls).padStart(6)} ${String(r.p50).padStart(8)} ${String(r.p95).padStart(8)} ${String(r.max).padStart(8)} ${String(r.retries).padStart(8)}`,
    );
  }
  return lines.join("\n");
}

/** Writes `<dir>/<name>-<YYYY-MM-DD>.json` and `<dir>/<name>-latest.json`; returns the dated path. */
export function writeResults(dir: string, name: string, report: unknown): string {
  mkdirSync(dir, { recursive: true });
  const text = `${JSON.stringify(report, null, 2)}\n`;
  const dated = path.join(dir, `${name}-${new Date().toISOString().slice(0, 10)}.json`);
  writeFileSync(dated, text);
  writeFileSync(path.join(dir, `${name}-latest.json`), text);
  return dated;
}

/**
 * Mean milliseconds per call in each stage, per RPC, summed over the
 * servers' `nosepaw_rpc_stage_duration_seconds` histograms (Prometheus text
 * from GET /metrics). A stage a call never entered does not count for it.
 */
export function stageMeans(expositions: string[]): Record<string, Record<string, number>> {
  const sum = new Map<string, number>();
  const count = new Map<string, number>();
  for (const text of expositions) {
    for (const line of text.split("\n")) {
      const m = /^nosepaw_rpc_stage_duration_seconds_(sum|count)\{(.*)\} (\S+)$/.exec(line);
      if (!m) continue;
      const method = /method="([^"]*)"/.exec(m[2])?.[1];
      const stage = /stage="([^"]*)"/.exec(m[2])?.[1];
      if (!method || !stage) continue;
      const key = `${method}\t${stage}`;
      const into = m[1] === "sum" ? sum : count;
      into.set(key, (into.get(key) ?? 0) + Number(m[3]));
    }
  }
  const out: Record<string, Record<string, number>> = {};
  for (const [key, s] of sum) {
    const [method, stage] = key.split("\t");
    const n = count.get(key);
    if (!n) continue;
    (out[method] ??= {})[stage] = ms((s / n) * 1000);
  }
  return out;
}
