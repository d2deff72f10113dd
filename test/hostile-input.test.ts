/**
 * Hostile input over the wire: the corpus of test/support/hostile-corpus.ts
 * sent to the real server (`npm start`) through the gateway's @grpc/grpc-js
 * client. Every case must get its documented in-band code with a message a
 * caller can act on; the server must survive ten passes of the corpus without
 * its memory growing (RSS after the tenth pass within 10% of after the
 * first), and still answer a normal request afterwards. JPEG and PNG cases
 * must be decoded or refused exactly where Pillow 9.4 (the old server)
 * decodes or refuses them.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { fromBinary } from "@bufbuild/protobuf";
import { CompareVectorsResponseSchema, MLErrorCode } from "../gen/nose_embedder_pb.js";
import { gatewayClient, type GatewayClient } from "./support/grpc-client.js";
import { imageCases, keyCases, ML_CODES, type Expected, type ImageCase, type RequestCase } from "./support/hostile-corpus.js";
import { jpeg } from "./support/images.js";
import { requireSystem } from "./support/require-system.js";
import { startServer, type RunningServer } from "./support/server.js";

const PYTHON = "/usr/bin/python3";
const MAX_IMAGE_BYTES = 1024 * 1024;
const MAX_IMAGE_PIXELS = 16_000_000;
const PASSES = 10;
/** A hostile request may be refused slowly, never hang: each call gets this long. */
const DEADLINE_MS = 20_000;

/** What came back, reduced to what the expectations speak of. */
interface Outcome {
  ok: boolean;
  /** "ML_4001: message" for an in-band error; "transport <code>: details" when the RPC itself failed. */
  error?: string;
  code?: string;
}

type Case = { name: string; expected: Expected; send: (c: GatewayClient) => Promise<Outcome> };

const fromResponse = (res: any): Outcome => (res.success ? { ok: true } : { ok: false, error: res.error_message, code: res.error_code });

async function call(c: GatewayClient, method: string, req: unknown): Promise<Outcome> {
  try {
    return fromResponse(await c.call(method, req, DEADLINE_MS));
  } catch (e) {
    const err = e as grpc.ServiceError;
    return { ok: false, error: `transport ${grpc.status[err.code] ?? err.code}: ${err.details ?? err.message}` };
  }
}

/** A hand-encoded request (bytes a JS string cannot hold), answered as CompareVectorsResponse. */
function callWire(c: GatewayClient, method: string, wire: Buffer): Promise<Outcome> {
  return new Promise((resolve) => {
    c.raw.makeUnaryRequest(
      `/nose_embedder.NoseEmbedderService/${method}`,
      (b: Buffer) => b,
      (b: Buffer) => b,
      wire,
      new grpc.Metadata(),
      { deadline: Date.now() + DEADLINE_MS },
      (err, res) => {
        if (err) return resolve({ ok: false, error: `transport ${grpc.status[err.code] ?? err.code}: ${err.details}` });
        const r = fromBinary(CompareVectorsResponseSchema, res as Buffer);
        resolve(r.success ? { ok: true } : { ok: false, error: r.errorMessage, code: MLErrorCode[r.errorCode ?? 0] });
      },
    );
  });
}

const imageCase = (c: ImageCase): Case => ({
  name: `ExtractNoseVector: ${c.name}`,
  expected: c.expected,
  send: (client) => call(client, "ExtractNoseVector", { image_data: c.bytes, image_format: c.label }),
});

const requestCase = (c: RequestCase): Case => ({
  name: `${c.rpc}: ${c.name}`,
  expected: c.expected,
  send: (client) => (c.wire ? callWire(client, c.rpc, c.wire) : call(client, c.rpc, c.request)),
});

/** Why `got` does not meet `expected`, or undefined when it does. */
function mismatch(expected: Expected, got: Outcome): string | undefined {
  if (expected.ok) return got.ok ? undefined : `expected success, got ${got.error}`;
  if (got.ok) return `expected a refusal, got success`;
  if ("transport" in expected) {
    const want = `transport ${expected.transport}: `;
    if (!got.error?.startsWith(want)) return `expected ${want}..., got ${got.error}`;
    return expected.message.test(got.error) ? undefined : `message ${JSON.stringify(got.error)} does not match ${expected.message}`;
  }
  const m = /^(ML_\d{4}): (.*)$/s.exec(got.error ?? "");
  if (!m) return `expected ${expected.ml}, got ${got.error}`;
  const [, ml, message] = m;
  if (ml !== expected.ml || got.code !== ML_CODES[expected.ml]) return `expected ${expected.ml}, got ${got.code} ${got.error}`;
  if (!expected.message.test(message)) return `message ${JSON.stringify(message)} does not match ${expected.message}`;
  // Clear: one line of text for a person, no stack, no internals, bounded.
  if (/\n\s+at |\[object |undefined|TypeError|ReferenceError/.test(message)) return `message leaks internals: ${message}`;
  if (message.length > 400 || /[\u0000-\u001f]/.test(message))
    return `message is not one short line: ${JSON.stringify(message.slice(0, 200))}`;
  return undefined;
}

/** Runs every case, four at a time (the preprocessing pool sees concurrent work); returns the failures. */
async function pass(client: GatewayClient, cases: Case[], ms?: Map<string, number>): Promise<string[]> {
  const failures: string[] = [];
  let next = 0;
  const lane = async () => {
    while (next < cases.length) {
      const c = cases[next++];
      const t0 = performance.now();
      const why = mismatch(c.expected, await c.send(client));
      ms?.set(c.name, performance.now() - t0);
      if (why) failures.push(`${c.name}: ${why}`);
    }
  };
  await Promise.all([lane(), lane(), lane(), lane()]);
  return failures;
}

/** Resident memory of a process in kB, from /proc. */
function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  assert.ok(m, `no VmRSS for pid ${pid}`);
  return Number(m[1]);
}

describe("hostile input through the gateway's gRPC client", { timeout: 240_000 }, () => {
  let server: RunningServer;
  let client: GatewayClient;
  let pid: number;
  let images: ImageCase[];
  let cases: Case[];
  let photo: Buffer;

  before(async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), "nosepaw-hostile-"));
    [images, photo, server] = await Promise.all([
      imageCases(),
      jpeg(320, 300, 1),
      // As the image runs it (Dockerfile): two malloc arenas keep RSS flat.
      startServer({
        DATA_DIR: dataDir,
        MALLOC_ARENA_MAX: "2",
        MAX_IMAGE_BYTES: String(MAX_IMAGE_BYTES),
        MAX_IMAGE_PIXELS: String(MAX_IMAGE_PIXELS),
      }),
    ]);
    client = gatewayClient(server.address);
    pid = server.logs.find((l) => l.msg === "listening")!.pid as number;
    await server.waitForLog((l) => l.msg === "database ready");
    // A registered pet, so that traversal keys would reach a real object if
    // anything normalised them.
    const reg = await client.call("RegisterPet", { photos: [{ image_data: photo }, { image_data: photo }], request_id: "hostile-input" });
    assert.equal(reg.success, true, reg.error_message);
    const tooBig: ImageCase = {
      name: "one byte over MAX_IMAGE_BYTES",
      bytes: Buffer.concat([photo, Buffer.alloc(MAX_IMAGE_BYTES + 1 - photo.length)]),
      label: "jpeg",
      expected: { ok: false, ml: "ML_4002", message: new RegExp(`image is ${MAX_IMAGE_BYTES + 1} bytes, the limit is ${MAX_IMAGE_BYTES}`) },
    };
    cases = [
      ...[...images, tooBig].map(imageCase),
      ...keyCases({ did: reg.pet_did, objectDir: path.join(dataDir, "objects"), photo }).map(requestCase),
    ];
  });

  after(async () => {
    client?.close();
    await server?.stop();
  });

  test("the corpus holds at least 60 cases, each stating a documented ML code or success", () => {
    assert.ok(cases.length >= 60, `${cases.length} cases`);
    assert.equal(new Set(cases.map((c) => c.name)).size, cases.length, "case names are unique");
    for (const c of cases) if (!c.expected.ok && "ml" in c.expected) assert.ok(c.expected.ml in ML_CODES, c.name);
  });

  let firstPassRss = 0;

  test("every case gets its documented answer with a clear message", async (t) => {
    const ms = new Map<string, number>();
    const failures = await pass(client, cases, ms);
    firstPassRss = rssKb(pid);
    const slowest = [...ms].sort((a, b) => b[1] - a[1]).slice(0, 5);
    t.diagnostic(`slowest: ${slowest.map(([n, v]) => `${n} ${v.toFixed(0)} ms`).join("; ")}`);
    const refusedBy = new Map<string, number>();
    for (const c of cases) {
      const k = c.expected.ok ? "success" : "ml" in c.expected ? c.expected.ml : `transport ${c.expected.transport}`;
      refusedBy.set(k, (refusedBy.get(k) ?? 0) + 1);
    }
    t.diagnostic(
      `${cases.length} cases: ${[...refusedBy]
        .sort()
        .map(([k, n]) => `${k} ${n}`)
        .join(", ")}`,
    );
    assert.deepEqual(failures, []);
  });

  test(`${PASSES} passes: the server stays up, its RSS stays within 10% of the first pass's, a normal request succeeds`, async (t) => {
    assert.ok(firstPassRss > 0, "the first pass ran");
    const samples = [firstPassRss];
    for (let i = 2; i <= PASSES; i++) {
      const failures = await pass(client, cases);
      assert.deepEqual(failures, [], `pass ${i}`);
      assert.equal(server.proc.exitCode, null, `server exited during pass ${i}`);
      samples.push(rssKb(pid));
    }
    const last = samples[samples.length - 1];
    t.diagnostic(`server RSS after each pass (MB): ${samples.map((kb) => (kb / 1024).toFixed(0)).join(" ")}`);
    assert.ok(last <= firstPassRss * 1.1, `RSS grew from ${firstPassRss} kB after pass 1 to ${last} kB after pass ${PASSES}`);
    const health = await client.call("HealthCheck", { service: "" });
    assert.equal(health.status, "SERVING");
    const normal = await client.call("ExtractNoseVector", { image_data: photo, image_format: "jpeg" });
    assert.equal(normal.success, true, normal.error_message);
    assert.equal(normal.vector.length, 512);
  });

  const noPillow = requireSystem(
    "Pillow under /usr/bin/python3",
    spawnSync(PYTHON, ["-c", "import PIL"]).status !== 0 && "import PIL failed",
    "apt-get install python3-pil (scripts/install-train-deps.sh)",
  );

  test("JPEG and PNG cases are decoded or refused where Pillow 9.4 decodes or refuses them", { skip: noPillow }, () => {
    const compared = images.filter((c) => c.pillow);
    const dir = mkdtempSync(path.join(tmpdir(), "nosepaw-hostile-pil-"));
    try {
      compared.forEach((c, i) => writeFileSync(path.join(dir, String(i)), c.bytes));
      // The old server's decode: open, EXIF transpose, load, convert.
      const script = `
import os, sys, warnings
from PIL import Image, ImageOps
warnings.simplefilter("ignore")
for i in range(int(sys.argv[2])):
    try:
        im = ImageOps.exif_transpose(Image.open(os.path.join(sys.argv[1], str(i)))); im.convert("RGB"); print("decoded")
    except Exception:
        print("refused")`;
      const r = spawnSync(PYTHON, ["-c", script, dir, String(compared.length)], { encoding: "utf8" });
      assert.equal(r.status, 0, r.stderr);
      const verdicts = r.stdout.trim().split("\n");
      const disagree = compared.filter((c, i) => (c.expected.ok ? "decoded" : "refused") !== verdicts[i]).map((c) => c.name);
      assert.deepEqual(disagree, [], "Pillow disagrees on these cases");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
