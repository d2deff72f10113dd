import path from "node:path";
import { fileURLToPath } from "node:url";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../../gen/grpc/health/v1/health_pb.js";

/**
 * Container health check through the standard gRPC health service, the same
 * question Kubernetes' gRPC probes ask, so `docker ps` and the orchestrator
 * agree on what healthy means:
 *
 *   node build/server/tools/healthcheck.js [host:port] [--service NAME] [--timeout-ms N]
 *
 * The address defaults to 127.0.0.1 on GRPC_PORT (50052). Exit 0 when the
 * server answers SERVING; 1 for NOT_SERVING, an unknown service, or no
 * answer within the timeout; 2 for a usage error. One line on stdout says
 * which. Plain gRPC over h2c with the server's own runtime dependencies, so
 * the image needs no extra probe binary.
 */

export interface HealthAnswer {
  healthy: boolean;
  /** SERVING, NOT_SERVING, SERVICE_UNKNOWN, or why there was no answer. */
  detail: string;
}

export async function checkHealth(address: string, service = "", timeoutMs = 3000): Promise<HealthAnswer> {
  const client = createClient(Health, createGrpcTransport({ baseUrl: `http://${address}` }));
  try {
    const res = await client.check({ service }, { timeoutMs });
    return { healthy: res.status === Status.SERVING, detail: Status[res.status] ?? String(res.status) };
  } catch (e) {
    const err = ConnectError.from(e);
    // The health protocol answers NOT_FOUND for a service it does not know.
    if (err.code === Code.NotFound) return { healthy: false, detail: "SERVICE_UNKNOWN" };
    return { healthy: false, detail: `no answer from ${address}: ${Code[err.code]}: ${err.rawMessage}` };
  }
}

class UsageError extends Error {}

function parseArgs(argv: string[], env: Record<string, string | undefined>) {
  let address = `127.0.0.1:${env.GRPC_PORT?.trim() || "50052"}`;
  let service = "";
  let timeoutMs = 3000;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--service" && i + 1 < argv.length) service = argv[++i];
    else if (a === "--timeout-ms" && i + 1 < argv.length) {
      timeoutMs = Number(argv[++i]);
      if (!Number.isInteger(timeoutMs) || timeoutMs < 1) throw new UsageError(`--timeout-ms must be a positive integer`);
    } else if (!a.startsWith("--")) address = a;
    else throw new UsageError(`unknown argument ${a}`);
  }
  return { address, service, timeoutMs };
}

export async function main(argv = process.argv.slice(2), env = process.env): Promise<number> {
  let args;
  try {
    args = parseArgs(argv, env);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`healthcheck: ${e.message}\nusage: healthcheck [host:port] [--service NAME] [--timeout-ms N]\n`);
    return 2;
  }
  const answer = await checkHealth(args.address, args.service, args.timeoutMs);
  process.stdout.write(`${answer.detail}\n`);
  return answer.healthy ? 0 : 1;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  // Exit explicitly: the HTTP/2 session would keep the process alive a while.
  main().then(
    (code) => process.exit(code),
    (e) => {
      process.stderr.write(`healthcheck: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exit(1);
    },
  );
}
