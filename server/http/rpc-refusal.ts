import type http from "node:http";
import type http2 from "node:http2";

type Req = http.IncomingMessage | http2.Http2ServerRequest;
type Res = http.ServerResponse | http2.Http2ServerResponse;

/** Which of the port's RPC protocols a request speaks, from its content type. */
export type RpcProtocol = "grpc" | "grpc-web" | "connect" | "connect-stream";

export function rpcProtocol(contentType: string | undefined): RpcProtocol {
  const ct = (contentType ?? "").trim().toLowerCase();
  if (/^application\/grpc-web([+;-]|$)/.test(ct)) return "grpc-web";
  if (/^application\/grpc([+;]|$)/.test(ct)) return "grpc";
  if (ct.startsWith("application/connect+")) return "connect-stream";
  // Unary Connect (application/json, application/proto, GET) and anything
  // unknown: the caller treats it as a browser's request, so it fails closed.
  return "connect";
}

/** The refusals answered before a request's body is read. */
const CODES = {
  unauthenticated: { grpc: 16, http: 401 },
  resource_exhausted: { grpc: 8, http: 429 },
} as const;

export type RefusalCode = keyof typeof CODES;

/** grpc-message is percent-encoded: bytes outside printable ASCII, and '%' itself. */
function grpcMessage(message: string): string {
  let out = "";
  for (const b of Buffer.from(message, "utf8"))
    out += b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
  return out;
}

/**
 * Answers an RPC with an error in its own protocol without reading the
 * request body (a refused caller cannot make the server buffer its upload):
 * Connect unary as a JSON error with the matching HTTP status, Connect
 * streaming as an end-of-stream message, gRPC and gRPC-Web as a
 * trailers-only response carrying grpc-status.
 */
export function refuseRpc(req: Req, res: Res, code: RefusalCode, message: string, headers: Record<string, string> = {}): void {
  const protocol = rpcProtocol(req.headers["content-type"]);
  const { grpc, http } = CODES[code];
  if (protocol === "grpc" || protocol === "grpc-web") {
    const contentType = req.headers["content-type"] ?? `application/${protocol}+proto`;
    const all = { ...headers, "Content-Type": contentType, "grpc-status": String(grpc), "grpc-message": grpcMessage(message) };
    if ("stream" in res) {
      // Over HTTP/2 the status must come in one HEADERS frame that ends the
      // stream: headers and then an empty end reads as "no status" to gRPC clients.
      const h2: Record<string, string | number | string[]> = { ":status": 200 };
      for (const [k, v] of Object.entries({ ...res.getHeaders(), ...all })) if (v !== undefined) h2[k.toLowerCase()] = v as string;
      res.stream.respond(h2, { endStream: true });
      return;
    }
    res.writeHead(200, all);
    res.end();
    return;
  }
  if (protocol === "connect-stream") {
    const json = Buffer.from(JSON.stringify({ error: { code, message } }));
    const frame = Buffer.alloc(5 + json.length);
    frame[0] = 0b10; // end of stream
    frame.writeUInt32BE(json.length, 1);
    json.copy(frame, 5);
    res.writeHead(200, { ...headers, "Content-Type": req.headers["content-type"]!, "Content-Length": String(frame.length) });
    res.end(frame);
    return;
  }
  const body = JSON.stringify({ code, message });
  res.writeHead(http, { ...headers, "Content-Type": "application/json", "Content-Length": String(Buffer.byteLength(body)) });
  res.end(body);
}
