/**
 * Captures made while the network is down: kept in IndexedDB with everything
 * the upload needs (the JPEGs, the page's embeddings of them, their quality
 * scores), shown with their state, and sent when the network returns.
 *
 * Each entry's id is made when it is queued and sent as RegisterPet's
 * request_id, so a retry after a lost answer (the server registered the pet,
 * the reply never arrived) gets that same pet back instead of a second
 * registration or a "duplicate" refusal.
 */
export type QueueState = "waiting" | "sending" | "done" | "failed";

export interface QueuedVector {
  vector: Float32Array;
  executionProvider: string;
  modelVersion: string;
}

export interface QueuedCapture {
  /** Also the RegisterPet request_id. */
  id: string;
  kind: "register" | "verify";
  createdAt: number;
  jpegs: Uint8Array[];
  /** The page's embedding of each JPEG, same order; empty when the page had no model. */
  vectors: QueuedVector[];
  /** Quality score of each kept frame (shared/quality). */
  scores: number[];
  /** The pet a verification is against. */
  petDid?: string;
  state: QueueState;
  attempts: number;
  /** The server's message on failure, or why the last try did not get through. */
  message?: string;
  /** What the server answered on success (a DID, a verdict). */
  result?: string;
}

const DB = "nosepaw";
const STORE = "captures";

function open(): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE, { keyPath: "id" });
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function tx<T>(mode: IDBTransactionMode, run: (store: IDBObjectStore) => IDBRequest<T>): Promise<T> {
  const db = await open();
  try {
    return await new Promise<T>((resolve, reject) => {
      const t = db.transaction(STORE, mode);
      const req = run(t.objectStore(STORE));
      t.oncomplete = () => resolve(req.result);
      t.onerror = () => reject(t.error);
      t.onabort = () => reject(t.error);
    });
  } finally {
    db.close();
  }
}

export const putCapture = (c: QueuedCapture) => tx("readwrite", (s) => s.put(c)).then(() => undefined);
export const getCapture = (id: string) => tx<QueuedCapture | undefined>("readonly", (s) => s.get(id));
export const deleteCapture = (id: string) => tx("readwrite", (s) => s.delete(id)).then(() => undefined);
export const listCaptures = () =>
  tx<QueuedCapture[]>("readonly", (s) => s.getAll()).then((all) => all.sort((a, b) => a.createdAt - b.createdAt));

export function newCapture(
  kind: QueuedCapture["kind"],
  fields: Pick<QueuedCapture, "jpegs" | "vectors" | "scores" | "petDid">,
): QueuedCapture {
  return { id: crypto.randomUUID(), kind, createdAt: Date.now(), state: "waiting", attempts: 0, ...fields };
}

/** What one try ended in: sent (done or refused by the server), or not through (try again later). */
export type Outcome = { sent: true; ok: boolean; message: string } | { sent: false; message: string };

/**
 * Sends every waiting entry (and any left "sending" by a page that closed
 * mid-way), one at a time, in the order they were queued; `onChange` is
 * called after every state change. Stops at the first entry that does not
 * get through: the network is still down, the rest would fail alike.
 * Returns true when nothing is left waiting.
 */
export async function flushQueue(send: (c: QueuedCapture) => Promise<Outcome>, onChange: () => void): Promise<boolean> {
  for (const c of await listCaptures()) {
    if (c.state !== "waiting" && c.state !== "sending") continue;
    c.state = "sending";
    c.attempts++;
    await putCapture(c);
    onChange();
    let out: Outcome;
    try {
      out = await send(c);
    } catch (e) {
      out = { sent: false, message: String((e as Error)?.message ?? e) };
    }
    if (out.sent) {
      c.state = out.ok ? "done" : "failed";
      if (out.ok) {
        c.result = out.message;
        c.message = undefined;
      } else c.message = out.message;
    } else {
      c.state = "waiting";
      c.message = out.message;
    }
    await putCapture(c);
    onChange();
    if (!out.sent) return false;
  }
  return true;
}
