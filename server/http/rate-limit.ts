/** Requests per second a client may sustain, and how many it may send at once after being idle. */
export interface RateLimit {
  rate: number;
  burst: number;
}

export type Admission = { ok: true } | { ok: false; retryAfterS: number };

export interface RateLimiter {
  /** Takes one request's token from the client's bucket, or says when the next one will be there. */
  take(client: string): Admission;
  /** Buckets held now (for tests and observers). */
  size(): number;
}

interface Bucket {
  tokens: number;
  at: number;
}

/**
 * Token buckets, one per client key. A bucket that has refilled to `burst`
 * is the same as no bucket, so idle ones are dropped; past `maxClients`
 * (clients sending from many addresses at once) the least recently seen go
 * first, which at worst hands such a client a fresh burst: memory stays
 * bounded whatever the traffic.
 */
export function createRateLimiter(limit: RateLimit, opts: { maxClients?: number; now?: () => number } = {}): RateLimiter {
  const maxClients = opts.maxClients ?? 10_000;
  const now = opts.now ?? (() => performance.now());
  const fullAfterMs = (limit.burst / limit.rate) * 1000;
  // Map order is least recently seen first: each take moves its key to the end.
  const buckets = new Map<string, Bucket>();

  const evict = (t: number) => {
    for (const [key, b] of buckets) {
      if (t - b.at >= fullAfterMs) buckets.delete(key);
      else break; // the rest were seen more recently still
    }
    while (buckets.size >= maxClients) buckets.delete(buckets.keys().next().value!);
  };

  return {
    take(client) {
      const t = now();
      let b = buckets.get(client);
      if (b) {
        buckets.delete(client);
        b.tokens = Math.min(limit.burst, b.tokens + ((t - b.at) / 1000) * limit.rate);
        b.at = t;
      } else {
        if (buckets.size >= maxClients) evict(t);
        b = { tokens: limit.burst, at: t };
      }
      buckets.set(client, b);
      if (b.tokens >= 1) {
        b.tokens -= 1;
        return { ok: true };
      }
      return { ok: false, retryAfterS: Math.max(1, Math.ceil((1 - b.tokens) / limit.rate)) };
    },
    size: () => buckets.size,
  };
}
