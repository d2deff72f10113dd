import os from "node:os";
import { createS3Store } from "../server/storage/s3-store.js";
import { startPostgres, type TestPostgres } from "../test/support/postgres.js";
import { remoteRegistryEnv } from "../test/support/registry-env.js";
import { startReplica, type Replica } from "../test/support/replicas.js";
import { startS3, type TestS3 } from "../test/support/s3.js";
import { loadFigures, machine, stageMeans, type LoadFigures } from "./figures.js";
import { nosePhotoCache } from "./nose-photo-cache.js";
import { checkRegistry, type RegistryCheck } from "./registry-checks.js";
import { runLoad, type Disruption } from "./run-load.js";
import { Workload, type Mix } from "./workload.js";

/**
 * - object-store: the S3-protocol server is stopped halfway through the
 *   calls and started again on the same port and folder `outageMs` later;
 * - kill-replica: the second replica gets SIGKILL halfway through and is
 *   started again on its port (the balancer sends its calls elsewhere
 *   meanwhile).
 */
export type DisruptionKind = "object-store" | "kill-replica" | "none";

export interface ScenarioOptions {
  calls: number;
  concurrency: number;
  replicas: number;
  mix: Mix;
  disrupt: DisruptionKind;
  /** How long the object store stays down. Default 1500 ms. */
  outageMs?: number;
  seed?: number;
  /** Extra server environment (MODEL_PATH, ...). */
  env?: Record<string, string>;
  log?: (line: string) => void;
}

export interface ScenarioReport {
  date: string;
  machine: ReturnType<typeof machine>;
  config: {
    calls: number;
    concurrency: number;
    replicas: number;
    mix: Mix;
    disrupt: DisruptionKind;
    seed: number;
    serverEnv: Record<string, string>;
  };
  figures: LoadFigures;
  /** Answered calls per replica (by the replica that gave the final answer). */
  answeredBy: number[];
  disruption?: Record<string, unknown>;
  /** Peak resident memory (VmHWM) of each server process after the load, MiB; a killed replica's peak before the kill is in `disruption`. */
  peakRssMiB: Array<number | undefined>;
  /** Mean ms per call in each server-side stage, per RPC (a restarted replica counts from its restart); absent where /metrics is not served. */
  stageMeansMs?: Record<string, Record<string, number>>;
  registry: RegistryCheck;
  /** Warn and error lines of the servers that no disruption of this scenario explains (see `expectedLogLine`), per replica. */
  unexpectedLogLines: Array<{ replica: number; line: Record<string, unknown> }>;
  /** Every call that did not end as it must, every registry problem and every unexpected server log line; empty in a good run. */
  failures: string[];
  seconds: { photos: number; startUp: number; load: number; checks: number; total: number };
}

/** ML codes a retryable in-band error may carry: model not loaded, object store unreachable, service unavailable (database, busy, superseded). */
const RETRYABLE_ML_CODES = new Set(["ML_5001", "ML_5003", "ML_5005"]);

/**
 * The server warnings a load run may log: a retryable failure of one call
 * (the outage the scenario causes, a busy queue) and the start-up notice
 * about a server without API keys. Anything else at warn or error (an
 * INTERNAL or INFERENCE error, an unhandled rejection, a failed metrics
 * scrape, a dropped database connection in a run that does not stop the
 * database) fails the run.
 */
export function expectedLogLine(line: Record<string, unknown>): boolean {
  if (line.level === "warn" && line.msg === "request failed" && RETRYABLE_ML_CODES.has(String(line.code))) return true;
  if (line.level === "warn" && typeof line.msg === "string" && line.msg.startsWith("no API keys configured")) return true;
  return false;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const mib = (kib: number | undefined) => (kib === undefined ? undefined : Math.round(kib / 1024));
const secs = (ms: number) => Math.round(ms / 100) / 10;

/** The duplicate similarity a server announced when its model loaded, if it did. */
function duplicateSimilarityOf(replica: Replica): number | undefined {
  const line = replica.logs.find((l) => (l as { msg?: string })?.msg === "model loaded") as { duplicateSimilarity?: unknown } | undefined;
  return typeof line?.duplicateSimilarity === "number" ? line.duplicateSimilarity : undefined;
}

/**
 * The whole run: photos, an S3-protocol server and a PostgreSQL server,
 * `replicas` server processes sharing them, the load with its disruption,
 * then the registry checks. Everything it started is stopped before it returns.
 */
export async function runScenario(o: ScenarioOptions): Promise<ScenarioReport> {
  const log = o.log ?? (() => {});
  const seed = o.seed ?? 1;
  const t0 = performance.now();
  const host = machine();
  const dogs = Workload.dogsFor(o.calls, o.mix, seed);
  const { photo, renderedMs } = await nosePhotoCache(dogs);
  log(`${dogs} dogs' photos ready (${renderedMs > 0 ? `rendered in ${secs(renderedMs)} s` : "cached"})`);

  // Replicas that outnumber the cores share them: one model thread and one
  // decoding worker each keeps them from fighting over the same cores.
  const share = String(Math.max(1, Math.floor(os.availableParallelism() / o.replicas)));
  const serverEnv: Record<string, string> = { ...(o.replicas > 1 ? { MODEL_THREADS: share, PREPROCESS_WORKERS: share } : {}), ...o.env };

  let s3: TestS3 | undefined;
  let pg: TestPostgres | undefined;
  const replicas: Replica[] = [];
  try {
    const tStart = performance.now();
    // Each replica's pool holds up to DB_POOL_MAX (10) connections; a replica
    // killed midway leaves its backends until PostgreSQL notices, while its
    // restart opens a new pool, and the checks connect too. The test server's
    // default of 30 is exactly three pools: "too many clients" under load.
    const maxConnections = Math.max(30, o.replicas * 2 * 10 + 10);
    [s3, pg] = await Promise.all([startS3("nose-bucket"), startPostgres("ml_server", [`max_connections=${maxConnections}`])]);
    const env = { ...remoteRegistryEnv(s3, pg), ...serverEnv };
    // The first replica creates the schema; the others then start together.
    replicas.push(await startReplica({ env }));
    replicas.push(...(await Promise.all(Array.from({ length: o.replicas - 1 }, () => startReplica({ env })))));
    const startUpMs = performance.now() - tStart;
    // Read now: the replica keeps only its latest log lines.
    const duplicateSimilarity = duplicateSimilarityOf(replicas[0]);
    if (duplicateSimilarity === undefined) {
      throw new Error(
        `the first replica's "model loaded" line gave no duplicateSimilarity: look-alikes cannot be judged; logs ${JSON.stringify(replicas[0].logs.slice(-10))}`,
      );
    }
    log(`${o.replicas} replica(s) SERVING on ${replicas.map((r) => r.port).join(", ")} after ${secs(startUpMs)} s`);

    const atCall = Math.floor(o.calls / 2);
    let disruption: Disruption | undefined;
    if (o.disrupt === "object-store") {
      const store = s3;
      const outageMs = o.outageMs ?? 1500;
      disruption = {
        atCall,
        describe: `object store stopped at call ${atCall}, started again ${outageMs} ms later on the same port and folder`,
        async run() {
          const t = performance.now();
          await store.stop();
          log(`object store stopped (call ${atCall})`);
          await sleep(outageMs);
          await store.start();
          log("object store started again");
          return { downMs: Math.round(performance.now() - t) };
        },
      };
    } else if (o.disrupt === "kill-replica") {
      if (o.replicas < 2) throw new Error("kill-replica needs at least two replicas");
      const victim = replicas[1];
      disruption = {
        atCall,
        describe: `replica ${victim.address} killed (SIGKILL) at call ${atCall} and started again`,
        async run() {
          const peak = victim.peakRssKiB();
          const t = performance.now();
          await victim.kill();
          log(`replica ${victim.address} killed (call ${atCall})`);
          await sleep(1000);
          await victim.start();
          const downMs = Math.round(performance.now() - t);
          log(`replica ${victim.address} SERVING again after ${downMs} ms`);
          return { replica: victim.address, downMs, peakRssMiBBeforeKill: mib(peak) };
        },
      };
    }

    const workload = new Workload(o.calls, o.mix, () => photo, seed);
    const tLoad = performance.now();
    const result = await runLoad({
      addresses: replicas.map((r) => r.address),
      concurrency: o.concurrency,
      workload,
      failover: o.replicas > 1,
      disruption,
      progress: (done) => log(`${done}/${o.calls} calls answered (${secs(performance.now() - tLoad)} s)`),
    });
    const peakRssMiB = replicas.map((r) => mib(r.peakRssKiB()));
    const figures = loadFigures(result);
    // Where the servers spent each call's time, where they serve /metrics.
    const expositions = await Promise.all(
      replicas.map((r) =>
        fetch(`http://${r.address}/metrics`, { signal: AbortSignal.timeout(5000) })
          .then((res) => (res.ok ? res.text() : ""))
          .catch(() => ""),
      ),
    );
    const stages = stageMeans(expositions);

    const tChecks = performance.now();
    const registry = await checkRegistry({
      workload,
      photos: photo,
      database: pg.config,
      store: createS3Store(s3.config),
      addresses: replicas.map((r) => r.address),
      duplicateSimilarity,
    });
    const checksMs = performance.now() - tChecks;
    log(`registry checked in ${secs(checksMs)} s: ${registry.pets} pets, ${registry.problems.length} problems`);

    const answeredBy = replicas.map((_, i) => result.records.filter((r) => r.replica === i).length);
    const unexpectedLogLines = replicas.flatMap((r, replica) =>
      r.warnings.filter((line) => !expectedLogLine(line)).map((line) => ({ replica, line })),
    );
    const logProblems = unexpectedLogLines.map(({ replica, line }) => `replica ${replica} logged ${JSON.stringify(line).slice(0, 600)}`);
    return {
      date: new Date().toISOString(),
      machine: host,
      config: { calls: o.calls, concurrency: o.concurrency, replicas: o.replicas, mix: o.mix, disrupt: o.disrupt, seed, serverEnv },
      figures,
      answeredBy,
      disruption: result.disruption
        ? {
            describe: result.disruption.describe,
            atCall: result.disruption.atCall,
            startedAtSecond: secs(result.disruption.startedAtMs),
            ...result.disruption.report,
          }
        : undefined,
      peakRssMiB,
      stageMeansMs: Object.keys(stages).length ? stages : undefined,
      registry,
      unexpectedLogLines,
      failures: [...result.failures, ...registry.problems, ...logProblems],
      seconds: {
        photos: secs(renderedMs),
        startUp: secs(startUpMs),
        load: secs(result.wallMs),
        checks: secs(checksMs),
        total: secs(performance.now() - t0),
      },
    };
  } finally {
    await Promise.allSettled(replicas.map((r) => r.dispose()));
    await Promise.allSettled([s3?.dispose(), pg?.dispose()]);
  }
}
