import { Worker, type WorkerOptions } from "node:worker_threads";

/**
 * Starts the module `name` (without extension), which lies beside the
 * calling module `from` (its import.meta.url), in a worker thread. Compiled
 * (`npm run build`), the worker is plain JavaScript and starts as it is. Run
 * from the TypeScript sources (development, tests), it needs tsx, and workers
 * do not inherit the main thread's loader hooks, so a small bootstrap
 * registers tsx in the worker before importing it.
 */
export function startWorker(from: string, name: string, options: WorkerOptions = {}): Worker {
  if (from.endsWith(".js")) return new Worker(new URL(`./${name}.js`, from), options);
  const url = new URL(`./${name}.ts`, from);
  const boot = `import("tsx/esm/api").then((m) => { m.register(); return import(${JSON.stringify(url.href)}); })`;
  return new Worker(boot, { ...options, eval: true });
}
