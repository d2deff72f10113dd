/** The service, called from the page over the Connect protocol on the page's own origin. */
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { NoseEmbedderService, Verdict } from "../gen/nose_embedder_pb.js";

export type Service = Client<typeof NoseEmbedderService>;

const KEY_ITEM = "nosepaw.apiKey";

/**
 * The API key the page was given as `#key=...`: a fragment never reaches the
 * server, its logs or a Referer; it is kept for this tab only and taken out
 * of the address bar. Servers that need no key are called without one.
 */
export function pageApiKey(): string | undefined {
  const given = /(?:^#|&)key=([^&]+)/.exec(location.hash);
  if (given) {
    sessionStorage.setItem(KEY_ITEM, decodeURIComponent(given[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(KEY_ITEM) ?? undefined;
}

export function serviceClient(baseUrl = location.origin, apiKey = pageApiKey()): Service {
  const withKey: Interceptor = (next) => (req) => {
    if (apiKey) req.header.set("Authorization", `Bearer ${apiKey}`);
    return next(req);
  };
  return createClient(NoseEmbedderService, createConnectTransport({ baseUrl, useBinaryFormat: true, interceptors: [withKey] }));
}

/** The page's own embedding of a photo, sent beside it so the server can report how well they agree. */
export interface ClientVector {
  vector: Float32Array;
  executionProvider: string;
  modelVersion: string;
}

function photo(jpeg: Uint8Array) {
  return { source: { case: "imageData" as const, value: jpeg }, imageFormat: "jpeg" };
}

function clientEmbedding(v: ClientVector) {
  return { vector: Array.from(v.vector), executionProvider: v.executionProvider, modelVersion: v.modelVersion };
}

/**
 * `requestId` is the idempotency key: the same id sent again (a retry after a
 * lost answer) returns the pet that id registered instead of registering again.
 */
export async function registerPet(
  svc: Service,
  jpegs: Uint8Array[],
  vectors: ClientVector[] | undefined,
  requestedBy: string,
  requestId: string = crypto.randomUUID(),
) {
  return svc.registerPet({
    photos: jpegs.map(photo),
    requestId,
    requestedBy,
    // one per photo, or none: the server refuses a partial set
    clientEmbeddings: vectors && vectors.length === jpegs.length ? vectors.map(clientEmbedding) : [],
  });
}

export async function verifyPet(svc: Service, petDid: string, jpeg: Uint8Array, vector: ClientVector | undefined, requestedBy: string) {
  return svc.verifyPet({ petDid, photo: photo(jpeg), requestedBy, clientEmbedding: vector && clientEmbedding(vector) });
}

export async function identifyPet(svc: Service, jpeg: Uint8Array, vector: ClientVector | undefined) {
  return svc.identifyPet({ photo: photo(jpeg), topK: 5, clientEmbedding: vector && clientEmbedding(vector) });
}

export function verdictName(v: Verdict): string {
  return Verdict[v] ?? String(v);
}
