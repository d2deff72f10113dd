/**
 * The fuzz target, run in a child process by scripts/fuzz.ts so that a crash
 * of the decoder (native code) or a hang takes down only this process and the
 * parent can save the input. One input per message: header checks + decode
 * (server/image/decode.ts) + model-input preprocessing (shared/preprocess.ts).
 *
 * Coverage: V8's precise block coverage of the decoder and preprocessing
 * modules, taken after every input through the inspector. It sees the
 * JavaScript header checks, not libvips; the outcome (code and message shape)
 * stands in for the native side.
 */
import { Session } from "node:inspector";
import { MLError } from "../server/errors.js";
import { decodeImage, type DecodeLimits } from "../server/image/decode.js";
import { toModelInput } from "../shared/preprocess.js";

export interface TargetInput {
  id: number;
  bytes: Uint8Array;
  limits: DecodeLimits;
  size: number;
  /** Let a large JPEG shrink while it decodes (the server's default path) instead of decoding at full size. */
  shrink: boolean;
}

export interface TargetResult {
  id: number;
  /** "decoded", "refused" (an MLError) or "broken" (anything else: an invariant failed). */
  kind: "decoded" | "refused" | "broken";
  /** Decoded: channels and size class; refused: code and the message with numbers blanked. */
  outcome: string;
  detail?: string;
  /** Coverage points reached for the first time in this process. */
  newCoverage: string[];
}

/** Modules whose blocks count as coverage. */
const COVERED = /\/(server\/image\/decode|shared\/preprocess|shared\/lanczos)\.ts/;

type Range = { startOffset: number; endOffset: number; count: number };
type ScriptCoverage = { url: string; functions: Array<{ ranges: Range[] }> };

const session = new Session();
session.connect();
const post = <T>(method: string, params?: object) =>
  new Promise<T>((resolve, reject) => session.post(method, params ?? {}, (err, res) => (err ? reject(err) : resolve(res as T))));

/** Every block range V8 has reported so far, per module, and those seen executed. */
const known = new Map<string, Map<string, [number, number]>>();
const reached = new Set<string>();

/**
 * V8 leaves out a block whose count equals its parent's, so a branch taken
 * for the first time can make its range disappear from the report. Judge
 * every range ever reported by the count of the innermost reported range
 * that contains it.
 */
function newlyReached(scripts: ScriptCoverage[]): string[] {
  const fresh: string[] = [];
  for (const s of scripts) {
    const m = COVERED.exec(s.url);
    if (!m) continue;
    const file = m[1];
    const ranges = s.functions.flatMap((f) => f.ranges);
    let rangesOf = known.get(file);
    if (!rangesOf) known.set(file, (rangesOf = new Map()));
    for (const r of ranges) rangesOf.set(`${r.startOffset}-${r.endOffset}`, [r.startOffset, r.endOffset]);
    for (const [key, [start, end]] of rangesOf) {
      const id = `${file}:${key}`;
      if (reached.has(id)) continue;
      let inner: Range | undefined;
      for (const r of ranges) {
        if (r.startOffset <= start && r.endOffset >= end && (!inner || r.endOffset - r.startOffset < inner.endOffset - inner.startOffset))
          inner = r;
      }
      if (inner && inner.count > 0) {
        reached.add(id);
        fresh.push(id);
      }
    }
  }
  return fresh;
}

const blank = (s: string) =>
  s
    .replace(/0x[0-9a-f]+/gi, "#")
    .replace(/\d+/g, "#")
    .slice(0, 160);

async function runOne(input: TargetInput): Promise<Omit<TargetResult, "newCoverage">> {
  const { id, bytes, limits, size } = input;
  try {
    const d = await decodeImage(bytes, limits, input.shrink ? { shrinkFor: size } : {});
    const { image } = d;
    const problems: string[] = [];
    // The shrink path reports the stored size and returns fewer pixels; the exact path returns what it reports.
    const sizeOk =
      d.path === "exact"
        ? image.width === d.width && image.height === d.height
        : input.shrink && d.format === "jpeg" && image.width * image.height <= d.width * d.height;
    if (!(image.width > 0 && image.height > 0 && sizeOk))
      problems.push(`${d.path} path: size ${d.width}x${d.height} vs ${image.width}x${image.height}`);
    if (image.width * image.height > limits.maxPixels) problems.push(`decoded ${image.width}x${image.height}, over maxPixels`);
    if (image.data.length !== image.width * image.height * image.channels)
      problems.push(`data length ${image.data.length} for ${image.width}x${image.height}x${image.channels}`);
    const tensor = toModelInput(image, size);
    if (tensor.length !== 3 * size * size) problems.push(`tensor length ${tensor.length}`);
    for (const v of tensor) {
      if (!(v >= 0 && v <= 1)) {
        problems.push(`tensor value ${v}`);
        break;
      }
    }
    const shape = image.width === 1 || image.height === 1 ? "line" : image.width * image.height < 64 ? "tiny" : "image";
    if (problems.length) return { id, kind: "broken", outcome: "decoded with broken invariants", detail: problems.join("; ") };
    return { id, kind: "decoded", outcome: `decoded ${d.format} ${d.path} ${image.channels}ch ${shape}` };
  } catch (e) {
    if (e instanceof MLError && Number.isInteger(e.code) && e.code >= 0 && e.code <= 10 && e.message.length > 0) {
      return { id, kind: "refused", outcome: `${e.code} ${blank(e.message)}` };
    }
    const err = e as Error;
    return { id, kind: "broken", outcome: `threw ${err?.name ?? typeof e}`, detail: String(err?.stack ?? e) };
  }
}

/** Test hooks for the harness's own test: inputs that crash or hang on purpose. */
const SELF_TEST = process.env.NOSEPAW_FUZZ_SELF_TEST === "1";

await post("Profiler.enable");
await post("Profiler.startPreciseCoverage", { callCount: true, detailed: true });

process.on("message", async (input: TargetInput) => {
  const bytes = new Uint8Array(input.bytes);
  if (SELF_TEST) {
    const head = Buffer.from(bytes.subarray(0, 6)).toString("latin1");
    if (head === "CRASH!") process.kill(process.pid, "SIGSEGV");
    if (head === "HANG!!") for (;;);
  }
  const result = await runOne({ ...input, bytes });
  const { result: scripts } = await post<{ result: ScriptCoverage[] }>("Profiler.takePreciseCoverage");
  process.send!({ ...result, newCoverage: newlyReached(scripts) } satisfies TargetResult);
});
process.send!({ ready: true });
