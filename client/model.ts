/**
 * The embedding model the server runs, fetched from the server itself and
 * kept in the Cache API keyed by its version, so a returning page starts
 * without downloading it again and never mixes two model versions.
 */
export interface ModelCard {
  version: string;
  input?: { name?: string; shape?: (number | null)[] };
  output?: { name?: string; shape?: (number | null)[] };
  calibration?: { cosine: number[]; similarity: number[] };
  [k: string]: unknown;
}

export interface LoadedModel {
  version: string;
  etag: string | null;
  bytes: Uint8Array;
  card: ModelCard;
  inputSize: number;
  fromCache: boolean;
}

/** What this page was built to run: square RGB input, one embedding output. */
export const PAGE_EXPECTS = { minInput: 32, maxInput: 1024, outputDim: 512 };

export class ModelMismatchError extends Error {}

const CACHE = "nosepaw-model";
const MODEL_URL = "/model/nose-embedder.onnx";
const CARD_URL = "/model/card.json";

const CARD_ITEM = "nosepaw.modelCard";

/**
 * The server's model card. The last one seen is kept, so that a page opened
 * offline (from the service worker) still knows which cached model to run;
 * `offline` says the card came from there, not from the server.
 */
export async function fetchCard(): Promise<ModelCard & { offline?: boolean }> {
  let res: Response;
  try {
    res = await fetch(CARD_URL, { cache: "no-store" });
  } catch (e) {
    const kept = localStorage.getItem(CARD_ITEM);
    if (!kept) throw e;
    return { ...(JSON.parse(kept) as ModelCard), offline: true };
  }
  if (!res.ok) throw new Error(`model card: HTTP ${res.status}`);
  const card = (await res.json()) as ModelCard;
  if (typeof card.version !== "string" || !card.version) throw new Error("model card has no version");
  try {
    localStorage.setItem(CARD_ITEM, JSON.stringify(card));
  } catch {
    // storage full or refused: the page still works online
  }
  return card;
}

function checkCard(card: ModelCard): number {
  const shape = card.input?.shape;
  const size = shape && typeof shape[2] === "number" ? shape[2] : 224;
  if (shape && shape[3] !== undefined && shape[3] !== size) throw new ModelMismatchError(`model input ${shape.join("x")} is not square`);
  if (size < PAGE_EXPECTS.minInput || size > PAGE_EXPECTS.maxInput) throw new ModelMismatchError(`model input size ${size} out of range`);
  const dim = card.output?.shape?.[1];
  if (typeof dim === "number" && dim !== PAGE_EXPECTS.outputDim)
    throw new ModelMismatchError(`model gives ${dim} numbers, the page expects ${PAGE_EXPECTS.outputDim}`);
  return size;
}

/** The model matching the server's card, from the cache when it holds that version. */
export async function loadModel(card?: ModelCard): Promise<LoadedModel> {
  card ??= await fetchCard();
  const inputSize = checkCard(card);
  const key = `${MODEL_URL}?version=${encodeURIComponent(card.version)}`;
  const cache = typeof caches !== "undefined" ? await caches.open(CACHE).catch(() => null) : null;
  const cached = await cache?.match(key);
  if (cached && cached.headers.get("X-Model-Version") === card.version) {
    return {
      version: card.version,
      etag: cached.headers.get("ETag"),
      bytes: new Uint8Array(await cached.arrayBuffer()),
      card,
      inputSize,
      fromCache: true,
    };
  }
  const res = await fetch(MODEL_URL, { cache: "no-cache" });
  if (!res.ok) throw new Error(`model: HTTP ${res.status}`);
  const served = res.headers.get("X-Model-Version");
  if (served && served !== card.version) {
    // the server switched models between the two requests, or serves a
    // model its card does not describe: embeddings would not be comparable
    throw new ModelMismatchError(`server's model is ${served}, its card says ${card.version}`);
  }
  const bytes = new Uint8Array(await res.arrayBuffer());
  if (cache) {
    const headers = new Headers({ "Content-Type": "application/octet-stream", "X-Model-Version": card.version });
    const etag = res.headers.get("ETag");
    if (etag) headers.set("ETag", etag);
    // one version at a time: drop the others
    for (const req of await cache.keys()) if (req.url !== new URL(key, location.href).href) await cache.delete(req);
    await cache.put(key, new Response(bytes.slice(), { headers })).catch(() => undefined);
  }
  return { version: card.version, etag: res.headers.get("ETag"), bytes, card, inputSize, fromCache: false };
}
