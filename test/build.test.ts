import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { gatewayClient } from "./support/grpc-client.js";
import { jpeg } from "./support/images.js";
import { requireSystem } from "./support/require-system.js";
import { ROOT } from "./support/server.js";

/**
 * The production shape: `npm run build` compiles the server, then it runs as
 * the image's runtime stage lays it out (package.json, build/, models/,
 * dist/client, production node_modules) from a folder outside the repository,
 * with every production dependency but tsx, so nothing can fall back to
 * running TypeScript.
 */
const APP = mkdtempSync(path.join(tmpdir(), "nosepaw-app-"));
const MAIN = path.join(APP, "build", "server", "main.js");
const HEALTHCHECK = path.join(APP, "build", "server", "tools", "healthcheck.js");

function layOutRuntime() {
  const run = (cmd: string, args: string[]) =>
    new Promise<void>((resolve, reject) =>
      execFile(cmd, args, { cwd: ROOT, timeout: 300_000 }, (err, stdout, stderr) =>
        err ? reject(new Error(`${cmd} ${args.join(" ")} failed: ${stdout}${stderr}`)) : resolve(),
      ),
    );
  copyFileSync(path.join(ROOT, "package.json"), path.join(APP, "package.json"));
  mkdirSync(path.join(APP, "models"));
  for (const f of ["nose-embedder.onnx", "nose-embedder.json"]) symlinkSync(path.join(ROOT, "models", f), path.join(APP, "models", f));
  if (existsSync(path.join(ROOT, "dist", "client"))) {
    mkdirSync(path.join(APP, "dist"));
    symlinkSync(path.join(ROOT, "dist", "client"), path.join(APP, "dist", "client"));
  }
  // What `npm ci --omit=dev` keeps: the lockfile's packages not marked dev.
  const lock = JSON.parse(readFileSync(path.join(ROOT, "package-lock.json"), "utf8")) as { packages: Record<string, { dev?: boolean }> };
  for (const [key, meta] of Object.entries(lock.packages)) {
    const name = key.replace(/^node_modules\//, "");
    if (!key.startsWith("node_modules/") || name.includes("/node_modules/") || meta.dev || name === "tsx") continue;
    const real = path.join(ROOT, key);
    if (!existsSync(real)) continue; // optional packages for other platforms
    mkdirSync(path.dirname(path.join(APP, key)), { recursive: true });
    symlinkSync(real, path.join(APP, key));
  }
  return run("npm", ["run", "--silent", "build", "--", "--outDir", path.join(APP, "build")]);
}

interface Compiled {
  port: number;
  proc: ChildProcess;
  logs: Record<string, unknown>[];
  stop(): Promise<void>;
}

/** `node build/server/main.js` in the runtime layout, waiting for the model's outcome. */
async function startCompiled(env: Record<string, string> = {}): Promise<Compiled> {
  const dataDir = mkdtempSync(path.join(tmpdir(), "nosepaw-data-"));
  const proc = spawn(process.execPath, [MAIN], {
    cwd: APP,
    env: { PATH: process.env.PATH, GRPC_PORT: "0", GRPC_HOST: "127.0.0.1", LOG_LEVEL: "debug", PREPROCESS_WORKERS: "1", DATA_DIR: dataDir, ...env },
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
    execFile(process.execPath, [HEALTHCHECK, ...args], { cwd: APP, env: { PATH: process.env.PATH, ...env }, timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number(err.code ?? -1) : 0, out: `${stdout}${stderr}`.trim() }),
    ),
  );
}

describe("compiled server (npm run build, node build/server/main.js)", () => {
  let server: Compiled;

  before(async () => {
    await layOutRuntime();
    server = await startCompiled();
    await untilServing(server.port);
  });
  after(async () => {
    await server?.stop();
    rmSync(APP, { recursive: true, force: true });
  });

  test("the runtime layout holds no tsx, so the server cannot be running TypeScript", () => {
    assert.throws(() => createRequire(MAIN).resolve("tsx/esm/api"), /Cannot find module/);
    assert.ok(existsSync(path.join(APP, "build", "server", "image", "preprocess-worker.js")));
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
    const unbuilt = requireSystem("the built capture app", !existsSync(path.join(ROOT, "dist", "client", "index.html")) && "dist/client/index.html is missing", "npm run build:client");
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
    assert.deepEqual(await healthcheck([`127.0.0.1:${server.port}`, "--service", "Nope", "--timeout-ms", "20000"]), { code: 1, out: "SERVICE_UNKNOWN" });
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
});
