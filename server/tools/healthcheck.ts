import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../../gen/grpc/health/v1/health_pb.js";
import { EXIT_FAILED, EXIT_OK, EXIT_USAGE, readArgs, runIfEntryPoint, stdio, UsageError, type Io } from "./cli.js";

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

const USAGE = "usage: healthcheck [host:port] [--service NAME] [--timeout-ms N]";

function options(argv: string[], env: Record<string, string | undefined>) {
  const { values, positionals } = readArgs(argv, {
    options: { service: { type: "string" }, "timeout-ms": { type: "string" } },
    unknown: (arg) => `unknown argument ${arg}`,
    missingValue: (option) => `unknown argument ${option}`,
  });
  const timeoutMs = values["timeout-ms"] === undefined ? 3000 : Number(values["timeout-ms"]);
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1) throw new UsageError(`--timeout-ms must be a positive integer`);
  return {
    address: positionals.at(-1) ?? `127.0.0.1:${env.GRPC_PORT?.trim() || "50052"}`,
    service: (values.service as string | undefined) ?? "",
    timeoutMs,
  };
}

export async function main(
  argv = process.argv.slice(2),
  env: Record<string, string | undefined> = process.env,
  io: Io = stdio,
): Promise<number> {
  let args;
  try {
    args = options(argv, env);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    io.err(`healthcheck: ${e.message}`);
    io.err(USAGE);
    return EXIT_USAGE;
  }
  const answer = await checkHealth(args.address, args.service, args.timeoutMs);
  io.out(answer.detail);
  return answer.healthy ? EXIT_OK : EXIT_FAILED;
}

runIfEntryPoint(import.meta.url, "healthcheck", () => main());
