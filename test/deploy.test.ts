import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { Service } from "kubernetes-models/v1/Service";
import { parseAllDocuments } from "yaml";
import { loadConfig } from "../server/config.js";
import { ROOT } from "./support/server.js";

const manifests = readdirSync(path.join(ROOT, "k8s"))
  .filter((f) => f.endsWith(".yaml"))
  .flatMap((f) => parseAllDocuments(readFileSync(path.join(ROOT, "k8s", f), "utf8")).map((d) => ({ file: f, obj: d.toJS() })));

test("every k8s manifest is a valid Kubernetes object", () => {
  assert.ok(manifests.length >= 2);
  for (const { file, obj } of manifests) {
    const Model = obj.kind === "Deployment" ? Deployment : obj.kind === "Service" ? Service : undefined;
    assert.ok(Model, `${file}: unexpected kind ${obj.kind}`);
    new Model(obj).validate();
  }
});

test("the deployment probes the gRPC health service on the server's port and sets only variables the server reads", () => {
  const dep = manifests.find((m) => m.obj.kind === "Deployment")!.obj;
  const svc = manifests.find((m) => m.obj.kind === "Service")!.obj;
  const c = dep.spec.template.spec.containers[0];
  const port = loadConfig({}).port;
  assert.equal(c.ports[0].containerPort, port);
  for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) assert.equal(c[probe].grpc.port, port, probe);
  assert.equal(svc.spec.ports[0].port, port);
  assert.deepEqual(svc.spec.selector, dep.spec.template.metadata.labels);
  const configSource = readFileSync(path.join(ROOT, "server/config.ts"), "utf8");
  for (const e of c.env) assert.match(configSource, new RegExp(`"${e.name}"|env\\.${e.name}\\b`), `${e.name} is not read by server/config.ts`);
  const shutdown = Number(c.env.find((e: { name: string }) => e.name === "SHUTDOWN_TIMEOUT_MS")?.value);
  assert.ok(shutdown / 1000 < dep.spec.template.spec.terminationGracePeriodSeconds, "drain must end before the kubelet kills the pod");
});

test("the Dockerfile copies paths that exist and starts the server as npm start does", () => {
  const docker = readFileSync(path.join(ROOT, "Dockerfile"), "utf8");
  const copies = [...docker.matchAll(/^COPY\s+(.+)\s+\S+$/gm)].flatMap((m) => m[1].split(/\s+/));
  assert.ok(copies.length > 5);
  for (const src of copies) assert.ok(existsSync(path.join(ROOT, src)), `COPY source ${src} does not exist`);
  const start = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")).scripts.start as string;
  const cmd = JSON.parse(/^CMD\s+(\[.*\])$/m.exec(docker)![1]) as string[];
  assert.equal(cmd.join(" "), start);
});
