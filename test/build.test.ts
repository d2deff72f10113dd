import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { chmodSync, chownSync, copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { gatewayClient } from "./support/grpc-client.js";
import { jpeg } from "./support/images.js";
import { nosePhotos } from "./support/nose-photos.js";
import { requireSystem } from "./support/require-system.js";
import { ROOT } from "./support/server.js";

/**
 * The production shape, installed as the Dockerfile's runtime stage installs
 * it: package.json, package-lock.json and .npmrc in a clean folder outside
 * the repository, `npm ci --omit=dev` there (offline, from npm's cache, which
 * the repository's own `npm ci` filled), the compiled server (`npm run build`),
 * the capture app and the bundled model beside it. Nothing in it points back
 * into the repository, so a production dependency missing from
 * `dependencies` is missing here too. The server then runs as the image runs
 * it: `node build/server/main.js` as an unprivileged user (nobody, for the
 * image's `USER node`) that can write only its data folder.
 */
const APP = mkdtempSync(path.join(tmpdir(), "nosepaw-app-"));
const MAIN = path.join(APP, "build", "server", "main.js");
const HEALTHCHECK = path.join(APP, "build", "server", "tools", "healthcheck.js");
/** The running Node, copied where an unprivileged user can run it (Node 24 lives under /root/.cache in CI). */
const NODE = path.join(APP, "runtime", "node");
const asRoot = process.getuid?.() === 0;
const notRoot = requireSystem(
  "root, to run the compiled server as an unprivileged user",
  !asRoot && "the tests do not run as root",
  "run the tests as root, as .ci/run does",
);
const UNPRIVILEGED = { uid: 65534, gid: 65534 }; // nobody:nogroup

function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(cmd, args, { cwd, env, timeout: 300_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${cmd} ${args.join(" ")} failed: ${stdout}${stderr}`)) : resolve(`${stdout}${stderr}`),
    ),
  );
}

async function installRuntime() {
  chmodSync(APP, 0o755);
  for (const f of ["package.json", "package-lock.json", ".npmrc"]) copyFileSync(path.join(ROOT, f), path.join(APP, f));
  // As the Dockerfile's runtime stage: production dependencies from the lockfile, no install scripts needed.
  await run("npm", ["ci", "--omit=dev", "--offline", "--no-audit", "--no-fund"], APP, {
    ...process.env,
    ONNXRUNTIME_NODE_INSTALL: "skip",
    NODE_ENV: "production",
  });
  await run("npm", ["run", "--silent", "build", "--", "--outDir", path.join(APP, "build")], ROOT);
  mkdirSync(path.join(APP, "models"));
  for (const f of ["nose-embedder.onnx", "nose-embedder.json"]) copyFileSync(path.join(ROOT, "models", f), path.join(APP, "models", f));
  if (existsSync(path.join(ROOT, "dist", "client")))
    cpSync(path.join(ROOT, "dist", "client"), path.join(APP, "dist", "client"), { recursive: true });
  mkdirSync(path.dirname(NODE), { recursive: true });
  copyFileSync(process.execPath, NODE);
  chmodSync(NODE, 0o755);
}

interface Compiled {
  port: number;
  proc: ChildProcess;
  logs: Record<string, unknown>[];
  stop(): Promise<void>;
}

/** `node build/server/main.js` in the runtime layout, waiting for the model's outcome. */
async function startCompiled(env: Record<string, string> = {}): Promise<Compiled> {
  // The only folder the server may write, as the image's /data.
  const dataDir = mkdtempSync(path.join(tmpdir(), "nosepaw-data-"));
  chownSync(dataDir, UNPRIVILEGED.uid, UNPRIVILEGED.gid);
  const proc = spawn(NODE, [MAIN], {
    cwd: APP,
    ...UNPRIVILEGED,
    env: {
      PATH: process.env.PATH,
      HOME: "/nonexistent",
      GRPC_PORT: "0",
      GRPC_HOST: "127.0.0.1",
      LOG_LEVEL: "debug",
      PREPROCESS_WORKERS: "1",
      DATA_DIR: dataDir,
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs: Record<string, unknown>[] = [];
  let stderr = "";
  let buf = "";
  const exited = new Promise<void>((resolve) => proc.on("exit", () => resolve()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`compiled server not ready in 120 s; stderr: ${stderr.slice(-2000)}`)), 120_000);
    proc.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
    proc.stdout!.on("data", (chunk: Buffer) => {
      buf += chunk.toString();
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          logs.push(JSON.parse(line));
        } catch {
          logs.push({ raw: line });
        }
      }
      if (logs.some((l) => l.msg === "listening") && logs.some((l) => l.msg === "model loaded" || l.msg === "model not loaded")) {
        clearTimeout(timer);
        resolve();
      }
    });
    proc.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`compiled server exited with ${code}; stderr: ${stderr.slice(-2000)} logs: ${JSON.stringify(logs).slice(-2000)}`));
    });
  });
  const port = logs.find((l) => l.msg === "listening")!.port as number;
  return {
    port,
    proc,
    logs,
    async stop() {
      if (proc.exitCode === null) proc.kill("SIGTERM");
      await exited;
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Asks HealthCheck until SERVING, as a readiness probe does: the model and the registry come up in the background. */
async function untilServing(port: number, timeoutMs = 120_000): Promise<void> {
  const client = gatewayClient(`127.0.0.1:${port}`);
  const deadline = Date.now() + timeoutMs;
  let last = "";
  try {
    while (Date.now() < deadline) {
      const res = await client.call("HealthCheck", { service: "" }, 5000).catch((e: Error) => ({ status: e.message, message: "" }));
      if (res.status === "SERVING") return;
      last = `${res.status}: ${res.message}`;
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error(`compiled server not SERVING within ${timeoutMs} ms; last answer ${last}`);
  } finally {
    client.close();
  }
}

function healthcheck(args: string[], env: Record<string, string> = {}): Promise<{ code: number; out: string }> {
  return new Promise((resolve) =>
    execFile(
      NODE,
      [HEALTHCHECK, ...args],
      { cwd: APP, ...UNPRIVILEGED, env: { PATH: process.env.PATH, HOME: "/nonexistent", ...env }, timeout: 30_000 },
      (err, stdout, stderr) => resolve({ code: err ? Number(err.code ?? -1) : 0, out: `${stdout}${stderr}`.trim() }),
    ),
  );
}

describe(
  "compiled server from an npm ci --omit=dev install, run as an unprivileged user (npm run build, node build/server/main.js)",
  { skip: notRoot, timeout: 600_000 },
  () => {
    let server: Compiled;

    before(async () => {
      await installRuntime();
      server = await startCompiled();
      await untilServing(server.port);
    });
    after(async () => {
      await server?.stop();
      rmSync(APP, { recursive: true, force: true });
    });

    test("the production install holds no tsx (a dev dependency), so the server cannot be running TypeScript; it runs as nobody", () => {
      assert.equal(
        existsSync(path.join(APP, "node_modules", "tsx")),
        false,
        "npm ci --omit=dev installed tsx: it is a production dependency again",
      );
      assert.throws(() => createRequire(MAIN).resolve("tsx/esm/api"), /Cannot find module/);
      assert.ok(existsSync(path.join(APP, "node_modules", "onnxruntime-node")) && existsSync(path.join(APP, "node_modules", "sharp")));
      assert.ok(existsSync(path.join(APP, "build", "server", "image", "preprocess-worker.js")));
      assert.match(readFileSync(`/proc/${server.proc.pid}/status`, "utf8"), /^Uid:\s+65534\s/m, "the server runs as nobody");
    });

    test("registers a pet (the embedded database and the object folder in the data folder) and verifies it", async () => {
      const client = gatewayClient(`127.0.0.1:${server.port}`);
      const photo = nosePhotos(1);
      const jpg = (b: Buffer) => ({ image_data: b, image_format: "jpeg" });
      try {
        const reg = await client.call("RegisterPet", { photos: [jpg(photo(0, 0)), jpg(photo(0, 1))], request_id: "build-test-1" });
        assert.equal(reg.success, true, reg.error_message);
        assert.match(reg.pet_did, /^did:/);
        const ver = await client.call("VerifyPet", { pet_did: reg.pet_did, photo: jpg(photo(0, 2)) });
        assert.equal(ver.success, true, ver.error_message);
        assert.equal(ver.verdict, "SAME");
      } finally {
        client.close();
      }
    });

    test("answers HealthCheck SERVING with the bundled model found from build/ and embeds a photo in its compiled worker", async () => {
      const client = gatewayClient(`127.0.0.1:${server.port}`);
      try {
        const health = await client.call("HealthCheck", { service: "NoseEmbedderService" });
        assert.equal(health.status, "SERVING", JSON.stringify(server.logs.slice(-5)));
        assert.equal(health.model_loaded, "true");
        assert.match(health.message, /nose-embedder\.onnx version/);
        const res = await client.call("ExtractNoseVector", { image_data: await jpeg(320, 300, 1), image_format: "jpeg" });
        assert.equal(res.success, true, res.error_message);
        assert.equal(res.vector.length, 512);
        assert.equal(res.vector_size, 512);
        const norm = Math.sqrt(res.vector.reduce((s: number, x: number) => s + x * x, 0));
        assert.ok(Math.abs(norm - 1) < 1e-4, `norm ${norm}`);
      } finally {
        client.close();
      }
    });

    test("serves the capture app from dist/client beside build/", async (t) => {
      const unbuilt = requireSystem(
        "the built capture app",
        !existsSync(path.join(ROOT, "dist", "client", "index.html")) && "dist/client/index.html is missing",
        "npm run build:client",
      );
      if (unbuilt) return t.skip(unbuilt);
      const res = await fetch(`http://127.0.0.1:${server.port}/`);
      assert.equal(res.status, 200);
      assert.match(await res.text(), /<html/i);
    });

    test("healthcheck exits 0 on SERVING, at the given address or on GRPC_PORT", async () => {
      // A generous deadline: this bounds a hang on a busy machine, not the answer's speed.
      assert.deepEqual(await healthcheck([`127.0.0.1:${server.port}`, "--timeout-ms", "20000"]), { code: 0, out: "SERVING" });
      assert.deepEqual(await healthcheck(["--timeout-ms", "20000"], { GRPC_PORT: String(server.port) }), { code: 0, out: "SERVING" });
    });

    test("healthcheck exits 1 for an unknown service, a server without its model and an address nobody answers", async () => {
      assert.deepEqual(await healthcheck([`127.0.0.1:${server.port}`, "--service", "Nope", "--timeout-ms", "20000"]), {
        code: 1,
        out: "SERVICE_UNKNOWN",
      });
      const modelless = await startCompiled({ MODEL_PATH: path.join(APP, "models", "missing.onnx") });
      const address = `127.0.0.1:${modelless.port}`;
      try {
        assert.deepEqual(await healthcheck([address, "--timeout-ms", "20000"]), { code: 1, out: "NOT_SERVING" });
      } finally {
        await modelless.stop();
      }
      const gone = await healthcheck([address, "--timeout-ms", "2000"]);
      assert.equal(gone.code, 1);
      assert.match(gone.out, /^no answer from /);
    });

    test("healthcheck exits 2 on a usage error", async () => {
      const res = await healthcheck(["--timeout-ms", "soon"]);
      assert.equal(res.code, 2);
      assert.match(res.out, /usage: healthcheck/);
    });
  },
);
