/**
 * Turns one run's results into the summary table (ratios first), the SVG
 * plots and BENCHMARKS.md. Pure: results in, text out; run.ts writes files.
 */
import type { GeometryBenchResult } from "./geometry.js";
import type { BrowserResult } from "./browser.js";
import type { ConcurrencyResult } from "./concurrency.js";
import type { Extrapolation } from "./extrapolate.js";
import type { IdentificationResult } from "./identification.js";
import { machineLine, type Machine } from "./machine.js";
import type { ModelResult } from "./model.js";
import { fmt } from "./stats.js";
import { barChart } from "./svg-chart.js";
import type { VsOldResult } from "./vs-old-pipeline.js";
import type { FixedCostResult } from "./fixed-cost.js";

export interface Results {
  command: string;
  quick: boolean;
  date: string;
  durationSeconds: number;
  machine: Machine;
  /** Said on every page and plot: these runs share the machine. */
  conditions: string;
  vsOld?: VsOldResult;
  fixedCost?: FixedCostResult;
  concurrency?: ConcurrencyResult;
  identification?: IdentificationResult;
  extrapolation?: Extrapolation[];
  model?: ModelResult;
  browser?: BrowserResult;
  geometry?: GeometryBenchResult;
  /** bench/concurrency-profile.md as read when the page was written: a profile taken by hand, quoted as is. */
  profileNotes?: string;
  /** bench/fixed-cost-findings.md, likewise: what the single-call trace found, quoted after the fixed-cost section. */
  fixedCostNotes?: string;
  /** Sections that failed or were left out, and why. */
  notes: Record<string, string>;
}

export interface SummaryRow {
  ratio: boolean;
  what: string;
  value: string;
  goal: string;
  met?: boolean;
}

const verdict = (met: boolean | undefined) => (met === undefined ? "" : met ? "met" : "NOT met");

export function summaryRows(r: Results): SummaryRow[] {
  const rows: SummaryRow[] = [];
  if (r.geometry) {
    const g = r.geometry;
    rows.push({
      ratio: true,
      what: "VerifyPet p50 with keypoint geometry / without (two enrolled photos)",
      value: `${fmt(g.verifyWith.p50 / g.verifyWithout.p50)}x (${fmt(g.verifyWith.p50)} vs ${fmt(g.verifyWithout.p50)} ms, +${fmt(g.addedP50Ms)} ms)`,
      goal: "<= +25 ms",
      met: g.addedP50Ms <= 25,
    });
  }
  for (const s of r.vsOld?.sizes ?? []) {
    if (s.ratioP50 !== undefined)
      rows.push({
        ratio: true,
        what: `ours/old p50, ExtractNoseVector ${s.label}`,
        value: `${fmt(s.ratioP50)}x`,
        goal: `<= ${s.ratioGoal}x`,
        met: s.ratioP50 <= s.ratioGoal,
      });
  }
  for (const s of r.fixedCost?.sizes ?? [])
    rows.push({
      ratio: true,
      what: `ours/in-process reference (Pillow + model) p50, ${s.label}`,
      value: `${fmt(s.ratioP50)}x`,
      goal: `<= ${s.ratioGoal}x`,
      met: s.ratioP50 <= s.ratioGoal,
    });
  for (const s of r.vsOld?.sizes ?? []) {
    if (s.outsideGoalMs === undefined) continue;
    if (s.label === "224x224")
      rows.push({
        ratio: false,
        what: `our server outside inference, ${s.label}`,
        value: `${fmt(s.outsideInferenceMedian)} ms`,
        goal: "<= 1 ms",
        met: s.outsideInferenceMedian <= 1,
      });
    else if (s.pillowPreprocess)
      rows.push({
        ratio: true,
        what: `our server outside inference / Pillow preprocessing, ${s.label}`,
        value: `${fmt(s.outsideInferenceMedian / s.pillowPreprocess.p50)}x`,
        goal: "<= 0.5x",
        met: s.outsideInferenceMedian <= s.outsideGoalMs,
      });
  }
  const c = r.concurrency;
  if (c) {
    rows.push({
      ratio: true,
      what: "throughput at 16 clients, batching on/off",
      value: `${fmt(c.speedupAt16)}x`,
      goal: ">= 1.5x",
      met: c.speedupAt16 >= 1.5,
    });
    rows.push({
      ratio: true,
      what: "p95 at 16 clients / p95 at 1 client (batching on)",
      value: `${fmt(c.p95GrowthAt16)}x`,
      goal: "<= 2x",
      met: c.p95GrowthAt16 <= 2,
    });
  }
  const b = r.browser;
  if (b?.embedWasmMs !== undefined && b.embedServerPathMs)
    rows.push({
      ratio: true,
      what: "browser WASM embedding / server path (1280x720 JPEG)",
      value: `${fmt(b.embedWasmMs / b.embedServerPathMs)}x`,
      goal: "",
    });
  for (const run of r.identification?.runs ?? []) {
    const big = run.pets >= 100_000;
    rows.push({
      ratio: false,
      what: `1:N ${run.engine}, ${run.pets} pets: query p95`,
      value: `${fmt(run.query.p95)} ms`,
      goal: big ? "<= 20 ms" : "",
      met: big ? run.query.p95 <= 20 : undefined,
    });
    rows.push({
      ratio: false,
      what: `1:N ${run.engine}, ${run.pets} pets: recall@1 / @10`,
      value: `${fmt(run.recallAt1)} / ${fmt(run.recallAt10)}`,
      goal: big ? "@1 >= 0.99" : "",
      met: big ? run.recallAt1 >= 0.99 : undefined,
    });
  }
  if (b?.frameChromiumMs !== undefined)
    rows.push({
      ratio: false,
      what: "browser live checks per 720p frame (draw + assess)",
      value: `${fmt(b.frameChromiumMs)} ms`,
      goal: "< 8 ms",
      met: b.frameChromiumMs < 8,
    });
  for (const m of r.model?.inference ?? [])
    rows.push({ ratio: false, what: `model inference, batch 1, ${m.threads} thread(s)`, value: `${fmt(m.ms.p50)} ms`, goal: "" });
  return rows.sort((x, y) => Number(y.ratio) - Number(x.ratio));
}

export function summaryTable(rows: SummaryRow[]): string {
  const lines = ["| measurement | value | goal | |", "| --- | --- | --- | --- |"];
  for (const r of rows) lines.push(`| ${r.what} | ${r.value} | ${r.goal} | ${verdict(r.met)} |`);
  return lines.join("\n");
}

const threadsOf = (n: number) => (n > 0 ? `${n}` : "runtime default");

/** Plots by file name (under bench/results/). */
export function charts(r: Results): Record<string, string> {
  const m = machineLine(r.machine);
  const out: Record<string, string> = {};
  const v = r.vsOld;
  if (v?.sizes.some((s) => s.ratioP50 !== undefined)) {
    out["vs-old-ratio.svg"] = barChart({
      title: "Ours / old Python pipeline, ExtractNoseVector round trip (lower is better)",
      subtitle: `${m}; ORT threads ${threadsOf(v.intraOpThreads)}; ${v.calls} calls per size, one client`,
      unit: "x (ours / old)",
      groups: v.sizes.map((s) => ({
        label: s.label,
        bars: [
          { series: "p50", value: s.ratioP50 ?? NaN },
          { series: "p95", value: s.ratioP95 ?? NaN },
        ],
        mark: { value: s.ratioGoal, label: `goal ${s.ratioGoal}x` },
      })),
    });
  }
  if (v) {
    out["vs-old-ms.svg"] = barChart({
      title: "ExtractNoseVector round trip, one client",
      subtitle: `${m}; ORT threads ${threadsOf(v.intraOpThreads)}; old = Python gRPC + same-engine inference`,
      unit: "ms",
      groups: v.sizes.map((s) => ({
        label: s.label,
        bars: [
          { series: "ours p50", value: s.ours.p50 },
          { series: "ours p95", value: s.ours.p95 },
          ...(s.old
            ? [
                { series: "old p50", value: s.old.p50 },
                { series: "old p95", value: s.old.p95 },
              ]
            : []),
        ],
      })),
    });
    out["server-stages.svg"] = barChart({
      title: "Where our server's time goes (median per stage, nosepaw:rpc)",
      subtitle: `${m}; ${v.preprocessWorkers} preprocessing workers; ORT threads ${threadsOf(v.intraOpThreads)}`,
      unit: "ms",
      stacked: true,
      groups: v.sizes.flatMap((s) => [
        {
          label: `ours ${s.label}`,
          bars: Object.entries(s.stagesMedian).map(([series, value]) => ({ series, value: value ?? 0 })),
        },
        ...(s.pillowPreprocess
          ? [{ label: `Pillow ${s.label}`, bars: [{ series: "Pillow preprocessing", value: s.pillowPreprocess.p50 }] }]
          : []),
      ]),
    });
  }
  const c = r.concurrency;
  if (c) {
    out["concurrency.svg"] = barChart({
      title: `Throughput under concurrent clients, ${c.photo} JPEGs`,
      subtitle: `${m}; server as its own process, default threads and workers`,
      unit: "requests/s",
      groups: c.runs[0].levels.map((l, i) => ({
        label: `${l.clients} client${l.clients > 1 ? "s" : ""}`,
        bars: c.runs.map((run) => ({
          series: `MAX_BATCH=${run.maxBatch}`,
          value: run.levels[i].perSecond,
          label: `${fmt(run.levels[i].perSecond)} req/s, p95 ${fmt(run.levels[i].latency.p95)} ms, batch ${fmt(run.levels[i].meanBatch)}`,
        })),
      })),
    });
  }
  const id = r.identification;
  if (id?.runs.length) {
    out["identification.svg"] = barChart({
      title: "1:N identification, registry nearestPets (top 5), HNSW",
      subtitle: `${m}; ${id.runs[0].settings.photos_per_pet} photos per pet; goal p95 <= 20 ms at 100k`,
      unit: "ms",
      groups: id.runs.map((run) => ({
        label: `${run.engine} ${run.pets / 1000}k`,
        bars: [
          { series: "p50", value: run.query.p50 },
          {
            series: "p95",
            value: run.query.p95,
            label: `${fmt(run.query.p95)} ms, recall@1 ${fmt(run.recallAt1)}, @10 ${fmt(run.recallAt10)}`,
          },
        ],
        mark: run.pets >= 100_000 ? { value: 20, label: "goal 20 ms" } : undefined,
      })),
    });
  }
  const mo = r.model;
  if (mo) {
    out["model.svg"] = barChart({
      title: `Model inference, batch 1 (${mo.file}, ${fmt(mo.fileMB)} MB)`,
      subtitle: `${m}; onnxruntime-node, CPU`,
      unit: "ms per image",
      groups: mo.inference.map((i) => ({
        label: `${i.threads} thread${i.threads > 1 ? "s" : ""}`,
        bars: [
          { series: "p50", value: i.ms.p50 },
          { series: "p95", value: i.ms.p95 },
        ],
      })),
    });
  }
  const b = r.browser;
  if (b && !b.skipped) {
    out["browser.svg"] = barChart({
      title: "Live checks per 720p camera frame",
      subtitle: `${m}; headless Chromium, median of ${b.frames} frames`,
      unit: "ms per frame",
      groups: [
        {
          label: "Chromium",
          bars: [
            { series: "draw + read back", value: b.drawChromiumMs ?? NaN },
            { series: "assessFrame", value: b.assessChromiumMs ?? NaN },
          ],
          mark: { value: 8, label: "goal 8 ms" },
        },
        { label: "Node", bars: [{ series: "assessFrame", value: b.assessNodeMs ?? NaN }] },
      ],
      stacked: true,
    });
  }
  return out;
}

const ms = (v: number | undefined) => (v === undefined ? "n/a" : `${fmt(v)} ms`);

/** Sections re-run alone and merged into the page say so here as well as where they appear. */
function merged(r: Results): string {
  const later: string[] = [];
  if (r.fixedCost?.date && r.fixedCost.date.slice(0, 16) !== r.date.slice(0, 16))
    later.push(`the in-process reference comparison (${r.fixedCost.date.slice(0, 10)})`);
  if (r.notes.model?.includes("merged")) later.push("the model section");
  // Written by hand when sections re-run alone are merged into a full run's results (bench/results/latest.json).
  if (r.notes.merged) later.push(r.notes.merged);
  return later.length ? ` except ${later.join(" and ")}, taken by later runs of those sections alone and merged in (see there)` : "";
}

export function markdown(r: Results, summary: SummaryRow[], chartFiles: string[]): string {
  const m = machineLine(r.machine);
  const img = (f: string) => (chartFiles.includes(f) ? `\n![${f}](bench/results/${f})\n` : "");
  const L: string[] = [];
  L.push("# Benchmarks", "");
  L.push(
    `Generated by \`${r.command}\` on ${r.date.slice(0, 10)}; every figure below comes from that one run${merged(r)}. Raw figures: [bench/results/latest.json](bench/results/latest.json).`,
    "",
    `**Machine**: ${r.machine.cpu}, ${r.machine.cores} cores, ${r.machine.memoryGiB} GiB, Node ${r.machine.node}, ${r.machine.os}. ${r.conditions}`,
    "",
    "Reproduce: `npm run bench` (about 30 minutes; `npm run bench -- --quick` in under 5 on a quiet machine: fewer repetitions, 10k pets only, no WebGPU). Needs what `.ci/run` installs: /usr/bin/python3 with python3-grpcio, python3-pil and python3-numpy (`bash scripts/install-train-deps.sh`), PostgreSQL 15 with pgvector (`bash scripts/install-pgvector.sh`), and /usr/bin/chromium for the browser section. A section that cannot run says why below and the rest still run.",
    "",
  );
  L.push("## Summary (ratios first)", "", summaryTable(summary), "");

  const v = r.vsOld;
  if (v) {
    L.push("## 1. Against the old Python pipeline", "");
    L.push(
      `One client calls \`ExtractNoseVector\` over @grpc/grpc-js with the gateway's loader options (\`{keepCase: true, longs: String, enums: String, defaults: true, oneofs: true}\`), \`image_data\` sent as a Buffer, \`image_format: "jpeg"\`; ${v.calls} calls per size after 2 warm-up calls, cycling over ${v.sizes[0]?.jpegBytes.length ?? 0} different photos per size, the two pipelines called in turn call by call so both see the same moments of the machine. Photos: rendered dog noses scaled to the size with camera grain and light falloff, JPEG quality 90, 4:2:0 (sizes in latest.json).`,
      "",
      `- **Ours**: the server started in the benchmark's process with \`startApp(loadConfig({...}), createLogger("error"))\`, defaults otherwise: ORT intra-op threads ${threadsOf(v.intraOpThreads)}, ${v.preprocessWorkers} preprocessing workers, MAX_BATCH ${v.maxBatch}.`,
      `- **Old**: ${v.oldPipeline}, a gRPC server whose ExtractNoseVector runs the old preprocessing exactly (\`ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB").resize((224,224), Image.LANCZOS)\`, /255 float32, HWC->CHW: test/pil/reference.py's own function, Pillow 9.4) and answers a 512-float vector. Debian has no python3-onnxruntime, so its inference is the same ONNX Runtime engine (onnxruntime-node, the shipped models/nose-embedder.onnx, the same intra-op threads as our server: ${threadsOf(v.intraOpThreads)}) timed on the tensor the Python server produced for that photo, batch 1, and added call by call to its gRPC round trip before taking p50/p95.`,
      `- **Pillow's preprocessing time** is timed inside the Python server (perf_counter around decode..contiguous CHW float32 copy) and returned as trailing metadata.`,
      "",
      "| photo | ours p50 / p95 | old p50 / p95 | ours/old p50 | ours/old p95 | goal | our server's path |",
      "| --- | --- | --- | --- | --- | --- | --- |",
    );
    for (const s of v.sizes) {
      const path = Object.keys(s.paths).length
        ? Object.entries(s.paths)
            .map(([k, n]) => `${k} (${n})`)
            .join(", ")
        : "not reported (no `record.path` in nosepaw:rpc)";
      L.push(
        `| ${s.label} | ${ms(s.ours.p50)} / ${ms(s.ours.p95)} | ${s.old ? `${ms(s.old.p50)} / ${ms(s.old.p95)}` : "n/a"} | ${s.ratioP50 !== undefined ? `${fmt(s.ratioP50)}x` : "n/a"} | ${s.ratioP95 !== undefined ? `${fmt(s.ratioP95)}x` : "n/a"} | <= ${s.ratioGoal}x | ${path} |`,
      );
    }
    L.push(
      "",
      `Old pipeline split (p50): ${v.sizes.map((s) => `${s.label}: gRPC + Pillow ${ms(s.oldGrpc?.p50)}, inference ${ms(s.oldInference?.p50)}`).join("; ")}.`,
      "",
    );
    L.push(img("vs-old-ratio.svg"), img("vs-old-ms.svg"));
    L.push("### Overhead inside our server", "");
    L.push(
      "Medians over the same calls, from the `nosepaw:rpc` diagnostics channel (subscribed in the server's process): `ms` is the whole call inside the server, stages as `RpcRecord` names them; outside inference = ms - inference. Goals: outside inference at most half of Pillow's preprocessing at 1080x1080 and 12 MP, at most 1 ms at 224x224.",
      "",
      "| photo | queue | handoff | decode | resize | tensor | batch_wait | inference | server ms | outside inference | Pillow preprocessing p50 | goal | |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    );
    for (const s of v.sizes) {
      const st = s.stagesMedian;
      const met = s.outsideGoalMs === undefined ? undefined : s.outsideInferenceMedian <= s.outsideGoalMs;
      L.push(
        `| ${s.label} | ${fmt(st.queue ?? NaN)} | ${fmt(st.handoff ?? NaN)} | ${fmt(st.decode ?? NaN)} | ${fmt(st.resize ?? NaN)} | ${fmt(st.tensor ?? NaN)} | ${fmt(st.batch_wait ?? NaN)} | ${fmt(st.inference ?? NaN)} | ${fmt(s.serverMsMedian)} | **${fmt(s.outsideInferenceMedian)}** | ${ms(s.pillowPreprocess?.p50)} | ${s.outsideGoalText}${s.outsideGoalMs !== undefined ? ` (${ms(s.outsideGoalMs)})` : ""} | ${verdict(met)} |`,
      );
    }
    L.push("", "All stage figures in ms, medians per column (so they need not add up to the server's ms).", img("server-stages.svg"));
  }

  if (r.fixedCost) L.push(...fixedCostSection(r.fixedCost, r.date));
  if (r.fixedCostNotes) L.push(r.fixedCostNotes.trim(), "");

  const c = r.concurrency;
  if (c) {
    L.push("## 2. Concurrency and micro-batching", "");
    L.push(
      `The server runs as its own process, \`node --import tsx server/main.ts\` with ${Object.entries(c.env)
        .map(([k, val]) => `${k}=${val}`)
        .join(
          ", ",
        )} (threads and workers at their defaults on ${r.machine.cores} cores); \`bench/server-probe.ts\` is preloaded with \`--import\` to count the model runs published on \`nosepaw:batch\` and hand the counts over the IPC channel. N closed-loop callers share one @grpc/grpc-js channel, as the gateway multiplexes its calls, each sending ${c.photo} JPEGs back to back. Peak RSS is VmHWM of the server process after the 64-client level.`,
      "",
      "| MAX_BATCH | clients | requests | failed | req/s | p50 | p95 | mean batch | model runs |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    );
    for (const run of c.runs)
      for (const l of run.levels)
        L.push(
          `| ${run.maxBatch} | ${l.clients} | ${l.requests} | ${l.failed} | ${fmt(l.perSecond)} | ${ms(l.latency.p50)} | ${ms(l.latency.p95)} | ${fmt(l.meanBatch)} | ${l.batches} |`,
        );
    L.push(
      "",
      `Peak RSS (VmHWM) under the 64-client load: ${c.runs.map((run) => `MAX_BATCH=${run.maxBatch}: ${fmt(run.peakRssMiB)} MiB`).join(", ")}.`,
      "",
      `Goals: throughput at 16 clients with batching on / off **${fmt(c.speedupAt16)}x** (goal >= 1.5x, ${verdict(c.speedupAt16 >= 1.5)}); p95 at 16 clients / single-client p95 **${fmt(c.p95GrowthAt16)}x** (goal <= 2x, ${verdict(c.p95GrowthAt16 <= 2)}).`,
      img("concurrency.svg"),
    );
  }
  if (r.profileNotes) L.push(r.profileNotes.trim(), "");

  const id = r.identification;
  if (id) {
    L.push("## 3. 1:N identification", "");
    const first = id.runs[0];
    L.push(
      `The registry opened as the server opens it (\`openDatabase\`, \`migrate\`, \`createRegistry(db)\` with its defaults; ${id.efSearchNote}), the schema's own tables and HNSW index (\`vector_cosine_ops\`, pgvector defaults m=16, ef_construction=64). Pets: random unit 512-d vectors, ${first?.settings.photos_per_pet ?? 2} enrolled photos each (cosine about 0.9 to each other), and every 100th pet a planted near-duplicate of the one before it (cosine about 0.97). Rows are loaded with the index dropped, then the index is built with the migration's statement (timed). Queries: ${first?.queries ?? 0} new photos of enrolled dogs (one in five of a twin), timed through the registry's \`nearestPets\` with top_k 5 (IdentifyPet's default); recall compares the index's answer with exact search, the same registry call on a connection with \`enable_indexscan = off\` (its plan is a sequential scan: checked with EXPLAIN). "Unknown dog" recall uses photos of dogs never enrolled: on random data their neighbours are all at about the same distance, the index's hardest case and not one the goals name.`,
      "",
      "| engine | pets | rows | load s | index build s | index MiB | bytes/row | query p50 / p95 | exact query p50 | recall@1 | recall@10 | unknown dog @1 / @10 | index used |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    );
    for (const run of id.runs)
      L.push(
        `| ${run.engine} | ${run.pets} | ${run.rows} | ${fmt(run.loadSeconds)} | ${fmt(run.indexBuildSeconds)} | ${fmt(run.indexMiB)} | ${Math.round(run.indexBytesPerRow)} | ${ms(run.query.p50)} / ${ms(run.query.p95)} | ${ms(run.exactQuery.p50)} | ${fmt(run.recallAt1)} | ${fmt(run.recallAt10)} | ${fmt(run.unknownRecallAt1)} / ${fmt(run.unknownRecallAt10)} | ${run.indexUsed ? "yes" : "NO"} |`,
      );
    const seq = id.runs.filter((x) => !x.indexUsed);
    if (seq.length)
      L.push(
        "",
        `**The planner did not use the HNSW index** for the registry's query at ${seq.map((x) => `${x.engine} ${x.pets} pets`).join(", ")}: under the registry's own settings its plan is a sequential scan with a sort (hence recall 1 and a query time close to the exact search's). Past some size the index wins the cost comparison and is used; the query time at those sizes is a sequential scan's, which grows linearly with the registry.`,
      );
    const pgRun = id.runs.find((x) => x.engine === "postgres");
    L.push(
      "",
      `Settings: PostgreSQL 15 from test/support/postgres.ts with shared_buffers=1GB, index built with maintenance_work_mem=2GB${pgRun?.settings.max_parallel_maintenance_workers ? ` and max_parallel_maintenance_workers=${pgRun.settings.max_parallel_maintenance_workers}` : ""}; PGlite (single process, WASM) with maintenance_work_mem=1GB. ${id.skipped.length ? `Skipped: ${id.skipped.join("; ")}.` : ""}`,
      "",
    );
    const big = id.runs.filter((x) => x.pets >= 100_000);
    if (big.length)
      L.push(
        `Goals at 100k pets (p95 <= 20 ms, recall@1 >= 0.99): ${big.map((x) => `${x.engine} p95 ${ms(x.query.p95)} (${verdict(x.query.p95 <= 20)}), recall@1 ${fmt(x.recallAt1)} (${verdict(x.recallAt1 >= 0.99)})`).join("; ")}. Where recall falls short, the registry's ef_search (set per query in server/registry/registry.ts) is what to raise; this benchmark measures it as the server sets it.`,
        "",
      );
    else L.push("Goals at 100k pets: not measured in this run (`--quick` loads 10k only).", "");
    L.push(img("identification.svg"));
  }
  for (const e of r.extrapolation ?? []) {
    L.push(`### Extrapolated to ${e.toPets.toLocaleString("en")} pets (${e.engine})`, "");
    L.push(
      `From the ${e.fromPets.map((p) => p.toLocaleString("en")).join(" and ")}-pet runs above, ${e.photosPerPet} photos per pet, so ${e.rows.toExponential(1)} rows:`,
      "",
      `- Memory per vector: ${e.rawBytesPerVector} bytes of float32; stored, ${Math.round(e.tableBytesPerRow)} bytes per row in the table (with its TOAST and keys) and ${Math.round(e.indexBytesPerRow)} bytes per row in the HNSW index. At 10M pets: index **${fmt(e.indexGiB)} GiB**, table ${fmt(e.tableGiB)} GiB. HNSW answers fast only while the index is in memory (shared_buffers or the page cache), so a server needs about that much RAM, or halfvec (2 bytes per value) to halve it.`,
      `- Index build: measured time grows as rows^${fmt(e.buildExponent)} between the two runs (HNSW builds are about n log n in theory); at that rate one build takes **${fmt(e.buildHours)} h** at 10M pets (with the same parallel workers; more cores and maintenance_work_mem above the graph's size shorten it). Rows added one by one after the build are indexed on insert.`,
      `- Query: HNSW search grows with log n; ${e.queryBasis}: about **${ms(e.queryP50Ms)} p50 / ${ms(e.queryP95Ms)} p95** at 10M, if the index stays in memory and ef_search stays as it is. Recall at a fixed ef_search falls as n grows, so the registry's ef_search is the setting to re-check there.`,
      "",
    );
  }

  const mo = r.model;
  if (mo) {
    L.push("## 4. The model", "");
    L.push(
      `${mo.file}, version ${mo.version}, ${fmt(mo.fileMB)} MB${mo.parameters ? `, ${(mo.parameters / 1e6).toFixed(1)} M parameters` : ""}. Accuracy as its card (models/nose-embedder.json) reports it, on held-out synthetic dogs (see models/README.md; synthetic figures say little about real photos):`,
      "",
      "| evaluation | AUC | EER | TAR at FAR 1e-3 | TAR at FAR 1e-4 | rank-1 |",
      "| --- | --- | --- | --- | --- | --- |",
    );
    for (const f of mo.card)
      L.push(`| ${f.set} | ${f.auc ?? ""} | ${f.eer ?? ""} | ${f.tarAtFar1e3 ?? ""} | ${f.tarAtFar1e4 ?? ""} | ${f.rank1 ?? ""} |`);
    L.push("", "Inference cost, batch 1, onnxruntime-node on the CPU, session options as the server's (graph optimisation all):", "");
    L.push("| intra-op threads | p50 | p95 | runs |", "| --- | --- | --- | --- |");
    for (const i of mo.inference) L.push(`| ${i.threads} | ${ms(i.ms.p50)} | ${ms(i.ms.p95)} | ${i.ms.n} |`);
    if (mo.variants?.length) {
      L.push(
        "",
        "Variants written by `npm run model:quantize` (models/train/quantize.py; selectable with MODEL_PRECISION; the default, auto, runs int8 when it is recorded for the bundled model). Cosine with the float model's embedding on the tool's evaluation renders (rendered dogs not used for calibration), as models/nose-embedder.variants.json records it; latency here, batch 1, 2 intra-op threads, each variant and the float model run in turns:",
        "",
        "| variant | file | MB | cosine mean / p1 / min | p50 / p95 | fp32 p50 in the same turns | speed-up |",
        "| --- | --- | --- | --- | --- | --- | --- |",
      );
      for (const v of mo.variants)
        L.push(
          `| ${v.precision}${v.floatNodes?.length ? ` (float: ${v.floatNodes.join(", ")})` : ""} | ${v.file} | ${fmt(v.mb)} | ${v.cosineMean.toFixed(5)} / ${v.cosineP1.toFixed(5)} / ${v.cosineMin.toFixed(5)} | ${ms(v.ms.p50)} / ${ms(v.ms.p95)} | ${ms(v.fp32Ms.p50)} | ${fmt(v.fp32Ms.p50 / v.ms.p50)}x |`,
        );
    }
    L.push(img("model.svg"));
  }

  const b = r.browser;
  L.push("## 5. Browser", "");
  if (!b || b.skipped) L.push(`Skipped: ${b?.skipped ?? r.notes.browser ?? "not run"}.`, "");
  else {
    L.push(
      `The capture page (dist/client) in headless Debian Chromium (bench/browser.ts), on one 1280x720 JPEG camera frame of a nose. Live checks: the frame drawn down to the ${b.analysis} analysis frame and read back, then \`assessFrame\` (shared/quality.ts), median of ${b.frames} frames; Node runs the same \`assessFrame\`. Embedding: decode + preprocess (shared/preprocess.ts) + inference, median of ${b.embeds} (WebGPU: of 2 after a warm-up).`,
      "",
      "| measurement | Chromium | Node / server | goal |",
      "| --- | --- | --- | --- |",
      `| live checks per 720p frame (draw + assess) | **${ms(b.frameChromiumMs)}** (draw ${ms(b.drawChromiumMs)}, assess ${ms(b.assessChromiumMs)}) | assess ${ms(b.assessNodeMs)} | < 8 ms, ${verdict((b.frameChromiumMs ?? Infinity) < 8)} |`,
      `| embedding, WASM (2 threads, cross-origin isolated) | ${ms(b.embedWasmMs)} | server path ${ms(b.embedServerPathMs)} | |`,
      `| embedding, WebGPU | ${b.embedWebgpuMs !== undefined ? ms(b.embedWebgpuMs) : "n/a"} | | ${b.webgpuNote ?? ""} |`,
      "",
      img("browser.svg"),
    );
  }

  const g = r.geometry;
  if (g) {
    L.push("## 6. Keypoint geometry", "");
    L.push(
      "`VerifyPet` of a pet enrolled with two photos, one gateway client, on two servers started side by side with the bundled model: one with the geometric check (the default) and one with `GEOMETRY=false`, called alternately so both see the same moments of the machine. Then the shared module itself in the benchmark's process (OpenCV's WebAssembly build): keypoints of one 256 px grey photo, and one probe-reference match (ratio test + RANSAC homography).",
      "",
      "| | p50 | p95 |",
      "| --- | --- | --- |",
      `| VerifyPet with geometry | ${fmt(g.verifyWith.p50)} ms | ${fmt(g.verifyWith.p95)} ms |`,
      `| VerifyPet without | ${fmt(g.verifyWithout.p50)} ms | ${fmt(g.verifyWithout.p95)} ms |`,
      `| keypoints of one photo (${g.keypoints} kept on average) | ${fmt(g.featuresMs.p50)} ms | ${fmt(g.featuresMs.p95)} ms |`,
      `| one match | ${fmt(g.matchMs.p50)} ms | ${fmt(g.matchMs.p95)} ms |`,
      "",
      `Geometry adds ${fmt(g.addedP50Ms)} ms at p50 (goal: at most 25 ms). Peak RSS: ${fmt(g.peakRssWithMiB)} MiB with it, ${fmt(g.peakRssWithoutMiB)} MiB without.`,
      "",
    );
  }

  if (Object.keys(r.notes).length) {
    L.push("## Notes", "");
    for (const [k, n] of Object.entries(r.notes)) L.push(`- ${k}: ${n}`);
    L.push("");
  }
  L.push(
    "## Run",
    "",
    `The run took **${fmt(r.durationSeconds / 60)} minutes** (\`${r.command}\`, ${m}, load average ${r.machine.load1} at its start).`,
    "",
  );
  return L.join("\n").replace(/\n{3,}/g, "\n\n");
}

function fixedCostSection(f: FixedCostResult, pageDate: string): string[] {
  const L: string[] = [];
  L.push("### Against the in-process reference, and where a call's time goes", "");
  if (f.date && f.date.slice(0, 16) !== pageDate.slice(0, 16))
    L.push(
      `_These figures come from a later run of this section alone (\`${f.command ?? "npm run bench -- --only=fixed-cost"}\`, ${f.date.slice(0, 16).replace("T", " ")} UTC, load average ${f.load ?? "n/a"} at its start), merged into this page._`,
      "",
    );
  L.push(
    `**Ours**: the server as \`npm start\` runs it, its own process (\`node --import tsx server/main.ts\`, LOG_LEVEL=error, defaults otherwise), one @grpc/grpc-js client. **Reference**: Pillow's preprocessing in a long-lived python3 process fed each photo over a pipe (bench/old-pipeline/pillow-pipe.py; timed inside Python, so no transport at all) plus the bundled model's fp32 file (what the old server ran) in onnxruntime-node in the benchmark's process on Pillow's tensor, with ONNX Runtime's default session options. Called in turn, call by call, with 20 ms of quiet before each timed run (ONNX Runtime's threads spin a while after a run, and a server finishes a call after its client has the answer), ${f.calls} calls per size after 10 warm-ups. CPU per call: every thread's schedstat of the server process, of the Python process, and of the benchmark process around its model run.`,
    "",
    "| photo | ours p50 / p95 | reference p50 (Pillow + model) | ours/reference p50 | goal | | CPU per call: ours | reference (Pillow + model) |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
  );
  for (const s of f.sizes)
    L.push(
      `| ${s.label} | ${ms(s.ours.p50)} / ${ms(s.ours.p95)} | ${ms(s.reference.p50)} (${ms(s.pillow.p50)} + ${ms(s.model.p50)}) | **${fmt(s.ratioP50)}x** | <= ${s.ratioGoal}x | ${verdict(s.ratioP50 <= s.ratioGoal)} | ${ms(s.cpuOurs)} | ${ms(s.cpuPillow + s.cpuModel)} (${ms(s.cpuPillow)} + ${ms(s.cpuModel)}) |`,
    );
  const before = f.columns?.baseline ?? "before";
  const after = f.columns?.ours ?? "after";
  if (f.sizes.some((s) => s.baseline)) {
    L.push(
      "",
      `${before} and ${after} in the same run: a second server from ${f.baselineLabel ?? `another checkout (${f.baselineDir})`} was called in the same turns (which server went first alternated call by call).`,
      "",
      `| photo | ${before}: p50 / ours/reference | ${after}: p50 / ours/reference | ${before}: CPU per call | ${after}: CPU per call | ${before}: client round trip, mean | ${after} |`,
      "| --- | --- | --- | --- | --- | --- | --- |",
    );
    for (const s of f.sizes)
      if (s.baseline)
        L.push(
          `| ${s.label} | ${ms(s.baseline.ours.p50)} / ${fmt(s.baseline.ratioP50)}x | ${ms(s.ours.p50)} / ${fmt(s.ratioP50)}x | ${ms(s.baseline.cpu)} | ${ms(s.cpuOurs)} | ${ms(s.baseline.stages?.client)} | ${ms(s.stages?.client)} |`,
        );
  }
  L.push(
    "",
    "One call end to end, **means** in ms (means add up, medians do not): client sends -> the server's HTTP/2 stream opens (client serialisation, the request's HEADERS frame, the server's read) -> the body has arrived -> the handler starts (connect-node's envelope and protobuf parsing) -> the handler's stages -> the handler returns -> the response stream closes (serialisation, DATA and trailers written) -> the client's callback. Clocks: performance.timeOrigin + now() in both processes (bench/fixed-cost-probe.ts, preloaded into the server with --import, changes nothing in it). The server's stream closes once both ends are done, which can come after the client's callback: the last two columns split that stretch only roughly (a negative figure is that), their sum is exact.",
    "",
    "| photo | client -> stream open | body | -> handler | decode | resize | tensor | queue + handoff | batch_wait | inference | rest of handler | handler -> stream closed | -> client callback | = client round trip |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  );
  const rows = f.sizes.flatMap((s) => [
    { label: s.label, t: s.stages },
    ...(s.baseline ? [{ label: `${s.label} ${before}`, t: s.baseline.stages }] : []),
  ]);
  for (const { label, t } of rows) {
    if (!t) continue;
    const s = { label };
    const g = (k: string) => t.stages[k] ?? 0;
    L.push(
      `| ${s.label} | ${fmt(t.clientToHeaders)} | ${fmt(t.body)} | ${fmt(t.toHandler)} | ${fmt(g("decode"))} | ${fmt(g("resize"))} | ${fmt(g("tensor"))} | ${fmt(g("queue") + g("handoff"))} | ${fmt(g("batch_wait"))} | ${fmt(g("inference"))} | ${fmt(t.handlerOther)} | ${fmt(t.handlerEndToClose)} | ${fmt(t.closeToClient)} | ${fmt(t.client)} |`,
    );
  }
  L.push("");
  return L;
}
