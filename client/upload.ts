/** The service, called from the page over the Connect protocol on the page's own origin. */
import { createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { NoseEmbedderService, Verdict } from "../gen/nose_embedder_pb.js";

export type Service = Client<typeof NoseEmbedderService>;

export function serviceClient(baseUrl = location.origin): Service {
  return createClient(NoseEmbedderService, createConnectTransport({ baseUrl, useBinaryFormat: true }));
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

export async function registerPet(svc: Service, jpegs: Uint8Array[], vectors: ClientVector[] | undefined, requestedBy: string) {
  return svc.registerPet({
    photos: jpegs.map(photo),
    requestId: crypto.randomUUID(),
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
