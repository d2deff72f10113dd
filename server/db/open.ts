import type { Config } from "../config.js";
import type { DatabaseConfig } from "./database.js";

/** The database the configuration names: PostgreSQL when DB_HOST is set, else PGlite in its folder. */
export function databaseConfig(config: Config, onError?: (e: Error) => void): DatabaseConfig {
  return config.pg
    ? {
        kind: "postgres",
        host: config.pg.host,
        port: config.pg.port,
        username: config.pg.user,
        password: config.pg.password,
        database: config.pg.database,
        max: config.dbPoolMax,
        connectTimeoutMs: config.dbConnectTimeoutMs,
        queryTimeoutMs: config.dbTimeoutMs,
        idleTimeoutMs: config.dbIdleTimeoutMs,
        onError,
      }
    : { kind: "pglite", dataDir: config.pgliteDir };
}
