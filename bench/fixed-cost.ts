/**
 * Ours against the in-process reference, one photo at a time, and where a
 * call's time goes end to end.
 *
 * - Ours: the server as `npm start` runs it (its own process,
 *   `node --import tsx server/main.ts`, LOG_LEVEL=error, defaults otherwise),
 *   one @grpc/grpc-js client calling ExtractNoseVector as the gateway does.
 * - Reference: Pillow's preprocessing in a long-lived python3 process fed
 *   the same photo over a pipe (bench/old-pipeline/pillow-pipe.py, timed
 *   inside Python: no transport counted), plus the bundled model's fp32
 *   file (MODEL_PATH, what the old server ran) in onnxruntime-node in this
 *   process on Pillow's tensor, with ONNX Runtime's default session options.
 *   No gRPC, no HTTP/2: the floor a service could reach with that model.
 * - Baseline (optional): a second server, from another checkout or from this
 *   one with other settings (`npm run bench` runs this one with
 *   MODEL_PRECISION=fp32, the reference's model), called in the same turns.
 *
 * Both are called in turn, call by call, so both see the same moments of a
 * shared machine. CPU time per call is read from /proc/<pid>/task/<tid>/schedstat
 * (nanoseconds, every thread) for the server and the Python process, and
 * for this process's model run, which contention disturbs less than wall time.
 *
 * The stage table uses means (they add up; medians do not): the client's
 * round trip = client -> server's HTTP/2 headers + the request body's
 * arrival + until the handler starts + the handler (its stages, and what
 * the stages do not name) + handler end -> stream closed + -> client's
 * callback. Timestamps are epoch milliseconds in both processes
 * (performance.timeOrigin + now) from bench/fixed-cost-probe.ts.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as ort from "onnxruntime-node";
import { loadConfig } from "../server/config.js";
import { gatewayClient, type GatewayClient } from "../test/support/grpc-client.js";
import { ROOT } from "../test/support/server.js";
import type { CallTrace } from "./fixed-cost-probe.js";
import { extractNoseVector, waitServing } from "./grpc-call.js";
import type { PhotoSet } from "./photos.js";
import { summarize, type Summary } from "./stats.js";

/** Goals for ours / in-process reference at p50, by photo label. */
export const FIXED_COST_GOALS: Record<string, number> = { "224x224": 1.2, "1080x1080": 0.6, "4032x3024": 0.35 };

/** Client round trip split into parts that add up (means, ms). */
export interface StageMeans {
  clientToHeaders: number;
  body: number;
  toHandler: number;
  /** The handler's named stages (decode, resize, tensor, queue, handoff, batch_wait, inference). */
  stages: Record<string, number>;
  /** Handler time its stages do not name. */
  handlerOther: number;
  handler: number;
  handlerEndToClose: number;
  closeToClient: number;
  client: number;
}

export interface FixedCostSize {
  label: string;
  ours: Summary;
  /** Pillow (in-process) + model, call by call. */
  reference: Summary;
  pillow: Summary;
  model: Summary;
  ratioP50: number;
  ratioGoal: number;
  /** CPU milliseconds per call, every thread: our server; the reference's Python and model run. */
  cpuOurs: number;
  cpuPillow: number;
  cpuModel: number;
  stages?: StageMeans;
  /** A second server (another checkout) called in the same turns, when asked for. */
  baseline?: { ours: Summary; cpu: number; ratioP50: number; stages?: StageMeans };
}

export interface FixedCostResult {
  /** When and how this section ran (it may be merged into a page from another run). */
  date?: string;
  command?: string;
  load?: number;
  calls: number;
  sizes: FixedCostSize[];
  baselineDir?: string;
  /** What the baseline checkout is, for the page (e.g. "commit 9f8ddcc, before this work"). */
  baselineLabel?: string;
  /** Column names for the baseline and ours (default "before" and "after"). */
  columns?: { baseline: string; ours: string };
}

/** CPU nanoseconds of every live thread of a process, from schedstat. */
export function cpuNs(pid: number | "self"): number {
  let ns = 0;
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, "utf8").split(" ")[0]);
    } catch {
      // the thread ended meanwhile
    }
  }
  return ns;
}

export interface PillowPipe {
  pid: number;
  preprocess(jpeg: Buffer): Promise<{ ms: number; tensor: Float32Array }>;
  stop(): void;
}

/** bench/old-pipeline/pillow-pipe.py, started; one photo at a time. */
export function startPillowPipe(): PillowPipe {
  const proc = spawn("/usr/bin/python3", [path.join(ROOT, "bench/old-pipeline/pillow-pipe.py")], { stdio: ["pipe", "pipe", "inherit"] });
  const want = 4 + 4 * 3 * 224 * 224;
  let buf = Buffer.alloc(0);
  let waiting: ((b: Buffer) => void) | undefined;
  proc.stdout!.on("data", (c: Buffer) => {
    buf = Buffer.concat([buf, c]);
    if (buf.length >= want && waiting) {
      const w = waiting;
      waiting = undefined;
      const one = buf.subarray(0, want);
      buf = buf.subarray(want);
      w(one);
    }
  });
  return {
    pid: proc.pid!,
    preprocess: (jpeg) =>
      new Promise((resolve) => {
        waiting = (b) => {
          const copy = new Uint8Array(b.subarray(4)).buffer;
          resolve({ ms: b.readFloatLE(0), tensor: new Float32Array(copy) });
        };
        const head = Buffer.alloc(4);
        head.writeUInt32LE(jpeg.length);
        proc.stdin!.write(Buffer.concat([head, jpeg]));
      }),
    stop: () => proc.stdin!.end(),
  };
}

interface Server {
  proc: ChildProcess;
  client: GatewayClient;
  traces(): Promise<CallTrace[]>;
  stop(): Promise<void>;
}

async function startServer(dir: string, env: Record<string, string> = {}): Promise<Server> {
  const dataDir = mkdtempSync(path.join(tmpdir(), "nosepaw-bench-"));
  const port = 20000 + Math.floor(Math.random() * 30000);
  const proc = spawn(process.execPath, ["--import", "tsx", "--import", path.join(ROOT, "bench/fixed-cost-probe.ts"), "server/main.ts"], {
    cwd: dir,
    env: { ...process.env, GRPC_PORT: String(port), GRPC_HOST: "127.0.0.1", DATA_DIR: dataDir, LOG_LEVEL: "error", ...env },
    stdio: ["ignore", "ignore", "inherit", "ipc"],
  });
  const client = gatewayClient(`127.0.0.1:${port}`);
  await waitServing(client);
  // SERVING comes before the embedded database and the start-up sweeps are done; let them finish off the clock.
  await new Promise((r) => setTimeout(r, STARTUP_QUIET_MS));
  return {
    proc,
    client,
    traces: () =>
      new Promise((resolve) => {
        proc.once("message", (m) => resolve(m as CallTrace[]));
        proc.send("call-traces");
      }),
    async stop() {
      client.close();
      const exited = new Promise((r) => proc.once("exit", r));
      proc.kill("SIGTERM");
      await exited;
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * A pause before each timed run. ONNX Runtime's threads (the reference's and each server's) spin for a while after
 * a run, and a server finishes a call after its client has the answer: back to back, each measurement would pay
 * for the previous one's tail on the other core. A caller that sends one photo at a time leaves such gaps anyway.
 */
const SETTLE_MS = 20;
const settle = () => new Promise((r) => setTimeout(r, SETTLE_MS));
/** After SERVING: the embedded database and the start-up sweeps finish in the first seconds. */
const STARTUP_QUIET_MS = 5000;

const mean = (v: number[]) => (v.length ? v.reduce((a, b) => a + b, 0) / v.length : NaN);

function stageMeans(traces: CallTrace[], sent: Map<string, { at: number; ms: number }>): StageMeans | undefined {
  const rows = traces.filter((t) => sent.has(t.id) && t.headersAt && t.handlerStart && t.handlerEnd && t.closedAt);
  if (rows.length === 0) return undefined;
  const names = [...new Set(rows.flatMap((t) => Object.keys(t.stages ?? {})))];
  const stages: Record<string, number> = {};
  for (const n of names) stages[n] = mean(rows.map((t) => t.stages?.[n] ?? 0));
  const handler = mean(rows.map((t) => t.handlerEnd! - t.handlerStart!));
  const named = Object.values(stages).reduce((a, b) => a + b, 0);
  const s = (t: CallTrace) => sent.get(t.id)!;
  return {
    clientToHeaders: mean(rows.map((t) => t.headersAt! - s(t).at)),
    body: mean(rows.map((t) => (t.lastDataAt ?? t.headersAt!) - t.headersAt!)),
    toHandler: mean(rows.map((t) => t.handlerStart! - (t.lastDataAt ?? t.headersAt!))),
    stages,
    handlerOther: handler - named,
    handler,
    handlerEndToClose: mean(rows.map((t) => t.closedAt! - t.handlerEnd!)),
    closeToClient: mean(rows.map((t) => s(t).at + s(t).ms - t.closedAt!)),
    client: mean(rows.map((t) => s(t).ms)),
  };
}

export async function fixedCost(
  photos: PhotoSet[],
  calls: number,
  baselineDir?: string,
  baselineEnv: Record<string, string> = {},
): Promise<FixedCostResult> {
  const startedAt = new Date().toISOString();
  const load = Number(loadavg()[0].toFixed(2));
  // MODEL_PRECISION=fp32: MODEL_PATH itself, the model the old server ran, whatever variant the server picks.
  const config = loadConfig({ MODEL_PRECISION: "fp32" });
  const pipe = startPillowPipe();
  const ours = await startServer(ROOT);
  const base = baselineDir ? await startServer(baselineDir, baselineEnv) : undefined;
  // ONNX Runtime's own defaults, as anyone opening the shipped model would run it: not the server's settings.
  const session = await ort.InferenceSession.create(config.modelPath);
  const inputName = session.inputNames[0];
  const call = async (server: Server, jpeg: Buffer, id: string, sent: Map<string, { at: number; ms: number }>) => {
    const meta = new grpc.Metadata();
    meta.set("x-request-id", id);
    const c0 = cpuNs(server.proc.pid!);
    const at = performance.timeOrigin + performance.now();
    const r = await extractNoseVector(server.client, jpeg, meta);
    const cpu = (cpuNs(server.proc.pid!) - c0) / 1e6;
    if (!r.res.success || r.res.vector_size !== 512) throw new Error(`server failed: ${r.res.error_message}`);
    sent.set(id, { at, ms: r.ms });
    return { ms: r.ms, cpu };
  };
  try {
    const sizes: FixedCostSize[] = [];
    for (const set of photos) {
      const o: number[] = [];
      const oCpu: number[] = [];
      const b: number[] = [];
      const bCpu: number[] = [];
      const ref: number[] = [];
      const pil: number[] = [];
      const mod: number[] = [];
      const pilCpu: number[] = [];
      const modCpu: number[] = [];
      const sentOurs = new Map<string, { at: number; ms: number }>();
      const sentBase = new Map<string, { at: number; ms: number }>();
      // A server that has run a few photos of each size: first calls pay for JIT and ONNX Runtime's lazy set-up.
      const warmup = 10;
      for (let i = -warmup; i < calls; i++) {
        const k = (i + warmup) % set.jpegs.length;
        const jpeg = set.jpegs[k];
        await settle();
        const p0 = cpuNs(pipe.pid);
        const p = await pipe.preprocess(jpeg);
        const p1 = cpuNs(pipe.pid);
        const m0 = cpuNs("self");
        const t = performance.now();
        await session.run({ [inputName]: new ort.Tensor("float32", p.tensor, [1, 3, 224, 224]) });
        const modelMs = performance.now() - t;
        const m1 = cpuNs("self");
        // Alternate which server goes first, so neither always follows the reference's model run.
        const order = base && i % 2 ? ([base, ours] as const) : ([ours, base] as const);
        const res = new Map<Server, { ms: number; cpu: number }>();
        for (const s of order) {
          if (!s) continue;
          await settle();
          res.set(s, await call(s, jpeg, `fc-${set.label}-${i}`, s === ours ? sentOurs : sentBase));
        }
        if (i < 0) continue;
        ref.push(p.ms + modelMs);
        pil.push(p.ms);
        mod.push(modelMs);
        pilCpu.push((p1 - p0) / 1e6);
        modCpu.push((m1 - m0) / 1e6);
        o.push(res.get(ours)!.ms);
        oCpu.push(res.get(ours)!.cpu);
        if (base) {
          b.push(res.get(base)!.ms);
          bCpu.push(res.get(base)!.cpu);
        }
      }
      // Warm-up calls (negative numbers) stay out of the stage means.
      for (const sent of [sentOurs, sentBase]) for (const id of [...sent.keys()]) if (/--\d+$/.test(id)) sent.delete(id);
      const oursS = summarize(o);
      const refS = summarize(ref);
      const size: FixedCostSize = {
        label: set.label,
        ours: oursS,
        reference: refS,
        pillow: summarize(pil),
        model: summarize(mod),
        ratioP50: oursS.p50 / refS.p50,
        ratioGoal: FIXED_COST_GOALS[set.label] ?? 1,
        cpuOurs: mean(oCpu),
        cpuPillow: mean(pilCpu),
        cpuModel: mean(modCpu),
        stages: stageMeans(await ours.traces(), sentOurs),
      };
      if (base) {
        const bs = summarize(b);
        size.baseline = { ours: bs, cpu: mean(bCpu), ratioP50: bs.p50 / refS.p50, stages: stageMeans(await base.traces(), sentBase) };
      }
      sizes.push(size);
    }
    // Paths relative to the checkout: the report is committed.
    const command = [path.relative(ROOT, process.argv[1]), ...process.argv.slice(2)].join(" ");
    const baseline = baselineDir === undefined ? undefined : path.relative(ROOT, baselineDir) || ".";
    return { date: startedAt, command, load, calls, sizes, baselineDir: baseline };
  } finally {
    pipe.stop();
    await session.release();
    await ours.stop();
    await base?.stop();
  }
}

/** `node --import tsx bench/fixed-cost.ts [calls] [baseline-checkout] [out.json]`: this section alone, printed (and written). */
if (import.meta.url === `file://${process.argv[1]}`) {
  const { benchPhotos } = await import("./photos.js");
  const calls = Number(process.argv[2] ?? 30);
  const only = process.env.FIXED_COST_ONLY?.split(",");
  const photos = (await benchPhotos(3)).filter((p) => !only || only.includes(p.label));
  const r = await fixedCost(photos, calls, process.argv[3] || undefined);
  if (process.env.FIXED_COST_BASELINE_LABEL) r.baselineLabel = process.env.FIXED_COST_BASELINE_LABEL;
  if (process.argv[4]) writeFileSync(process.argv[4], JSON.stringify(r, null, 1) + "\n");
  const f = (v: number) => v.toFixed(2);
  for (const s of r.sizes) {
    console.log(
      `${s.label}: ours p50 ${f(s.ours.p50)} ms, reference p50 ${f(s.reference.p50)} (Pillow ${f(s.pillow.p50)} + model ${f(s.model.p50)}), ratio ${f(s.ratioP50)} (goal <= ${s.ratioGoal});` +
        ` CPU/call ours ${f(s.cpuOurs)} ms, reference ${f(s.cpuPillow + s.cpuModel)} (Pillow ${f(s.cpuPillow)} + model ${f(s.cpuModel)})`,
    );
    if (s.baseline)
      console.log(`  baseline: p50 ${f(s.baseline.ours.p50)} ms, ratio ${f(s.baseline.ratioP50)}, CPU/call ${f(s.baseline.cpu)} ms`);
    for (const [name, st] of [
      ["ours", s.stages],
      ["baseline", s.baseline?.stages],
    ] as const) {
      if (!st) continue;
      const stg = Object.entries(st.stages)
        .map(([k, v]) => `${k} ${f(v)}`)
        .join(", ");
      console.log(
        `  ${name} means: client->headers ${f(st.clientToHeaders)}, body ${f(st.body)}, ->handler ${f(st.toHandler)}, handler ${f(st.handler)} [${stg}, other ${f(st.handlerOther)}], handler end->close ${f(st.handlerEndToClose)}, close->client ${f(st.closeToClient)} = client ${f(st.client)}`,
      );
    }
  }
  process.exit(0);
}
