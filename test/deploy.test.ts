import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { CronJob } from "kubernetes-models/batch/v1/CronJob";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { PersistentVolumeClaim } from "kubernetes-models/v1/PersistentVolumeClaim";
import { Service } from "kubernetes-models/v1/Service";
import { parseAllDocuments } from "yaml";
import * as configModule from "../server/config.js";
import { parseArgs as parseLearnArgs } from "../server/tools/registry-learn.js";
import { UsageError } from "../server/tools/cli.js";
import { ROOT } from "./support/server.js";

const { loadConfig } = configModule;
const read = (f: string) => readFileSync(path.join(ROOT, f), "utf8");

const manifests = readdirSync(path.join(ROOT, "k8s"))
  .filter((f) => f.endsWith(".yaml"))
  .flatMap((f) => parseAllDocuments(read(path.join("k8s", f))).map((d) => ({ file: f, obj: d.toJS() })));

const MODELS: Record<string, { new (data: any): { validate(): void } }> = {
  Deployment,
  Service,
  ConfigMap,
  HorizontalPodAutoscaler,
  PodDisruptionBudget,
  CronJob,
  PersistentVolumeClaim,
};

function one(kind: string) {
  const found = manifests.filter((m) => m.obj.kind === kind);
  assert.equal(found.length, 1, `exactly one ${kind} in k8s/`);
  return found[0].obj;
}

const dep = () => one("Deployment");
const container = () => dep().spec.template.spec.containers[0];
const configMap = () => one("ConfigMap");
/** A selector's labels all on the pod template (what makes it select our pods). */
const selects = (labels: Record<string, string>, podLabels: Record<string, string>) =>
  Object.keys(labels).length > 0 && Object.entries(labels).every(([k, v]) => podLabels[k] === v);
/** The pod's environment: the ConfigMap's values and a stand-in for each Secret reference. */
function podEnv(): Record<string, string> {
  const env: Record<string, string> = { ...configMap().data };
  for (const e of container().env) if (e.valueFrom?.secretKeyRef) env[e.name] = `secret-${e.name.toLowerCase()}-value`;
  return env;
}
/** A variable server/config.ts reads, by its quoted name or as env.NAME. */
const configSource = read("server/config.ts");
const knownSetting = (name: string) => new RegExp(`"${name}"|env\\.${name}\\b`).test(configSource);

test("every k8s manifest is a valid Kubernetes object of a kind we ship, all in one namespace", () => {
  assert.ok(manifests.length >= 5);
  for (const { file, obj } of manifests) {
    const Model = MODELS[obj.kind];
    assert.ok(Model, `${file}: unexpected kind ${obj.kind}`);
    new Model(obj).validate();
  }
  assert.equal(new Set(manifests.map((m) => m.obj.metadata.namespace)).size, 1, "one namespace");
});

test("the deployment, service and disruption budget select the pod template's labels", () => {
  const podLabels = dep().spec.template.metadata.labels;
  assert.ok(selects(dep().spec.selector.matchLabels, podLabels), "Deployment selector");
  assert.ok(selects(one("Service").spec.selector, podLabels), "Service selector");
  assert.ok(selects(one("PodDisruptionBudget").spec.selector.matchLabels, podLabels), "PodDisruptionBudget selector");
});

test("the autoscaler scales the Deployment on CPU and leaves room for the disruption budget", () => {
  const hpa = one("HorizontalPodAutoscaler");
  assert.deepEqual(hpa.spec.scaleTargetRef, { apiVersion: "apps/v1", kind: "Deployment", name: dep().metadata.name });
  const cpu = hpa.spec.metrics.find((m: any) => m.type === "Resource" && m.resource.name === "cpu");
  assert.ok(cpu, "a CPU metric");
  assert.equal(cpu.resource.target.type, "Utilization");
  // Utilization is measured against the request: without one the autoscaler does nothing.
  assert.ok(container().resources.requests.cpu, "the container requests CPU");
  assert.ok(hpa.spec.minReplicas >= 2 && hpa.spec.minReplicas <= hpa.spec.maxReplicas);
  // A budget as large as the smallest replica count would block every node drain.
  const pdb = one("PodDisruptionBudget");
  assert.equal(pdb.spec.maxUnavailable, undefined);
  assert.ok(Number.isInteger(pdb.spec.minAvailable) && pdb.spec.minAvailable < hpa.spec.minReplicas, "minAvailable below minReplicas");
});

test("plain settings come from the ConfigMap, credentials from the Secret, and the server accepts them", () => {
  const cm = configMap();
  const refs = container().envFrom.map((e: any) => e.configMapRef?.name);
  assert.ok(refs.includes(cm.metadata.name), "envFrom names the ConfigMap");
  for (const key of Object.keys(cm.data)) {
    assert.ok(knownSetting(key), `ConfigMap key ${key} is not read by server/config.ts`);
    assert.doesNotMatch(key, /SECRET|PASSWORD|ACCESS_KEY/, `${key} belongs in the Secret`);
  }
  for (const e of container().env) {
    assert.ok(knownSetting(e.name), `${e.name} is not read by server/config.ts`);
    assert.ok(e.valueFrom?.secretKeyRef, `${e.name}: plain values go in the ConfigMap`);
    assert.ok(!(e.name in cm.data), `${e.name} is set twice`);
  }
  // Every value parses (loadConfig reports all problems at once), and the
  // server would start on it rather than refuse the configuration.
  const config = loadConfig(podEnv());
  const { assertServable } = configModule as { assertServable?: (c: configModule.Config) => void };
  assertServable?.(config);
});

test("the server's port is the container's, the probes', the service's and the scrape annotation's", () => {
  const port = loadConfig(podEnv()).port;
  const c = container();
  assert.equal(c.ports[0].containerPort, port);
  for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"])
    assert.equal(c[probe].grpc.port, port, `${probe} asks the gRPC health service`);
  assert.equal(one("Service").spec.ports[0].port, port);
  const a = dep().spec.template.metadata.annotations;
  assert.equal(a["prometheus.io/scrape"], "true");
  assert.equal(a["prometheus.io/port"], String(port));
  assert.equal(a["prometheus.io/path"], "/metrics");
});

test("the learning CronJob runs the gated loop nightly, one at a time, on 2 CPUs, with the server's configuration", () => {
  const cron = one("CronJob");
  assert.equal(cron.spec.concurrencyPolicy, "Forbid");
  assert.match(cron.spec.schedule, /^\S+ \S+ \* \* \*$/, "nightly");
  const pod = cron.spec.jobTemplate.spec.template.spec;
  assert.equal(pod.containers.length, 1);
  const c = pod.containers[0];
  assert.equal(c.resources.requests.cpu, "2");
  // The same settings as the serving pods: the ConfigMap and the same Secret references.
  assert.deepEqual(c.envFrom, container().envFrom);
  assert.deepEqual(c.env, container().env);
  // The work folder on a claim this folder ships, mounted where the command writes.
  const work = pod.volumes.find((v: any) => v.persistentVolumeClaim);
  assert.equal(work.persistentVolumeClaim.claimName, one("PersistentVolumeClaim").metadata.name);
  const mount = c.volumeMounts.find((m: any) => m.name === work.name).mountPath;
  const script = [...c.command, ...c.args].join(" ");
  const learn = /npm run --silent registry:learn -- (.*)$/.exec(script);
  assert.ok(learn, "runs npm run registry:learn");
  const argv = learn[1].replace(/"\/work\/learn-\$\(date -u \+%Y-%m-%d\)"/, `${mount}/learn-2026-01-01`).split(/\s+/);
  const cmd = parseLearnArgs(argv, {});
  assert.ok(cmd.opts.work.startsWith(`${mount}/`), "the work folder is on the claim");
  assert.equal(cmd.rollback, false);
  assert.equal(cmd.opts.promote, true, "promotes, through the gate");
  assert.equal(cmd.opts.promoteTo, undefined, "into the server's object store");
  // There is no way around the gate.
  assert.throws(() => parseLearnArgs(["--force"], {}), UsageError);
});

test("the drain ends before the kubelet kills the pod", () => {
  const shutdown = loadConfig(podEnv()).shutdownTimeoutMs;
  assert.ok(shutdown / 1000 < dep().spec.template.spec.terminationGracePeriodSeconds);
});

interface Stage {
  from: string;
  name?: string;
  /** Instructions with line continuations joined: [keyword, rest]. */
  lines: [string, string][];
}

function dockerStages(text: string): Stage[] {
  const stages: Stage[] = [];
  const joined = text
    .replace(/\\\n/g, " ")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));
  for (const line of joined) {
    const [, op, rest] = /^(\S+)\s+(.*)$/.exec(line)!;
    if (op.toUpperCase() === "FROM") {
      const [, from, name] = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(rest)!;
      stages.push({ from, name, lines: [] });
    } else stages.at(-1)!.lines.push([op.toUpperCase(), rest.trim()]);
  }
  return stages;
}

const docker = dockerStages(read("Dockerfile"));
const runtime = docker.at(-1)!;
const of = (s: Stage, op: string) => s.lines.filter(([o]) => o === op).map(([, rest]) => rest);
const buildConfig = JSON.parse(read("tsconfig.build.json")) as { compilerOptions: { outDir: string; rootDir: string }; include: string[] };

test("the Dockerfile builds in one stage and runs on Node 24 in another, as a non-root user", () => {
  assert.ok(docker.length >= 2, "multi-stage");
  for (const s of docker) assert.equal(s.from, "node:24-bookworm-slim", "the current LTS");
  const users = of(runtime, "USER");
  assert.ok(users.length > 0 && !/^(root|0)(:|$)/.test(users.at(-1)!), "the runtime stage ends as a non-root user");
  for (const s of docker) {
    const ci = s.lines.findIndex(([o, r]) => o === "RUN" && /npm ci/.test(r));
    if (ci < 0) continue;
    const env = s.lines.slice(0, ci).some(([o, r]) => o === "ENV" && /ONNXRUNTIME_NODE_INSTALL=skip/.test(r));
    assert.ok(env, `${s.name ?? "runtime"} stage: ONNXRUNTIME_NODE_INSTALL=skip before npm ci`);
  }
  assert.ok(
    of(runtime, "RUN").some((r) => /npm ci\b.*--omit=dev/.test(r)),
    "runtime installs production dependencies only",
  );
});

test("every COPY source exists in the build context or is made by the stage it is copied from", () => {
  const ignored = read(".dockerignore")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));
  const pkg = JSON.parse(read("package.json")) as { scripts: Record<string, string> };
  const vite = read("vite.config.ts");
  // What each build-stage command writes, per the configuration it runs with.
  const produced: Record<string, { run: string; made: boolean }> = {
    [buildConfig.compilerOptions.outDir]: { run: "npm run build", made: pkg.scripts.build.includes("tsconfig.build.json") },
    "dist/client": { run: "npm run build:client", made: /path\.join\(ROOT, "dist", "client"\)/.test(vite) },
    "dist/native": {
      run: "npm run build:native",
      made: /path\.join\(ROOT, "dist", "native", "jpeg-decode\.node"\)/.test(read("scripts/build-native-if-needed.mjs")),
    },
  };
  let count = 0;
  for (const s of docker) {
    for (const rest of of(s, "COPY")) {
      const parts = rest.split(/\s+/);
      const from = parts.find((p) => p.startsWith("--from="))?.slice("--from=".length);
      const sources = parts.filter((p) => !p.startsWith("--")).slice(0, -1);
      for (const src of sources) {
        count++;
        if (!from) {
          assert.ok(existsSync(path.join(ROOT, src)), `COPY source ${src} does not exist`);
          const hit = ignored.find((p) => src === p || src.startsWith(`${p}/`));
          assert.equal(hit, undefined, `COPY source ${src} is excluded by .dockerignore (${hit})`);
          continue;
        }
        const stage = docker.find((d) => d.name === from);
        assert.ok(stage, `COPY --from=${from}: no such stage`);
        const workdir = of(stage, "WORKDIR").at(-1)!;
        const rel = path.posix.relative(workdir, src);
        const made = produced[rel];
        assert.ok(made?.made, `${src} is not something the ${from} stage builds`);
        assert.ok(
          of(stage, "RUN").some((r) => r.includes(made.run)),
          `the ${from} stage must run ${made.run} for ${src}`,
        );
      }
    }
  }
  assert.ok(count > 5);
  // The build stage needs every folder the compiler and Vite read.
  const buildStage = docker.find((d) => d.name)!;
  const copied = of(buildStage, "COPY").flatMap((r) => r.split(/\s+/).slice(0, -1));
  for (const need of [...buildConfig.include, "client", "tsconfig.json", "tsconfig.build.json", "vite.config.ts"]) {
    assert.ok(copied.includes(need), `the build stage copies ${need}`);
  }
});

test("the image starts as npm run start:prod does and checks its health over grpc.health.v1", () => {
  const start = (JSON.parse(read("package.json")) as { scripts: Record<string, string> }).scripts["start:prod"];
  const cmd = JSON.parse(of(runtime, "CMD").at(-1)!) as string[];
  assert.equal(cmd.join(" "), start);
  // Compiled paths under outDir mirror the sources under rootDir.
  const source = (js: string) =>
    path.join(ROOT, buildConfig.compilerOptions.rootDir, path.relative(buildConfig.compilerOptions.outDir, js).replace(/\.js$/, ".ts"));
  assert.ok(existsSync(source(cmd[1])), `${cmd[1]} is compiled from an existing source`);
  const health = of(runtime, "HEALTHCHECK").at(-1);
  assert.ok(health, "HEALTHCHECK in the runtime stage");
  const probe = JSON.parse(/CMD\s+(\[.*\])$/.exec(health)![1]) as string[];
  assert.equal(probe[0], "node");
  assert.equal(probe[1], "build/server/tools/healthcheck.js");
  assert.ok(existsSync(source(probe[1])));
  assert.match(read("server/tools/healthcheck.ts"), /grpc\/health\/v1\/health_pb/);
});

/**
 * Debian 12 (bookworm) binary packages the learning image may install, with
 * the amd64 version bookworm had when this list was checked (apt-cache
 * madison on a bookworm machine). Where apt-cache can see bookworm's lists
 * the test asks it too.
 */
const BOOKWORM_PACKAGES: Record<string, string> = {
  python3: "3.11.2-1+b1",
  "python3-numpy": "1:1.24.2-1+deb12u1",
  "python3-scipy": "1.10.1-2",
  "python3-opencv": "4.6.0+dfsg-12",
  "python3-pil": "9.4.0-1.1+deb12u1",
  "python3-torch": "1.13.1+dfsg-4",
  "python3-torchvision": "0.14.1-2",
  "python3-onnx": "1.12.0-2+b4",
  "python3-matplotlib": "3.6.3-1+b1",
};
/** The Debian package that provides each module models/train imports from outside the standard library. */
const PYTHON_MODULE_PACKAGE: Record<string, string> = {
  numpy: "python3-numpy",
  scipy: "python3-scipy",
  cv2: "python3-opencv",
  PIL: "python3-pil",
  torch: "python3-torch",
  torchvision: "python3-torchvision",
  onnx: "python3-onnx",
  matplotlib: "python3-matplotlib",
};

/** The top-level modules a Python source imports (import statements only, not code in strings). */
function pythonImports(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const from = /^\s*from\s+([A-Za-z_][\w.]*)\s+import\b/.exec(line);
    if (from) out.push(from[1]);
    const imp = /^\s*import\s+([A-Za-z_][\w.]*(?:\s+as\s+\w+)?(?:\s*,\s*[A-Za-z_][\w.]*(?:\s+as\s+\w+)?)*)\s*(?:#.*)?$/.exec(line);
    if (imp) out.push(...imp[1].split(",").map((p) => p.trim().split(/\s+/)[0]));
  }
  return out.map((m) => m.split(".")[0]);
}

function pythonFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return e.name === "cache" || e.name === "runs" ? [] : pythonFiles(p);
    return e.name.endsWith(".py") ? [p] : [];
  });
}

test("the serving image has the libjpeg the decoder addon was built against", () => {
  const build = docker.find((s) => s.name === "build")!;
  assert.ok(aptInstalls(build).includes("libjpeg62-turbo-dev"), "the build stage compiles the addon against Debian's libjpeg");
  assert.ok(aptInstalls(build).includes("gcc"), "and has a compiler");
  assert.ok(
    of(runtime, "COPY").some((r) => r.includes("dist/native")),
    "the serving stage copies the addon",
  );
  assert.ok(aptInstalls(runtime).includes("libjpeg62-turbo"), "and installs the library it links");
});

/** The packages `apt-get install` names in a stage's RUN lines. */
function aptInstalls(s: Stage): string[] {
  return of(s, "RUN").flatMap((r) =>
    [...r.matchAll(/apt-get install\s+([^&;|]*)/g)].flatMap((m) => m[1].split(/\s+/).filter((w) => w && !w.startsWith("-"))),
  );
}

test("the Dockerfile's learn target holds what npm run registry:learn runs, from npm and Debian 12's apt only", () => {
  const learn = docker.find((s) => s.name === "learn");
  assert.ok(learn, "a stage named learn (docker build --target learn)");
  assert.notEqual(learn, runtime, "the serving image stays the default (last) target");
  assert.equal(learn.from, "node:24-bookworm-slim", "Debian 12 with Node, as the serving image");
  // The dev dependencies: registry:learn runs the sources with tsx.
  const pkg = JSON.parse(read("package.json")) as { scripts: Record<string, string>; devDependencies: Record<string, string> };
  assert.match(pkg.scripts["registry:learn"], /--import tsx server\/tools\/registry-learn\.ts/);
  assert.ok(pkg.devDependencies.tsx, "tsx is a dev dependency");
  const ci = of(learn, "RUN").filter((r) => /npm ci\b/.test(r));
  assert.equal(ci.length, 1);
  assert.doesNotMatch(ci[0], /--omit=dev|--production/, "the learn image keeps the dev dependencies");
  // What the loop reads: the sources tsx runs, the model tooling, the bundled model to start from.
  const workdir = of(learn, "WORKDIR").at(-1)!;
  const copied = new Map<string, string>();
  for (const rest of of(learn, "COPY")) {
    const parts = rest.split(/\s+/).filter((p) => !p.startsWith("--"));
    const dest = parts.at(-1)!;
    for (const src of parts.slice(0, -1)) {
      assert.ok(existsSync(path.join(ROOT, src)), `COPY source ${src} does not exist`);
      copied.set(src, dest.endsWith("/") ? path.posix.join(dest, path.posix.basename(src)) : dest);
    }
  }
  for (const need of [
    "package.json",
    "package-lock.json",
    "tsconfig.json",
    "gen",
    "shared",
    "server",
    "models/train",
    "models/nose-embedder.onnx",
    "models/nose-embedder.json",
    "models/nose-embedder.pt",
  ]) {
    assert.ok(copied.has(need), `the learn stage copies ${need}`);
    assert.equal(
      path.posix.normalize(path.posix.join(workdir, copied.get(need)!)),
      path.posix.join(workdir, need),
      `${need} lands at its repository path`,
    );
  }
  // Python: Debian's packages through apt, nothing fetched from anywhere else.
  for (const r of of(learn, "RUN"))
    assert.doesNotMatch(r, /\bpip3?\b|\bcurl\b|\bwget\b|https?:\/\//, `no downloads outside apt and npm: ${r}`);
  const installed = aptInstalls(learn);
  assert.ok(installed.includes("python3"), "Debian's python3 (/usr/bin/python3, as server/learn/python.ts runs)");
  for (const p of installed) assert.ok(BOOKWORM_PACKAGES[p], `${p} is not a Debian 12 package this test knows`);
  // Every module models/train imports is either the standard library, its own, or an installed package's.
  const files = pythonFiles(path.join(ROOT, "models/train"));
  assert.ok(files.length > 10);
  const own = new Set(files.map((f) => path.basename(f, ".py")));
  const stdlib = new Set(
    JSON.parse(
      execFileSync("/usr/bin/python3", ["-c", "import sys, json; print(json.dumps(sorted(sys.stdlib_module_names)))"], {
        encoding: "utf8",
      }),
    ) as string[],
  );
  const external = new Set(files.flatMap((f) => pythonImports(readFileSync(f, "utf8"))).filter((m) => !stdlib.has(m) && !own.has(m)));
  for (const m of ["numpy", "torch", "cv2", "scipy", "onnx", "PIL"]) assert.ok(external.has(m), `the scan finds ${m}`);
  for (const m of external) {
    const p = PYTHON_MODULE_PACKAGE[m];
    assert.ok(p, `models/train imports ${m}: name its Debian package`);
    assert.ok(installed.includes(p), `models/train imports ${m}: the learn stage must install ${p}`);
  }
  // Where this machine's apt sees bookworm, it confirms each package is there.
  let madison = "";
  try {
    madison = execFileSync("apt-cache", ["madison", ...installed], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
  } catch {
    // no apt here: the list above stands
  }
  const inBookworm = new Set(
    madison
      .split("\n")
      .map((l) => /^\s*(\S+)\s+\|\s*\S+\s*\| .* bookworm(?:-updates|-security)?\/main \S+ Packages$/.exec(l)?.[1])
      .filter((p) => p !== undefined),
  );
  if (inBookworm.size > 0) for (const p of installed) assert.ok(inBookworm.has(p), `apt-cache finds no ${p} in bookworm`);
});

test("the learning CronJob runs the learn target's image, tagged as the Deployment's", () => {
  const image = one("CronJob").spec.jobTemplate.spec.template.spec.containers[0].image as string;
  const serving = container().image as string;
  const [, repo, tag] = /^(.+?)(?::([^:/]+))?$/.exec(serving)!;
  assert.equal(image, `${repo}-learn${tag ? `:${tag}` : ""}`, "nosepaw:<tag> serves, nosepaw-learn:<tag> learns");
  assert.match(read("docs/learning.md"), new RegExp(`docker build --target learn -t ${image.replace(/[.:]/g, "\\$&")} \\.`));
});
