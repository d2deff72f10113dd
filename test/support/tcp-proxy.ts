import { connect, createServer, type Socket } from "node:net";

/**
 * A TCP proxy on 127.0.0.1 between the server and one dependency (s3rver,
 * PostgreSQL) that can make the network between them slow or broken:
 *
 * - `setLatency(ms)`: every chunk waits this long, in both directions, in order;
 * - `stall()`: connections are still accepted and bytes still read, but none
 *   are forwarded (nor the FIN that follows them) until `resume()`, as on a
 *   link that drops everything; a side that is destroyed still tears its
 *   pair down at once, so sockets given up by the server do not linger here;
 * - `cut()`: destroys every open connection now (a reset mid-stream);
 *   `cutAfter(n)`: destroys any connection once n client bytes have passed;
 * - `open()`: connections open now, on the server's side and the dependency's.
 */
export interface TcpProxy {
  port: number;
  setLatency(ms: number): void;
  stall(): void;
  /** Forwards what was held, then lets bytes flow again. */
  resume(): void;
  cut(): void;
  cutAfter(bytes: number | undefined): void;
  open(): { client: number; upstream: number };
  /** Connections whose client bytes are held by a stall right now: requests that are in flight. */
  holding(): number;
  /** Upstream connections made since the proxy started. */
  opened(): number;
  close(): Promise<void>;
}

type Item = { due: number; chunk: Buffer } | { due: number; end: true };

/** One direction of a connection: a queue that honours latency and stalls, FIN last. */
function pipe(from: Socket, to: Socket, state: { latency: number; stalled: boolean }, onBytes: (n: number) => void) {
  const queue: Item[] = [];
  let timer: ReturnType<typeof setTimeout> | undefined;
  let ended = false;
  const pump = () => {
    timer = undefined;
    while (queue.length > 0 && !state.stalled && !to.destroyed) {
      const wait = queue[0].due - Date.now();
      if (wait > 0) {
        timer = setTimeout(pump, wait);
        return;
      }
      const item = queue.shift()!;
      if ("end" in item) to.end();
      else to.write(item.chunk);
    }
  };
  from.on("data", (chunk: Buffer) => {
    onBytes(chunk.length);
    queue.push({ due: Date.now() + state.latency, chunk });
    if (!timer) pump();
  });
  from.on("end", () => {
    if (ended) return;
    ended = true;
    queue.push({ due: Date.now() + state.latency, end: true });
    if (!timer) pump();
  });
  return {
    held: () => state.stalled && queue.some((i) => "chunk" in i),
    resume: () => {
      if (timer) clearTimeout(timer);
      pump();
    },
  };
}

/** Listens on a free port of 127.0.0.1 and forwards to `target`'s port there. */
export async function startTcpProxy(targetPort: number, targetHost = "127.0.0.1"): Promise<TcpProxy> {
  const state = { latency: 0, stalled: false };
  let cutLimit: number | undefined;
  let opened = 0;
  const pairs = new Set<{ client: Socket; upstream: Socket; up: ReturnType<typeof pipe>; down: ReturnType<typeof pipe> }>();

  const server = createServer({ allowHalfOpen: true }, (client) => {
    opened++;
    const upstream = connect({ port: targetPort, host: targetHost, allowHalfOpen: true });
    let sent = 0;
    const teardown = () => {
      client.destroy();
      upstream.destroy();
      pairs.delete(pair);
    };
    const up = pipe(client, upstream, state, (n) => {
      sent += n;
      if (cutLimit !== undefined && sent >= cutLimit) teardown();
    });
    const down = pipe(upstream, client, state, () => {});
    const pair = { client, upstream, up, down };
    pairs.add(pair);
    // Either side gone for good (closed both ways, reset, refused): the other goes too.
    for (const s of [client, upstream]) {
      s.on("error", teardown);
      s.on("close", teardown);
    }
  });
  const cut = () => {
    for (const p of [...pairs]) {
      p.client.destroy();
      p.upstream.destroy();
      pairs.delete(p);
    }
  };
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;

  return {
    port,
    setLatency(ms) {
      state.latency = ms;
    },
    stall() {
      state.stalled = true;
    },
    resume() {
      state.stalled = false;
      for (const p of pairs) {
        p.up.resume();
        p.down.resume();
      }
    },
    cut,
    cutAfter(bytes) {
      cutLimit = bytes;
    },
    open() {
      let client = 0;
      let upstream = 0;
      for (const p of pairs) {
        if (!p.client.destroyed) client++;
        if (!p.upstream.destroyed) upstream++;
      }
      return { client, upstream };
    },
    holding: () => [...pairs].filter((p) => p.up.held()).length,
    opened: () => opened,
    async close() {
      cut();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
