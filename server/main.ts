import { assertServable, ConfigError, loadConfig } from "./config.js";
import { createLogger } from "./log.js";
import { startApp, type App } from "./app.js";

let config;
try {
  config = loadConfig();
  assertServable(config);
} catch (e) {
  if (e instanceof ConfigError) {
    process.stderr.write(`nosepaw: ${e.message}\n`);
    process.exit(2);
  }
  throw e;
}
const log = createLogger(config.logLevel);
// SIGHUP reads the model file again: a fixed or new model put in place is
// taken up without a restart. Installed first, since Node exits on an
// unhandled SIGHUP; one that comes during start-up is covered by the first load.
let started: App | undefined;
process.on("SIGHUP", () => {
  if (!started) return log.info("model reload requested during start-up; the first load reads the current file", { signal: "SIGHUP" });
  log.info("reloading the model", { signal: "SIGHUP" });
  void started.reloadModel();
});
const app = await startApp(config, log).catch((e: Error) => {
  log.error("start-up failed", { err: e });
  process.exit(1);
});
started = app;

let stopping = false;
const stop = (signal: string) => {
  if (stopping) return;
  stopping = true;
  log.info("shutting down", { signal });
  app.close().then(
    () => {
      log.info("stopped");
      process.exit(0);
    },
    (e: Error) => {
      log.error("shutdown failed", { err: e });
      process.exit(1);
    },
  );
};
process.on("SIGTERM", () => stop("SIGTERM"));
process.on("SIGINT", () => stop("SIGINT"));
process.on("unhandledRejection", (e) => log.error("unhandled rejection", { err: e }));
