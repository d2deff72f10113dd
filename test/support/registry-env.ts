import type { TestPostgres } from "./postgres.js";
import type { TestS3 } from "./s3.js";

/** The server's environment for an S3-protocol store and a PostgreSQL registry, as an operator sets it. */
export function remoteRegistryEnv(s3: TestS3, pg: TestPostgres): Record<string, string> {
  return {
    NCP_ENDPOINT: s3.config.endpoint,
    NCP_ACCESS_KEY: s3.config.accessKeyId,
    NCP_SECRET_KEY: s3.config.secretAccessKey,
    NCP_BUCKET_NAME: s3.config.bucket,
    DB_HOST: pg.config.host,
    DB_PORT: String(pg.config.port),
    DB_USERNAME: pg.config.username,
    DB_PASSWORD: pg.config.password,
    DB_DATABASE: pg.config.database,
  };
}
