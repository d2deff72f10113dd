import { execFileSync } from "node:child_process";

/**
 * An IPv4 address of this machine that is not loopback, made by the test
 * itself so the result does not depend on the runner's network: a /32 from
 * 198.18.0.0/15 (RFC 2544, benchmarking, never routed) added to `lo` with
 * iproute2. A connection to it from this machine leaves from it, so a server
 * sees a caller from another address, as from another machine. Needs root
 * (CAP_NET_ADMIN) and `ip`; the address is removed by `remove()` and, should
 * the process end first, on exit.
 */
export interface OwnAddress {
  address: string;
  remove(): void;
}

export type OwnAddressResult = { ok: true; own: OwnAddress } | { ok: false; missing: string };

export function addNonLoopbackAddress(): OwnAddressResult {
  // One address per process, so concurrent test processes do not share one.
  const n = process.pid % 65_000;
  const address = `198.18.${(n >> 8) & 255}.${n & 255 || 1}`;
  const ip = (...args: string[]) => execFileSync("ip", args, { stdio: ["ignore", "pipe", "pipe"], timeout: 10_000 }).toString();
  try {
    if (!ip("-4", "addr", "show", "dev", "lo").includes(` ${address}/`)) ip("addr", "add", `${address}/32`, "dev", "lo");
  } catch (e) {
    const err = e as { stderr?: Buffer; message: string; code?: string };
    return {
      ok: false,
      missing: `cannot add ${address}/32 to lo with iproute2: ${err.code === "ENOENT" ? "no `ip` command" : err.stderr?.toString().trim() || err.message}`,
    };
  }
  let removed = false;
  const remove = () => {
    if (removed) return;
    removed = true;
    process.removeListener("exit", remove);
    try {
      ip("addr", "del", `${address}/32`, "dev", "lo");
    } catch {
      // already gone
    }
  };
  process.once("exit", remove);
  return { ok: true, own: { address, remove } };
}
