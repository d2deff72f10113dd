import type http from "node:http";
import type http2 from "node:http2";
import type { Logger } from "../log.js";
import { isLoopback, presentedKey, type KeyRing } from "./auth.js";
import { createRateLimiter, type RateLimit } from "./rate-limit.js";
import { refuseRpc, rpcProtocol } from "./rpc-refusal.js";

type Req = http.IncomingMessage | http2.Http2ServerRequest;
type Res = http.ServerResponse | http2.Http2ServerResponse;

/** Decides an RPC before its body is read; true when it was refused (and answered). */
export type RpcGuard = (req: Req, res: Res, path: string) => boolean;

export interface RpcGuardOptions {
  keys: KeyRing;
  /** Connect and gRPC-Web calls (browsers, curl) need a key. */
  browserAuth: boolean;
  /** ... except from this machine (loopback peer): no keys are configured and BROWSER_AUTH=auto. */
  browserLoopbackWithoutKey: boolean;
  /** Plain gRPC calls (the gateway) need a key. */
  grpcAuth: boolean;
  browserLimit: RateLimit | undefined;
  grpcLimit: RateLimit | undefined;
  /** Path prefixes nobody authenticates for or is limited on: health probes (kubelet's gRPC probe sends no metadata). */
  openPrefixes: string[];
  log: Logger;
}

const NEEDS_KEY =
  "this server needs an API key: send Authorization: Bearer <key> or x-api-key: <key> (the capture page: open it as /#key=<key>)";
const NO_KEYS =
  "this server has no API keys configured and accepts browser calls from other machines only with a key: " +
  "set API_KEYS or API_KEYS_FILE on the server (or BROWSER_AUTH=off when a proxy in front authenticates callers)";

/**
 * Who may call, and how often. A client is its API key when it presents an
 * accepted one, else its remote address; wrong keys are counted against the
 * address, so guessing keys is rate limited like any other call. Browser
 * protocols and plain gRPC have separate limits: the gateway is one address
 * speaking for all its users. With no keys configured and the port bound
 * beyond loopback, browser calls pass only from this machine: the capture
 * app on localhost works, and nobody elsewhere reaches the browser protocols.
 */
export function createRpcGuard(opts: RpcGuardOptions): RpcGuard {
  const browserLimiter = opts.browserLimit && createRateLimiter(opts.browserLimit);
  const grpcLimiter = opts.grpcLimit && createRateLimiter(opts.grpcLimit);

  return (req, res, path) => {
    if (opts.openPrefixes.some((p) => path.startsWith(p))) return false;
    const protocol = rpcProtocol(req.headers["content-type"]);
    const browser = protocol !== "grpc";
    const presented = presentedKey(req.headers);
    const key = opts.keys.match(presented);
    const peer = req.socket?.remoteAddress ?? "unknown";
    const client = key ?? `addr:${peer}`;

    const limiter = browser ? browserLimiter : grpcLimiter;
    const admission = limiter?.take(client);
    if (admission && !admission.ok) {
      opts.log.debug("rpc refused", { reason: "rate limit", protocol, path, client });
      refuseRpc(req, res, "resource_exhausted", `rate limit: too many requests from this client, retry in ${admission.retryAfterS} s`, {
        "Retry-After": String(admission.retryAfterS),
      });
      return true;
    }
    // The peer is the socket's own address, never a forwarded header a caller could write.
    const loopbackOnly = browser && opts.browserLoopbackWithoutKey;
    const needsKey = browser ? opts.browserAuth && !(loopbackOnly && isLoopback(peer)) : opts.grpcAuth;
    if (needsKey && key === undefined) {
      const reason = loopbackOnly ? "no keys configured, caller on another machine" : presented ? "key not accepted" : "no key";
      opts.log.debug("rpc refused", { reason, protocol, path, client });
      refuseRpc(req, res, "unauthenticated", loopbackOnly ? NO_KEYS : presented ? "API key not accepted" : NEEDS_KEY, {
        "WWW-Authenticate": "Bearer",
      });
      return true;
    }
    return false;
  };
}
