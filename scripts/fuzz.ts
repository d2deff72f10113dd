/**
 * Coverage-guided mutation fuzzing of the image path a request takes:
 * header checks, decode and model-input preprocessing (scripts/fuzz-target.ts,
 * run in a child process). Seeded and deterministic: the same seed and
 * iteration count give the same inputs.
 *
 *   npm run fuzz -- --seconds 300 [--seed 1] [--iterations N] [--save DIR] [--hang-ms 10000] [--examples DIR] [--corpus DIR]
 *
 * --corpus DIR writes, for every distinct outcome the run met, its first
 * input shrunk to the fewest bytes that still give that outcome on the same
 * decode path, with outcomes.json naming each file's outcome: the
 * regression corpus test/fuzz-corpus/ is made so (replayCorpus checks it).
 *
 * Invariant: every input ends, within the hang bound, in a decoded image
 * (with a finite tensor of the right shape) or an MLError with a known code.
 * Anything else (another exception, a crash of the process, a hang) is saved
 * to test/fuzz-crashes/ and reported.
 *
 * Why not a libFuzzer binding: @jazzer.js/fuzzer 4.0.0 ships only a prebuilt
 * addon that needs glibc 2.38 (Debian 12 has 2.36), and its older versions
 * fetch their addon from GitHub or build libFuzzer from sources outside npm.
 * V8's own block coverage gives the guidance instead.
 */
import { fork, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { deflateSync, inflateSync } from "node:zlib";
import type { DecodeLimits } from "../server/image/decode.js";
import { crc32, imageCases, layoutSamples, markerAt } from "../test/support/hostile-corpus.js";
import { prng } from "../test/support/images.js";
import type { TargetInput, TargetResult } from "./fuzz-target.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const CRASH_DIR = path.join(ROOT, "test", "fuzz-crashes");
/** One minimised input per distinct outcome the fuzzer has found, replayed by test/fuzz.test.ts. */
export const CORPUS_DIR = path.join(ROOT, "test", "fuzz-corpus");
const TARGET = path.join(ROOT, "scripts", "fuzz-target.ts");

/** Small limits keep one iteration cheap; the checks and code paths are the same. */
export const FUZZ_LIMITS: DecodeLimits = { maxBytes: 128 * 1024, maxPixels: 1 << 18 };
export const FUZZ_SIZE = 32;

export interface FuzzOptions {
  seed: number;
  /** Stop after this long, or after `iterations`, whichever comes first. */
  seconds?: number;
  iterations?: number;
  hangMs?: number;
  saveDir?: string;
  seeds?: Buffer[];
  /** Where to keep the first input of each distinct outcome, for triage (none when unset). */
  examplesDir?: string;
  /** Environment for the target process (the harness's own test uses it). */
  targetEnv?: Record<string, string>;
  log?: (line: string) => void;
}

export interface FuzzFailure {
  kind: "crash" | "hang" | "broken";
  file: string;
  detail: string;
}

export interface FuzzReport {
  iterations: number;
  seconds: number;
  corpus: number;
  coverage: number;
  outcomes: Map<string, number>;
  /** The first input of each outcome and the decode path it took. */
  firstInputs: Map<string, { bytes: Buffer; shrink: boolean }>;
  failures: FuzzFailure[];
  restarts: number;
}

type Verdict = TargetResult | { kind: "crash" | "hang"; outcome: string; detail: string; newCoverage: string[] };

interface Target {
  run(bytes: Uint8Array, hangMs: number, shrink?: boolean): Promise<Verdict>;
  stop(): void;
}

/** Starts the target process and waits until it is ready for inputs. */
async function startTarget(env: Record<string, string> = {}): Promise<Target> {
  const child: ChildProcess = fork(TARGET, [], {
    cwd: ROOT,
    execArgv: ["--import", "tsx"],
    serialization: "advanced",
    stdio: ["ignore", "ignore", "pipe", "ipc"],
    env: { ...process.env, ...env },
  });
  let stderr = "";
  child.stderr!.on("data", (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4000)));
  let pending: ((v: Verdict) => void) | undefined;
  let exited: string | undefined;
  const ready = new Promise<void>((resolve, reject) => {
    child.once("message", () => resolve());
    child.once("exit", (code, signal) => reject(new Error(`fuzz target exited before it was ready (${code ?? signal}): ${stderr}`)));
  });
  child.on("exit", (code, signal) => {
    exited = `target process died (exit code ${code}, signal ${signal}); stderr: ${stderr.trim().slice(-1500)}`;
    const p = pending;
    pending = undefined;
    p?.({ kind: "crash", outcome: `crash ${signal ?? code}`, detail: exited, newCoverage: [] });
  });
  await ready;
  child.on("message", (m: TargetResult) => {
    const p = pending;
    pending = undefined;
    p?.(m);
  });
  let nextId = 1;
  return {
    run(bytes, hangMs, shrink = false) {
      if (exited) return Promise.resolve({ kind: "crash", outcome: "crash", detail: exited, newCoverage: [] });
      return new Promise<Verdict>((resolve) => {
        const timer = setTimeout(() => {
          pending = undefined;
          child.kill("SIGKILL");
          resolve({ kind: "hang", outcome: "hang", detail: `no answer within ${hangMs} ms`, newCoverage: [] });
        }, hangMs);
        pending = (v) => {
          clearTimeout(timer);
          resolve(v);
        };
        child.send({ id: nextId++, bytes, limits: FUZZ_LIMITS, size: FUZZ_SIZE, shrink } satisfies TargetInput);
      });
    },
    stop() {
      child.kill("SIGKILL");
    },
  };
}

// --- mutations -------------------------------------------------------------------------

type Rand = () => number;
const pick = <T>(r: Rand, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
const int = (r: Rand, n: number) => Math.floor(r() * n);
const INTERESTING8 = [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff, 0x10, 0x20, 0x40];
const INTERESTING16 = [0, 1, 2, 3, 7, 8, 255, 256, 0x7fff, 0x8000, 0xfffe, 0xffff];
const INTERESTING32 = [0, 1, 0x7fffffff, 0x80000000, 0xffffffff, 65535, 65536, 1 << 20];

function bytesOf(r: Rand, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = int(r, 256);
  return b;
}

/** Byte-level mutations that know nothing of the format. */
const generic: Array<(r: Rand, b: Buffer, other: Buffer) => Buffer> = [
  (r, b) => {
    const out = Buffer.from(b);
    const n = 1 + int(r, 4);
    for (let k = 0; k < n && out.length; k++) out[int(r, out.length)] ^= 1 << int(r, 8);
    return out;
  },
  (r, b) => {
    const out = Buffer.from(b);
    if (out.length) out[int(r, out.length)] = r() < 0.5 ? pick(r, INTERESTING8) : int(r, 256);
    return out;
  },
  (r, b) => {
    const at = int(r, b.length + 1);
    return Buffer.concat([b.subarray(0, at), bytesOf(r, 1 + int(r, 16)), b.subarray(at)]);
  },
  (r, b) => {
    const at = int(r, b.length + 1);
    return Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + int(r, 64))]);
  },
  (r, b) => {
    const at = int(r, b.length + 1);
    const len = 1 + int(r, 256);
    return Buffer.concat([b.subarray(0, at + len), b.subarray(at, at + len), b.subarray(at + len)]);
  },
  (r, b) => b.subarray(0, int(r, b.length + 1)),
  // Splice: the head of this input, the tail of another.
  (r, b, other) => Buffer.concat([b.subarray(0, int(r, b.length + 1)), other.subarray(int(r, other.length + 1))]),
];

interface Segment {
  at: number;
  end: number;
  marker: number;
}

/** JPEG marker segments from SOI to the first SOS (included). */
function jpegSegments(b: Buffer): Segment[] {
  const out: Segment[] = [];
  let i = 2;
  while (i + 4 <= b.length && b[i] === 0xff) {
    const marker = b[i + 1];
    const end = i + 2 + b.readUInt16BE(i + 2);
    if (end > b.length) break;
    out.push({ at: i, end, marker });
    if (marker === 0xda) break;
    i = end;
  }
  return out;
}

const JPEG_MARKERS = [
  0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc9, 0xca, 0xcc, 0xd8, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xe0, 0xe1, 0xe2, 0xee, 0xfe, 0x01, 0x02,
  0xf0,
];

function exifSegment(r: Rand): Buffer {
  const count = 1 + int(r, 6);
  const ifd = Buffer.alloc(2 + 12 * count + 4);
  ifd.writeUInt16BE(r() < 0.8 ? count : pick(r, INTERESTING16), 0);
  for (let k = 0; k < count; k++) {
    const o = 2 + 12 * k;
    ifd.writeUInt16BE(r() < 0.6 ? 0x0112 : pick(r, [0x8769, 0x8825, 0xa005, 0x010f, int(r, 65536)]), o);
    ifd.writeUInt16BE(pick(r, [1, 2, 3, 4, 5, 7, 9, 10, 13, int(r, 65536)]), o + 2);
    ifd.writeUInt32BE(r() < 0.7 ? 1 : pick(r, INTERESTING32), o + 4);
    ifd.writeUInt32BE(r() < 0.5 ? int(r, 10) << 16 : pick(r, INTERESTING32), o + 8);
  }
  const order = r() < 0.5 ? "MM\0*\0\0\0\x08" : "II*\0\x08\0\0\0";
  const body = Buffer.concat([Buffer.from(`Exif\0\0${order}`, "latin1"), ifd]);
  const head = Buffer.from([0xff, 0xe1, 0, 0]);
  head.writeUInt16BE(body.length + 2, 2);
  return Buffer.concat([head, body]);
}

/** Mutations that follow the JPEG marker structure. */
const jpegOps: Array<(r: Rand, b: Buffer, segs: Segment[]) => Buffer> = [
  (r, b, s) => {
    const x = pick(r, s);
    return Buffer.concat([b.subarray(0, x.at), b.subarray(x.end)]);
  },
  (r, b, s) => {
    const x = pick(r, s);
    return Buffer.concat([b.subarray(0, x.end), b.subarray(x.at, x.end), b.subarray(x.end)]);
  },
  (r, b, s) => {
    const x = pick(r, s);
    const to = pick(r, s);
    const seg = b.subarray(x.at, x.end);
    const without = Buffer.concat([b.subarray(0, x.at), b.subarray(x.end)]);
    const at = to.at <= x.at ? to.at : to.at - (x.end - x.at);
    return Buffer.concat([without.subarray(0, at), seg, without.subarray(at)]);
  },
  (r, b, s) => {
    const out = Buffer.from(b);
    const x = pick(r, s);
    const len = out.readUInt16BE(x.at + 2);
    out.writeUInt16BE(r() < 0.5 ? pick(r, INTERESTING16) : Math.max(0, Math.min(0xffff, len + int(r, 9) - 4)), x.at + 2);
    return out;
  },
  (r, b, s) => {
    const out = Buffer.from(b);
    out[pick(r, s).at + 1] = pick(r, JPEG_MARKERS);
    return out;
  },
  // Frame header fields: precision, height, width, components, sampling, table.
  (r, b, s) => {
    const out = Buffer.from(b);
    const sof = s.find((x) => x.marker >= 0xc0 && x.marker <= 0xcf && x.marker !== 0xc4 && x.marker !== 0xc8 && x.marker !== 0xcc);
    if (!sof || sof.end - sof.at < 11) return out;
    const field = int(r, 5);
    if (field === 0) out[sof.at + 4] = pick(r, [8, 12, 16, 0, 1, 255]);
    else if (field === 1) out.writeUInt16BE(pick(r, INTERESTING16), sof.at + 5);
    else if (field === 2) out.writeUInt16BE(pick(r, INTERESTING16), sof.at + 7);
    else if (field === 3) out[sof.at + 9] = pick(r, [0, 1, 2, 3, 4, 5, 255]);
    else {
      const c = sof.at + 10 + 3 * int(r, Math.max(1, Math.floor((sof.end - sof.at - 10) / 3)));
      if (c + 2 < sof.end) out[c + 1 + int(r, 2)] = pick(r, [0x11, 0x22, 0x21, 0x12, 0x44, 0x41, 0x00, 0xff, 0x03, 0x04]);
    }
    return out;
  },
  (r, b, s) => {
    const out = Buffer.from(b);
    const x = pick(r, s);
    if (x.end - x.at > 4) out[x.at + 4 + int(r, x.end - x.at - 4)] = r() < 0.5 ? pick(r, INTERESTING8) : int(r, 256);
    return out;
  },
  // A marker in the entropy-coded data.
  (r, b, s) => {
    const sos = s[s.length - 1];
    if (sos.marker !== 0xda || sos.end >= b.length) return b;
    const at = sos.end + int(r, b.length - sos.end);
    return Buffer.concat([b.subarray(0, at), Buffer.from([0xff, pick(r, [...JPEG_MARKERS, 0xd0, 0xd3, 0xd7, 0x00])]), b.subarray(at)]);
  },
  (r, b) => Buffer.concat([b.subarray(0, 2), exifSegment(r), b.subarray(2)]),
];

interface Chunk {
  at: number;
  end: number;
  type: string;
}

function pngChunks(b: Buffer): Chunk[] {
  const out: Chunk[] = [];
  let i = 8;
  while (i + 12 <= b.length) {
    const end = i + 12 + b.readUInt32BE(i);
    if (end > b.length) break;
    out.push({ at: i, end, type: b.toString("latin1", i + 4, i + 8) });
    i = end;
  }
  return out;
}

function chunk(type: string, data: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, "latin1");
  out.set(data, 8);
  out.writeUInt32BE(crc32(out, 4, 8 + data.length), 8 + data.length);
  return out;
}

/** Rewrites the CRC of the chunk at `c` after its data changed, so the mutation reaches the decoder. */
function fixCrc(b: Buffer, c: Chunk): Buffer {
  b.writeUInt32BE(crc32(b, c.at + 4, c.end - 4), c.end - 4);
  return b;
}

const replaceChunks = (b: Buffer, from: Chunk, to: Chunk, data: Buffer[]) =>
  Buffer.concat([b.subarray(0, from.at), ...data, b.subarray(to.end)]);

/** Mutations that follow the PNG chunk structure, keeping CRCs valid unless they aim at them. */
const pngOps: Array<(r: Rand, b: Buffer, cs: Chunk[]) => Buffer> = [
  (r, b, cs) => {
    const c = pick(r, cs);
    return replaceChunks(b, c, c, []);
  },
  (r, b, cs) => {
    const c = pick(r, cs);
    return replaceChunks(b, c, c, [b.subarray(c.at, c.end), b.subarray(c.at, c.end)]);
  },
  (r, b, cs) => {
    const out = Buffer.from(b);
    const c = pick(r, cs);
    out.writeUInt32BE(r() < 0.5 ? pick(r, INTERESTING32) : Math.max(0, out.readUInt32BE(c.at) + int(r, 9) - 4), c.at);
    return out;
  },
  (r, b, cs) => {
    const c = pick(r, cs);
    if (c.end - c.at <= 12) return b;
    const out = Buffer.from(b);
    const n = 1 + int(r, 4);
    for (let k = 0; k < n; k++) out[c.at + 8 + int(r, c.end - c.at - 12)] = r() < 0.5 ? pick(r, INTERESTING8) : int(r, 256);
    return fixCrc(out, c);
  },
  // IHDR fields: size, depth, colour type, compression, filter, interlace.
  (r, b, cs) => {
    const c = cs.find((x) => x.type === "IHDR");
    if (!c || c.end - c.at < 25) return b;
    const out = Buffer.from(b);
    const field = int(r, 5);
    if (field === 0) out.writeUInt32BE(pick(r, [...INTERESTING32, 1, 2, 3, 7, 8, 9, 511, 512, 513]), c.at + 8 + 4 * int(r, 2));
    else if (field === 1) out[c.at + 16] = pick(r, [1, 2, 4, 8, 16, 0, 3, 32]);
    else if (field === 2) out[c.at + 17] = pick(r, [0, 2, 3, 4, 6, 1, 5, 7]);
    else if (field === 3) out[c.at + 18 + int(r, 2)] = pick(r, [0, 1, 255]);
    else out[c.at + 20] = pick(r, [0, 1, 2]);
    return fixCrc(out, c);
  },
  (r, b, cs) => {
    const type = pick(r, [
      "PLTE",
      "tRNS",
      "gAMA",
      "iCCP",
      "eXIf",
      "acTL",
      "fcTL",
      "fdAT",
      "sBIT",
      "IDAT",
      "IEND",
      "zTXt",
      "iTXt",
      "pHYs",
      "bKGD",
      "cHRM",
      "sRGB",
      "hIST",
      "sPLT",
      "oFFs",
    ]);
    let data = bytesOf(r, pick(r, [0, 1, 2, 3, 6, 8, 13, 26, 64, 768]));
    if (type === "iCCP" || type === "zTXt") data = Buffer.concat([Buffer.from("x\0\0"), r() < 0.5 ? deflateSync(bytesOf(r, 200)) : data]);
    const at = pick(r, cs);
    return Buffer.concat([b.subarray(0, at.at), chunk(type, data), b.subarray(at.at)]);
  },
  // Split IDAT in two: the zlib stream continues across chunks.
  (r, b, cs) => {
    const c = cs.find((x) => x.type === "IDAT");
    if (!c || c.end - c.at < 14) return b;
    const data = b.subarray(c.at + 8, c.end - 4);
    const cut = 1 + int(r, data.length - 1);
    return replaceChunks(b, c, c, [chunk("IDAT", data.subarray(0, cut)), chunk("IDAT", data.subarray(cut))]);
  },
  // Edit the decompressed rows (filter bytes, pixels, length) and recompress.
  (r, b, cs) => {
    const idats = cs.filter((x) => x.type === "IDAT");
    if (idats.length === 0) return b;
    let raw: Buffer;
    try {
      raw = inflateSync(Buffer.concat(idats.map((c) => b.subarray(c.at + 8, c.end - 4))), { maxOutputLength: 4 << 20 });
    } catch {
      return b;
    }
    const op = int(r, 4);
    if (op === 0 && raw.length) raw[int(r, raw.length)] = pick(r, [0, 1, 2, 3, 4, 5, 255]);
    else if (op === 1) raw = raw.subarray(0, int(r, raw.length + 1));
    else if (op === 2) raw = Buffer.concat([raw, bytesOf(r, 1 + int(r, 4096))]);
    else if (raw.length) raw[int(r, raw.length)] = int(r, 256);
    const first = idats[0];
    const last = idats[idats.length - 1];
    return replaceChunks(b, first, last, [chunk("IDAT", deflateSync(raw))]);
  },
];

function mutate(r: Rand, input: Buffer, other: Buffer): Buffer {
  let b = input;
  const rounds = 1 + int(r, 4);
  for (let k = 0; k < rounds; k++) {
    const isJpeg = b.length > 4 && b[0] === 0xff && b[1] === 0xd8;
    const isPng = b.length > 8 && b[0] === 0x89 && b[1] === 0x50;
    const structured = r() < 0.6;
    if (structured && isJpeg) {
      const segs = jpegSegments(b);
      if (segs.length) {
        b = pick(r, jpegOps)(r, b, segs);
        continue;
      }
    }
    if (structured && isPng) {
      const cs = pngChunks(b);
      if (cs.length) {
        b = pick(r, pngOps)(r, b, cs);
        continue;
      }
    }
    b = pick(r, generic)(r, b, other);
  }
  return b.length > FUZZ_LIMITS.maxBytes ? b.subarray(0, FUZZ_LIMITS.maxBytes) : b;
}

// --- the loop --------------------------------------------------------------------------

/**
 * Well-formed pictures of every layout at a small size and at the model's
 * size (which skips the resize), and the hostile corpus's images.
 */
export async function defaultSeeds(): Promise<Buffer[]> {
  const small = [...Object.values(await layoutSamples(48, 32, 5)), ...Object.values(await layoutSamples(FUZZ_SIZE, FUZZ_SIZE, 6))];
  const hostile = (await imageCases()).map((c) => c.bytes);
  const seen = new Set<string>();
  return [...small, ...hostile].filter((b) => {
    const h = createHash("sha1").update(b).digest("hex");
    if (seen.has(h) || b.length > FUZZ_LIMITS.maxBytes) return false;
    seen.add(h);
    return true;
  });
}

function save(dir: string, kind: string, bytes: Buffer, detail: string): string {
  mkdirSync(dir, { recursive: true });
  const name = `${kind}-${createHash("sha1").update(bytes).digest("hex").slice(0, 16)}`;
  writeFileSync(path.join(dir, `${name}.bin`), bytes);
  writeFileSync(path.join(dir, `${name}.txt`), `${detail}\n`);
  return path.join(dir, `${name}.bin`);
}

/** Runs every input through a fresh target on both decode paths: the saved crashes as a regression check. */
export async function replay(inputs: Buffer[], hangMs = 20_000): Promise<Verdict[]> {
  let target = await startTarget();
  const out: Verdict[] = [];
  try {
    for (const bytes of inputs) {
      for (const shrink of [false, true]) {
        const v = await target.run(bytes, hangMs, shrink);
        out.push(v);
        if (v.kind === "crash" || v.kind === "hang") target = await startTarget();
      }
    }
  } finally {
    target.stop();
  }
  return out;
}

/** The saved failing inputs in `dir` (none when it does not exist). */
export function savedInputs(dir = CRASH_DIR): Array<{ file: string; bytes: Buffer }> {
  let names: string[];
  try {
    names = readdirSync(dir)
      .filter((n) => n.endsWith(".bin"))
      .sort();
  } catch {
    return [];
  }
  return names.map((n) => ({ file: path.join(dir, n), bytes: readFileSync(path.join(dir, n)) }));
}

export async function runFuzz(opts: FuzzOptions): Promise<FuzzReport> {
  const { seed, hangMs = 10_000, saveDir = CRASH_DIR, log = () => {} } = opts;
  const maxIterations = opts.iterations ?? Infinity;
  const r = prng(seed);
  const corpus = opts.seeds ?? (await defaultSeeds());
  const outcomes = new Map<string, number>();
  const firstInputs = new Map<string, { bytes: Buffer; shrink: boolean }>();
  const coverage = new Set<string>();
  const failures: FuzzFailure[] = [];
  const failedOutcomes = new Set<string>();
  let restarts = 0;
  let target = await startTarget(opts.targetEnv);
  const started = performance.now();
  const deadline = started + (opts.seconds ?? Infinity) * 1000;
  let lastLog = started;
  let iterations = 0;

  // Every seed runs once unchanged first: its coverage is the baseline.
  const queue = [...corpus];
  try {
    while (iterations < maxIterations && performance.now() < deadline) {
      const input = queue.length ? queue.shift()! : mutate(r, pick(r, corpus), pick(r, corpus));
      // Every other input takes the server's default path (large JPEGs shrink while decoding).
      const shrink = iterations % 2 === 1;
      const v = await target.run(input, hangMs, shrink);
      iterations++;
      const seen = outcomes.get(v.outcome) ?? 0;
      if (seen === 0) firstInputs.set(v.outcome, { bytes: Buffer.from(input), shrink });
      outcomes.set(v.outcome, seen + 1);
      if (seen === 0 && opts.examplesDir) save(opts.examplesDir, `outcome-${String(outcomes.size).padStart(3, "0")}`, input, v.outcome);
      let fresh = seen === 0;
      for (const c of v.newCoverage) {
        if (!coverage.has(c)) {
          coverage.add(c);
          fresh = true;
        }
      }
      if (v.kind === "crash" || v.kind === "hang" || v.kind === "broken") {
        // One saved input per distinct failure; the rest are counted in outcomes.
        if (!failedOutcomes.has(v.outcome)) {
          failedOutcomes.add(v.outcome);
          const file = save(saveDir, v.kind, input, `${v.outcome}\n${v.detail ?? ""}\nfound by seed ${seed} at iteration ${iterations}`);
          failures.push({ kind: v.kind, file, detail: `${v.outcome}: ${v.detail ?? ""}`.slice(0, 2000) });
          log(`[fuzz] ${v.kind}: ${v.outcome} -> ${path.relative(ROOT, file)}`);
        }
        if (v.kind !== "broken") {
          target.stop();
          target = await startTarget(opts.targetEnv);
          restarts++;
        }
      } else if (fresh && !queue.length && !corpus.includes(input)) {
        corpus.push(input);
      }
      const now = performance.now();
      if (now - lastLog > 10_000) {
        lastLog = now;
        const s = (now - started) / 1000;
        log(
          `[fuzz] ${s.toFixed(0)} s: ${iterations} inputs (${(iterations / s).toFixed(0)}/s), corpus ${corpus.length}, coverage ${coverage.size}, outcomes ${outcomes.size}, failures ${failures.length}`,
        );
      }
    }
  } finally {
    target.stop();
  }
  return {
    iterations,
    seconds: (performance.now() - started) / 1000,
    corpus: corpus.length,
    coverage: coverage.size,
    outcomes,
    firstInputs,
    failures,
    restarts,
  };
}

// --- the regression corpus ------------------------------------------------------------

export interface CorpusEntry {
  file: string;
  outcome: string;
  path: "exact" | "shrink";
}

/**
 * The fewest bytes of `input` that still give `outcome` on the same decode
 * path: chunks are cut out, halving their size down to single bytes, as long
 * as the outcome holds (at most `maxRuns` tries).
 */
export async function minimise(input: Buffer, outcome: string, shrink: boolean, maxRuns = 400, hangMs = 10_000): Promise<Buffer> {
  let target = await startTarget();
  let best = input;
  let runs = 0;
  try {
    for (let n = Math.max(1, best.length >> 1); runs < maxRuns; n = Math.max(1, n >> 1)) {
      let i = 0;
      let cut = false;
      while (i < best.length && runs < maxRuns) {
        const candidate = Buffer.concat([best.subarray(0, i), best.subarray(i + n)]);
        runs++;
        const v = await target.run(candidate, hangMs, shrink);
        if (v.kind === "crash" || v.kind === "hang") target = (target.stop(), await startTarget());
        if (v.outcome === outcome && candidate.length < best.length) {
          best = candidate;
          cut = true;
        } else i += n;
      }
      if (n === 1 && !cut) break;
    }
  } finally {
    target.stop();
  }
  return best;
}

/** Writes `NNN-<sha1>.bin` per outcome and outcomes.json (file, outcome, decode path) into `dir`, replacing what was there. */
export async function writeCorpus(
  dir: string,
  firstInputs: FuzzReport["firstInputs"],
  log: (l: string) => void = () => {},
): Promise<CorpusEntry[]> {
  mkdirSync(dir, { recursive: true });
  for (const n of readdirSync(dir)) if (/^\d{3}-[0-9a-f]{16}\.bin$/.test(n)) rmSync(path.join(dir, n));
  const entries: CorpusEntry[] = [];
  const sorted = [...firstInputs].sort(([a], [b]) => a.localeCompare(b));
  for (const [outcome, { bytes, shrink }] of sorted) {
    const small = await minimise(bytes, outcome, shrink);
    const file = `${String(entries.length + 1).padStart(3, "0")}-${createHash("sha1").update(small).digest("hex").slice(0, 16)}.bin`;
    writeFileSync(path.join(dir, file), small);
    entries.push({ file, outcome, path: shrink ? "shrink" : "exact" });
    log(`[fuzz] corpus ${file}: ${bytes.length} -> ${small.length} bytes: ${outcome}`);
  }
  writeFileSync(path.join(dir, "outcomes.json"), `${JSON.stringify(entries, null, 1)}\n`);
  return entries;
}

/** Every corpus input replayed on its decode path: those whose outcome is no longer the recorded one. */
export async function replayCorpus(dir = CORPUS_DIR, hangMs = 20_000): Promise<{ entries: number; changed: string[] }> {
  const entries = JSON.parse(readFileSync(path.join(dir, "outcomes.json"), "utf8")) as CorpusEntry[];
  let target = await startTarget();
  const changed: string[] = [];
  try {
    for (const e of entries) {
      const v = await target.run(readFileSync(path.join(dir, e.file)), hangMs, e.path === "shrink");
      if (v.kind === "crash" || v.kind === "hang") target = (target.stop(), await startTarget());
      if (v.outcome !== e.outcome)
        changed.push(`${e.file} (${e.path} path): was "${e.outcome}", now "${v.outcome}"${v.detail ? `: ${v.detail.slice(0, 300)}` : ""}`);
    }
  } finally {
    target.stop();
  }
  return { entries: entries.length, changed };
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : undefined;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const seconds = Number(arg("seconds") ?? 60);
  const seed = Number(arg("seed") ?? 1);
  const iterations = arg("iterations") ? Number(arg("iterations")) : undefined;
  const report = await runFuzz({
    seed,
    seconds,
    iterations,
    hangMs: Number(arg("hang-ms") ?? 10_000),
    saveDir: arg("save") ? path.resolve(arg("save")!) : CRASH_DIR,
    examplesDir: arg("examples") ? path.resolve(arg("examples")!) : undefined,
    log: (l) => console.log(l),
  });
  if (arg("corpus")) {
    const entries = await writeCorpus(path.resolve(arg("corpus")!), report.firstInputs, (l) => console.log(l));
    console.log(`[fuzz] corpus: ${entries.length} minimised inputs, one per distinct outcome, in ${arg("corpus")}`);
  }
  console.log(
    `[fuzz] seed ${seed}: ${report.iterations} inputs in ${report.seconds.toFixed(0)} s (${(report.iterations / report.seconds).toFixed(0)}/s), ` +
      `corpus ${report.corpus}, coverage points ${report.coverage}, distinct outcomes ${report.outcomes.size}, target restarts ${report.restarts}`,
  );
  for (const [o, n] of [...report.outcomes].sort((a, b) => b[1] - a[1])) console.log(`${String(n).padStart(8)}  ${o}`);
  for (const f of report.failures) console.log(`FAILURE ${f.kind} ${path.relative(ROOT, f.file)}\n  ${f.detail}`);
  process.exit(report.failures.length ? 1 : 0);
}
