/**
 * Loaded into a benchmarked server process with `node --import`: for every
 * ExtractNoseVector call, the moments the request's HTTP/2 headers and last
 * body bytes arrived, the handler's stages (nosepaw:rpc) and the moment the
 * response stream closed, all as epoch milliseconds (performance.timeOrigin +
 * now, comparable with the benchmark process's clock), sent over the IPC
 * channel. Changes nothing in the server; does nothing without an IPC channel.
 */
import { subscribe } from "node:diagnostics_channel";
import http2 from "node:http2";

export interface CallTrace {
  id: string;
  headersAt?: number;
  lastDataAt?: number;
  handlerStart?: number;
  handlerEnd?: number;
  closedAt?: number;
  stages?: Record<string, number>;
}

if (process.send) {
  const now = () => performance.timeOrigin + performance.now();
  const traces = new Map<string, CallTrace>();
  const get = (id: string) => traces.get(id) ?? (traces.set(id, { id }), traces.get(id)!);
  subscribe("nosepaw:rpc", (m) => {
    const r = m as { id: string; method: string; ms: number; stages: Record<string, number> };
    if (r.method !== "ExtractNoseVector") return;
    const t = get(r.id);
    t.handlerEnd = now();
    t.handlerStart = t.handlerEnd - r.ms;
    t.stages = r.stages;
  });
  const createServer = http2.createServer;
  // The server's http2.createServer, with a listener on each stream added.
  (http2 as { createServer: unknown }).createServer = (...a: unknown[]) => {
    const server = (createServer as (...x: unknown[]) => http2.Http2Server)(...a);
    server.on("stream", (stream, headers) => {
      const id = headers["x-request-id"];
      if (typeof id !== "string") return;
      const t = get(id);
      t.headersAt = now();
      stream.on("data", () => (t.lastDataAt = now()));
      stream.on("close", () => (t.closedAt = now()));
    });
    return server;
  };
  process.on("message", (m) => {
    if (m !== "call-traces") return;
    process.send!([...traces.values()]);
    traces.clear();
  });
  process.channel?.unref();
}
