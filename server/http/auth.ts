import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";

export interface KeyRing {
  /** How many keys are accepted; 0: none configured. */
  size: number;
  /** The accepted key's name (`key1`, `key2`, ... in configuration order), or undefined. */
  match(presented: string | undefined): string | undefined;
}

const digest = (s: string) => createHash("sha256").update(s).digest();

/**
 * The API keys the server accepts. Presented keys are compared as SHA-256
 * digests in constant time against every key, so neither the answer's timing
 * nor a key's length tells a caller how close a guess came.
 */
export function createKeyRing(keys: readonly string[]): KeyRing {
  const digests = keys.map(digest);
  return {
    size: digests.length,
    match(presented) {
      if (presented === undefined || presented === "") return undefined;
      const d = digest(presented);
      let found = -1;
      for (let i = 0; i < digests.length; i++) if (timingSafeEqual(d, digests[i]) && found < 0) found = i;
      return found < 0 ? undefined : `key${found + 1}`;
    },
  };
}

/** The key a request carries: `Authorization: Bearer <key>`, else `x-api-key: <key>`. */
export function presentedKey(headers: IncomingHttpHeaders): string | undefined {
  const auth = headers.authorization;
  if (typeof auth === "string") {
    const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(auth);
    if (m) return m[1];
  }
  const key = headers["x-api-key"];
  return typeof key === "string" && key.trim() !== "" ? key.trim() : undefined;
}

/** Hosts that only this machine can reach; anything else exposes the port. */
export function isLoopback(host: string): boolean {
  const h = host
    .trim()
    .toLowerCase()
    .replace(/^\[(.*)\]$/, "$1");
  return h === "localhost" || h === "::1" || /^(::ffff:)?127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}
