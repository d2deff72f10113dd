import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { PostgresConfig } from "../../server/db/database.js";
import { freePort } from "./s3.js";

const BIN = process.env.PG_BIN ?? "/usr/lib/postgresql/15/bin";

/** Why a real-PostgreSQL test cannot run here, or undefined when it can. */
export function postgresUnavailable(): string | undefined {
  if (!existsSync(join(BIN, "initdb")) || !existsSync(join(BIN, "pg_ctl"))) {
    return `PostgreSQL binaries not found in ${BIN} (apt-get install postgresql-15, or set PG_BIN)`;
  }
  if (!existsSync(join(execFileSync(join(BIN, "pg_config"), ["--sharedir"]).toString().trim(), "extension", "vector.control"))) {
    return "pgvector is not installed for this PostgreSQL (run scripts/install-pgvector.sh)";
  }
  if (process.getuid?.() === 0 && spawnSync("id", ["-u", "postgres"]).status !== 0) {
    return "running as root but there is no 'postgres' user to run the server as";
  }
  return undefined;
}

/**
 * Servers this process started and has not disposed of. A test process that
 * ends without disposing (a failed `before`, a timeout, an uncaught error)
 * stops them on exit; one that cannot run JavaScript any more (V8 abort,
 * SIGKILL) has them stopped by a watcher process (see `watchParent`), so no
 * server outlives the run that started it and meets the next one.
 */
const running = new Map<string, () => void>();
const stopAllNow = () => {
  for (const stop of running.values()) stop();
  running.clear();
};
process.once("exit", stopAllNow);
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    stopAllNow();
    // The default action, now that the servers are down.
    process.kill(process.pid, sig);
  });
}

/**
 * A detached shell that waits for this process to end, however it ends,
 * then stops the server (`pg_ctl stop -m immediate`) and removes its folder.
 */
function watchParent(stopCommand: string[], base: string): ChildProcess {
  const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const script = `while kill -0 ${process.pid} 2>/dev/null; do sleep 1; done; ${stopCommand.map(quote).join(" ")} >/dev/null 2>&1; rm -rf ${quote(base)}`;
  const watcher = spawn("sh", ["-c", script], { detached: true, stdio: "ignore" });
  watcher.unref();
  return watcher;
}

export interface TestPostgres {
  config: PostgresConfig;
  /** Stops the server immediately (fast shutdown, open connections are cut). */
  stop(): Promise<void>;
  /** Starts it again on the same port and data dir. */
  start(): Promise<void>;
  /** Stops and deletes the data dir. */
  dispose(): Promise<void>;
}

/**
 * A throw-away PostgreSQL server on 127.0.0.1 with its data dir and socket in
 * a temp dir. As root the server runs as 'postgres' (PostgreSQL refuses root).
 */
export async function startPostgres(
  database = "nosepaw",
  /** Extra server settings, `name=value`, after (so overriding) the defaults below; benchmarks give it more memory. */
  settings: string[] = [],
): Promise<TestPostgres> {
  const base = mkdtempSync(join(tmpdir(), "nosepaw-pg-"));
  const dataDir = join(base, "data");
  const sockDir = base;
  const port = await freePort();
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    chmodSync(base, 0o755);
    const uid = Number(execFileSync("id", ["-u", "postgres"]).toString());
    const gid = Number(execFileSync("id", ["-g", "postgres"]).toString());
    chownSync(base, uid, gid);
  }
  const run = (cmd: string, args: string[]) => {
    const [file, argv] = asRoot ? ["runuser", ["-u", "postgres", "--", join(BIN, cmd), ...args]] : [join(BIN, cmd), args];
    const r = spawnSync(file, argv, { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`${cmd} failed (${r.status}): ${r.stderr || r.stdout}`);
    return r.stdout;
  };

  run("initdb", ["-D", dataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]);
  const opts = `-c listen_addresses=127.0.0.1 -p ${port} -k ${sockDir} -c fsync=off -c shared_buffers=32MB -c max_connections=30${settings.map((x) => ` -c ${x}`).join("")}`;
  let up = false;
  const stopArgs = ["-D", dataDir, "-m", "immediate", "-w", "-t", "30", "stop"];
  const stopCommand = asRoot ? ["runuser", "-u", "postgres", "--", join(BIN, "pg_ctl"), ...stopArgs] : [join(BIN, "pg_ctl"), ...stopArgs];
  const watcher = watchParent(stopCommand, base);
  // On exit: stop it synchronously (nothing asynchronous runs any more) and remove its folder.
  running.set(base, () => {
    if (up) spawnSync(stopCommand[0], stopCommand.slice(1), { stdio: "ignore" });
    rmSync(base, { recursive: true, force: true });
    watcher.kill();
  });
  const start = async () => {
    if (up) return;
    run("pg_ctl", ["-D", dataDir, "-o", opts, "-l", join(base, "server.log"), "-w", "-t", "30", "start"]);
    up = true;
  };
  const stop = async () => {
    if (!up) return;
    run("pg_ctl", stopArgs);
    up = false;
  };
  try {
    await start();
  } catch (e) {
    running.get(base)!();
    running.delete(base);
    throw e;
  }
  run("createdb", ["-h", sockDir, "-p", String(port), "-U", "postgres", database]);

  return {
    config: { host: "127.0.0.1", port, username: "postgres", password: "", database },
    start,
    stop,
    async dispose() {
      await stop().catch(() => {});
      rmSync(base, { recursive: true, force: true });
      running.delete(base);
      watcher.kill();
    },
  };
}
