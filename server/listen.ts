import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { Logger } from "./log.js";

type Handler = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => void;

export interface Listener {
  port: number;
  /** Stops accepting, lets in-flight requests finish (up to timeoutMs), then closes every connection. */
  close(timeoutMs: number): Promise<void>;
}

/** HTTP/2 receive windows: a stream's, and the connection's shared by its streams (gRPC clients multiplex one). */
const STREAM_WINDOW = 8 * 1024 * 1024;
const CONNECTION_WINDOW = 32 * 1024 * 1024;

const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/**
 * One cleartext port for every client: gRPC clients speak HTTP/2 with prior
 * knowledge (h2c), browsers and curl speak HTTP/1.1 (gRPC-Web, Connect). Node
 * cannot offer both on one plaintext server, so each connection's first bytes
 * decide which server gets the socket.
 */
export async function listen(opts: { host: string; port: number; handler: Handler; log: Logger }): Promise<Listener> {
  // Counted from the first request byte to the last response byte, so a
  // request still uploading its image at shutdown counts as in flight.
  let inFlight = 0;
  const counted: Handler = (req, res) => {
    inFlight++;
    res.once("close", () => inFlight--);
    opts.handler(req, res);
  };
  const h2 = http2.createServer(
    // A photo is sent whole: with HTTP/2's default 64 KiB stream window a
    // 3 MB phone photo crossed in about fifty window round trips, each waiting
    // for the event loop to read the last and announce more room.
    { maxSessionMemory: 64, settings: { initialWindowSize: STREAM_WINDOW } },
    counted as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void,
  );
  const h1 = http.createServer(counted as (req: http.IncomingMessage, res: http.ServerResponse) => void);
  h1.keepAliveTimeout = 5_000;
  const sessions = new Set<http2.Http2Session>();
  h2.on("session", (s) => {
    // The connection's window too (it starts at 64 KiB whatever the settings say).
    s.once("connect", () => s.setLocalWindowSize(CONNECTION_WINDOW));
    sessions.add(s);
    s.on("close", () => sessions.delete(s));
    s.on("error", () => s.destroy());
  });
  const sockets = new Set<net.Socket>();

  const server = net.createServer((socket) => {
    // Answers are written as a few small frames (HEADERS, DATA, trailers):
    // Nagle would hold the later ones until the client's ACK of the first.
    socket.setNoDelay(true);
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => socket.destroy());
    let seen = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      seen = Buffer.concat([seen, chunk]);
      const n = Math.min(seen.length, H2_PREFACE.length);
      const isH2 = seen.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
      if (isH2 && seen.length < H2_PREFACE.length) return; // wait for the whole preface
      socket.off("data", onData);
      socket.pause();
      socket.unshift(seen);
      // http2 takes the bytes read so far from the paused socket's buffer and
      // then reads the handle itself (resuming here would lose them); the
      // HTTP/1 parser only reads once the socket flows again.
      (isH2 ? h2 : h1).emit("connection", socket);
      if (!isH2) socket.resume();
    };
    socket.on("data", onData);
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as net.AddressInfo).port;

  return {
    port,
    async close(timeoutMs) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // GOAWAY tells gRPC clients to take new calls elsewhere; open streams finish.
      for (const s of sessions) s.close();
      h1.closeIdleConnections();
      const deadline = Date.now() + timeoutMs;
      while (inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      if (inFlight > 0) opts.log.warn("shutdown timeout: dropping in-flight requests", { inFlight });
      for (const s of sessions) s.destroy();
      h1.closeAllConnections();
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}
