/**
 * The capture page: camera (or picked photos) -> live checks -> best frames
 * kept -> embedded on the device -> agreement check -> register / verify /
 * identify against the service. `data-state` on #app follows the flow:
 * searching | guiding | captured | registered | verified.
 */
import { calibrate, cosine } from "../shared/similarity.js";
import { drawGuide, openCamera } from "./camera.js";
import { analysisFrame, assessFiles, captureFromVideo, DEFAULT_CAPTURE, toJpeg, type KeptFrame } from "./capture.js";
import { createEmbedder, pixelsOf, type Embedder, type Provider } from "./embed.js";
import { fetchCard, loadModel, ModelMismatchError, type LoadedModel } from "./model.js";
import { assessFrame, type FrameAssessment } from "../shared/quality/index.js";
import { toModelInput } from "../shared/preprocess.js";
import { identifyPet, registerPet, serviceClient, verdictName, verifyPet, type ClientVector } from "./upload.js";
import { ConnectError, Code } from "@connectrpc/connect";
import { flushQueue, listCaptures, newCapture, putCapture, type Outcome, type QueuedCapture } from "./queue.js";

export type PageState = "searching" | "guiding" | "captured" | "queued" | "registered" | "verified";

/** Kept frames must agree with each other: lowest pairwise score >= this (see agreementOf). */
export const AGREEMENT_MIN = 0.7;

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const app = $("app");
const video = $<HTMLVideoElement>("camera");
const guide = $<HTMLCanvasElement>("guide");
const params = new URLSearchParams(location.search);
const svc = serviceClient();

interface Prepared {
  frames: KeptFrame[];
  jpegs: Uint8Array[];
  vectors?: ClientVector[];
  agreement?: { cosine: number; similarity: number };
}

/** What tests and screenshots read; also handy in the console. */
const page = {
  state: "searching" as PageState,
  instructions: [] as { at: number; text: string }[],
  assessMs: [] as number[],
  embedMs: [] as number[],
  kept: [] as KeptFrame[],
  prepared: undefined as Prepared | undefined,
  model: undefined as LoadedModel | undefined,
  embedder: undefined as Embedder | undefined,
  embedderError: undefined as string | undefined,
  ready: undefined as unknown as Promise<void>,
  petDid: "",
  lastResponse: undefined as unknown,
  /** The service worker's registration once it is active (undefined where there is none). */
  serviceWorker: undefined as unknown as Promise<ServiceWorkerRegistration | undefined>,
  /** The offline queue as last shown, and a way to send it now. */
  queue: [] as QueuedCapture[],
  flush: () => flush(),
  /** Embeds an encoded image exactly as the page embeds its own photos. */
  async embedBytes(bytes: Uint8Array, type = "image/jpeg"): Promise<{ vector: number[]; ms: number; provider: Provider }> {
    await page.ready;
    if (!page.embedder) throw new Error(page.embedderError ?? "no embedder");
    const r = await page.embedder.embed(await pixelsOf(new Blob([bytes.slice()], { type })));
    return { vector: Array.from(r.vector), ms: r.ms, provider: page.embedder.provider };
  },
  /**
   * The model input (CHW, values in [0, 1]) the page makes of an encoded
   * image: the browser's decoder, then shared/preprocess.ts, as embedBytes.
   */
  async preprocessBytes(bytes: Uint8Array, type = "image/jpeg"): Promise<{ tensor: number[]; size: number; ms: number }> {
    await page.ready;
    const size = page.embedder?.inputSize ?? page.model?.inputSize ?? 224;
    const started = performance.now();
    const tensor = toModelInput(await pixelsOf(new Blob([bytes.slice()], { type })), size);
    return { tensor: Array.from(tensor), size, ms: performance.now() - started };
  },
  /**
   * Time of the live checks on a frame of the given size, downscaled as the
   * page does: means and medians over `frames` runs. The frame is the
   * camera's picture, or `from` when given, drawn at that size.
   */
  benchAssess(width: number, height: number, frames = 30, from?: CanvasImageSource) {
    const src = document.createElement("canvas");
    src.width = width;
    src.height = height;
    src.getContext("2d")!.drawImage(from ?? (video.videoWidth ? video : guide), 0, 0, width, height);
    const draws: number[] = [];
    const assesses: number[] = [];
    let size = "";
    let prev: FrameAssessment["stats"] | undefined;
    for (let i = 0; i < frames; i++) {
      const t0 = performance.now();
      const { frame } = analysisFrame(src, DEFAULT_CAPTURE.analysisWidth);
      const t1 = performance.now();
      prev = assessFrame(frame, prev).stats;
      assesses.push(performance.now() - t1);
      draws.push(t1 - t0);
      size = `${frame.width}x${frame.height}`;
    }
    const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
    const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
    return { drawMs: mean(draws), assessMs: mean(assesses), drawMedianMs: median(draws), assessMedianMs: median(assesses), analysis: size };
  },
};
(window as unknown as { nosepaw: typeof page }).nosepaw = page;

function setState(s: PageState) {
  page.state = s;
  app.dataset.state = s;
}
function busy(on: boolean) {
  app.dataset.busy = on ? "true" : "false";
}
function instruct(text: string) {
  const el = $("instruction");
  if (el.textContent === text) return;
  el.textContent = text;
  page.instructions.push({ at: performance.now(), text });
}
function status(text: string) {
  $("status").textContent = text;
}

async function startModel() {
  try {
    const card = await fetchCard();
    $("model-version").textContent = card.version;
    page.model = await loadModel(card);
    $("model-version").textContent = `${page.model.version}${page.model.fromCache ? " (cached)" : ""}`;
    const prefer = params.get("ep") as Provider | null;
    page.embedder = await createEmbedder(
      page.model.bytes,
      page.model.inputSize,
      prefer === "wasm" || prefer === "webgpu" ? prefer : undefined,
    );
    $("provider").textContent = page.embedder.provider;
  } catch (e) {
    page.embedderError = e instanceof ModelMismatchError ? `model mismatch: ${e.message}` : String((e as Error).message ?? e);
    $("provider").textContent = `off (${page.embedderError})`;
  }
}

let capturing: AbortController | undefined;

function onFrame(a: FrameAssessment, ms: number, scale: number) {
  page.assessMs.push(ms);
  if (page.assessMs.length > 300) page.assessMs.shift();
  drawGuide(guide, video, { ok: a.pass, noseBox: a.noseBox, scale });
  if (page.state === "searching" || page.state === "guiding") setState(a.noseBox || a.pass ? "guiding" : "searching");
  instruct(a.pass ? "Hold still…" : (a.instruction ?? "Point the camera at the nose"));
}

async function capture(mode: "register" | "verify") {
  capturing?.abort();
  capturing = new AbortController();
  setState("searching");
  instruct("Point the camera at the nose");
  await video.play().catch(() => undefined);
  const keep = mode === "register" ? DEFAULT_CAPTURE.keep : 1;
  for (;;) {
    const frames = await captureFromVideo(video, { ...DEFAULT_CAPTURE, keep, onFrame }, capturing.signal);
    video.pause(); // the preview holds on the moment of capture
    const prepared = await prepare(frames);
    if (mode === "verify") return verify(prepared);
    if (prepared.agreement && prepared.agreement.similarity < AGREEMENT_MIN) {
      instruct("Photos disagree: retaking");
      await video.play().catch(() => undefined);
      continue;
    }
    return captured(prepared);
  }
}

/** JPEGs of the kept frames and the page's embeddings of those very JPEGs. */
async function prepare(frames: KeptFrame[]): Promise<Prepared> {
  page.kept = frames;
  const blobs = await Promise.all(frames.map((f) => toJpeg(f.canvas)));
  const jpegs = await Promise.all(blobs.map(async (b) => new Uint8Array(await b.arrayBuffer())));
  const out: Prepared = { frames, jpegs };
  await page.ready;
  await checkModelCurrent();
  if (page.embedder && page.model) {
    out.vectors = [];
    for (const b of blobs) {
      const r = await page.embedder.embed(await pixelsOf(b));
      page.embedMs.push(r.ms);
      out.vectors.push({ vector: r.vector, executionProvider: page.embedder.provider, modelVersion: page.model.version });
    }
    if (out.vectors.length > 1)
      out.agreement = agreementOf(
        out.vectors.map((v) => v.vector),
        page.model.card.calibration,
      );
  }
  page.prepared = out;
  return out;
}

/**
 * The server may have moved to another model since the page loaded its own:
 * vectors of two models are not comparable, so on a mismatch the page stops
 * embedding and sends the photos alone (the server embeds them anyway).
 */
async function checkModelCurrent() {
  if (!page.model || !page.embedder) return;
  const card = await fetchCard().catch(() => undefined);
  if (card && card.version !== page.model.version) {
    page.embedder = undefined;
    page.embedderError = `model mismatch: server runs ${card.version}, this page has ${page.model.version}; reload`;
    $("provider").textContent = `off (${page.embedderError})`;
  }
}

/**
 * Lowest cosine over all pairs of kept frames, and that cosine mapped to the
 * calibrated similarity with the model card's knots (the server's own rule
 * for registration photos is similarity >= 0.70); without knots the
 * similarity is the cosine itself.
 */
export function agreementOf(vectors: Float32Array[], calibration?: { cosine: number[]; similarity: number[] }) {
  let min = 1;
  for (let i = 0; i < vectors.length; i++) for (let j = i + 1; j < vectors.length; j++) min = Math.min(min, cosine(vectors[i], vectors[j]));
  return { cosine: min, similarity: calibrate(min, calibration) };
}

function showKept(frames: KeptFrame[]) {
  const box = $("kept");
  box.replaceChildren(
    ...frames.map((f) => {
      const img = document.createElement("img");
      img.src = f.canvas.toDataURL("image/jpeg", 0.7);
      img.title = `score ${f.assessment.score.toFixed(2)}`;
      return img;
    }),
  );
}

function captured(p: Prepared) {
  setState("captured");
  showKept(p.frames);
  instruct("Got it");
  const ag = p.agreement;
  $("agreement").textContent = ag
    ? `${p.frames.length} frames kept; lowest pairwise cosine ${ag.cosine.toFixed(3)} (similarity ${ag.similarity.toFixed(3)}, needs ≥ ${AGREEMENT_MIN})`
    : `${p.frames.length} frames kept`;
  $<HTMLButtonElement>("register").disabled = p.frames.length < 2;
}

async function register() {
  const p = page.prepared;
  if (!p) return;
  if (!navigator.onLine) return enqueue("register", p);
  busy(true);
  // made before the first try, so that a try whose answer is lost can be queued and repeated under the same id
  const requestId = crypto.randomUUID();
  try {
    const res = await registerPet(svc, p.jpegs, p.vectors, "capture-app", requestId);
    page.lastResponse = res;
    if (!res.success) {
      $("result").dataset.verdict = "";
      $("result").textContent = `Not registered: ${res.errorMessage}`;
      return;
    }
    page.petDid = res.petDid;
    $<HTMLInputElement>("pet-did").value = res.petDid;
    const agree = res.clientAgreement;
    $("result").textContent =
      `Registered ${res.petDid} (model ${res.modelVersion}; photos agree ≥ ${res.minPairSimilarity.toFixed(3)}${agree !== undefined ? `; device vs server cosine ${agree.toFixed(4)}` : ""})`;
    setState("registered");
    $<HTMLButtonElement>("verify").disabled = false;
    $<HTMLButtonElement>("identify").disabled = false;
  } catch (e) {
    if (transient(e)) return enqueue("register", p, requestId);
    $("result").textContent = `Error: ${(e as Error).message}`;
  } finally {
    busy(false);
  }
}

async function verify(p: Prepared) {
  const petDid = $<HTMLInputElement>("pet-did").value.trim();
  if (!navigator.onLine) return enqueue("verify", p);
  busy(true);
  try {
    const res = await verifyPet(svc, petDid, p.jpegs[0], p.vectors?.[0], "capture-app");
    page.lastResponse = res;
    showKept(p.frames);
    const r = $("result");
    if (!res.success) {
      r.dataset.verdict = "";
      r.textContent = `Not verified: ${res.errorMessage}`;
      return;
    }
    const verdict = verdictName(res.verdict);
    const agree = res.clientAgreement;
    r.dataset.verdict = verdict;
    r.textContent = `${verdict}: similarity ${res.similarity.toFixed(3)}, cosine ${(res.cosineSimilarity * 2 - 1).toFixed(3)}${agree !== undefined ? `; device vs server cosine ${agree.toFixed(4)}` : ""}`;
    instruct(verdict === "SAME" ? "Same dog" : verdict === "REVIEW" ? "Needs review" : "Different dog");
    setState("verified");
  } finally {
    busy(false);
  }
}

async function identify() {
  const p = page.prepared;
  if (!p) return;
  busy(true);
  try {
    const res = await identifyPet(svc, p.jpegs[0], p.vectors?.[0]);
    page.lastResponse = res;
    const list = $("matches");
    const r = $("result");
    r.dataset.verdict = "";
    // A refusal carries no matches: saying so, rather than showing an empty
    // list, is the difference between "no such dog" and "not searched".
    if (!res.success) {
      list.replaceChildren();
      r.textContent = `Not identified: ${res.errorMessage}`;
      return;
    }
    r.textContent = res.matches.length ? `${res.matches.length} candidate(s)` : "No registered dog matches";
    list.replaceChildren(
      ...res.matches.map((m) => {
        const li = document.createElement("li");
        li.textContent = `${m.petDid}: ${verdictName(m.verdict)} (similarity ${m.similarity.toFixed(3)})`;
        return li;
      }),
    );
  } catch (e) {
    $("matches").replaceChildren();
    $("result").textContent = `Error: ${(e as Error).message}`;
  } finally {
    busy(false);
  }
}

async function fromFiles(files: File[], mode: "register" | "verify") {
  capturing?.abort();
  const { kept, rejected } = await assessFiles(files, {
    keep: mode === "register" ? DEFAULT_CAPTURE.keep : 1,
    analysisWidth: DEFAULT_CAPTURE.analysisWidth,
  });
  if (rejected.length) instruct(`${rejected.length} photo(s) refused: ${rejected.map((r) => r.instruction ?? "unusable").join(", ")}`);
  if (!kept.length) return;
  const prepared = await prepare(kept);
  if (mode === "verify") return verify(prepared);
  if (prepared.agreement && prepared.agreement.similarity < AGREEMENT_MIN) return instruct("Photos disagree: pick photos of one nose");
  captured(prepared);
}

/** Errors after which the same request may well get through later: no network, no answer, server unavailable. */
const TRANSIENT = new Set([Code.Unavailable, Code.Unknown, Code.DeadlineExceeded, Code.Aborted, Code.ResourceExhausted]);
function transient(e: unknown): boolean {
  return !(e instanceof ConnectError) || TRANSIENT.has(e.code);
}

/** Keeps a capture for later: its JPEGs, the page's embeddings of them and the frames' quality scores. */
async function enqueue(kind: QueuedCapture["kind"], p: Prepared, id?: string) {
  const c = newCapture(kind, {
    jpegs: p.jpegs,
    vectors: p.vectors ?? [],
    scores: p.frames.map((f) => f.assessment.score),
    petDid: kind === "verify" ? $<HTMLInputElement>("pet-did").value.trim() : undefined,
  });
  if (id) c.id = id;
  try {
    await putCapture(c);
  } catch (e) {
    $("result").textContent = `Could not keep the capture for later: ${(e as Error).message}`;
    return;
  }
  $("result").dataset.verdict = "";
  $("result").textContent =
    `${kind === "register" ? "Registration" : "Verification"} saved on this device: it will be sent when the network returns`;
  setState("queued");
  await showQueue();
  if (navigator.onLine) void flush();
}

/** One queued capture sent to the server, with its own id as the registration's request_id. */
async function sendQueued(c: QueuedCapture): Promise<Outcome> {
  if (!navigator.onLine) return { sent: false, message: "offline" };
  try {
    if (c.kind === "register") {
      const res = await registerPet(svc, c.jpegs, c.vectors.length ? c.vectors : undefined, "capture-app", c.id);
      if (!res.success)
        return res.retryable ? { sent: false, message: res.errorMessage } : { sent: true, ok: false, message: res.errorMessage };
      if (!$<HTMLInputElement>("pet-did").value) $<HTMLInputElement>("pet-did").value = res.petDid;
      $<HTMLButtonElement>("verify").disabled = false;
      $<HTMLButtonElement>("identify").disabled = false;
      return { sent: true, ok: true, message: res.petDid };
    }
    const res = await verifyPet(svc, c.petDid ?? "", c.jpegs[0], c.vectors[0], "capture-app");
    if (!res.success)
      return res.retryable ? { sent: false, message: res.errorMessage } : { sent: true, ok: false, message: res.errorMessage };
    return { sent: true, ok: true, message: `${verdictName(res.verdict)}, similarity ${res.similarity.toFixed(3)}` };
  } catch (e) {
    const message = e instanceof ConnectError ? e.rawMessage || Code[e.code] : String((e as Error)?.message ?? e);
    return transient(e) ? { sent: false, message } : { sent: true, ok: false, message };
  }
}

function describeCapture(c: QueuedCapture): string {
  const what = c.kind === "register" ? `Registration, ${c.jpegs.length} photos` : `Verification of ${c.petDid || "(no pet DID)"}`;
  const scores = c.scores.length ? `, quality ${Math.min(...c.scores).toFixed(2)}–${Math.max(...c.scores).toFixed(2)}` : "";
  const device = c.vectors.length ? ", embedded on this device" : "";
  const state =
    c.state === "done"
      ? `done: ${c.result}`
      : c.state === "failed"
        ? `failed: ${c.message}`
        : c.state === "waiting" && c.message
          ? `waiting (last try: ${c.message})`
          : c.state;
  return `${what}${scores}${device}: ${state}`;
}

async function showQueue() {
  const all = await listCaptures().catch(() => [] as QueuedCapture[]);
  page.queue = all;
  $("queue").hidden = all.length === 0;
  $("queue-list").replaceChildren(
    ...all.map((c) => {
      const li = document.createElement("li");
      li.dataset.state = c.state;
      li.dataset.id = c.id;
      li.textContent = describeCapture(c);
      return li;
    }),
  );
}

let flushing: Promise<void> | undefined;
let again = false;
let retryTimer: ReturnType<typeof setTimeout> | undefined;
let backoffMs = 2000;

/** Sends what is queued; while the network is up but a try fails, tries again later (2 s, doubling to 1 min). */
function flush(): Promise<void> {
  if (flushing) {
    again = true;
    return flushing;
  }
  clearTimeout(retryTimer);
  flushing = (async () => {
    let clear = true;
    do {
      again = false;
      clear = await flushQueue(sendQueued, () => void showQueue()).catch(() => false);
    } while (again);
    await showQueue();
    if (clear) backoffMs = 2000;
    else if (navigator.onLine) {
      retryTimer = setTimeout(() => void flush(), backoffMs);
      backoffMs = Math.min(60_000, backoffMs * 2);
    }
  })().finally(() => (flushing = undefined));
  return flushing;
}

/** The service worker that keeps the app shell and the ONNX runtime for offline use. */
async function registerServiceWorker(): Promise<ServiceWorkerRegistration | undefined> {
  if (!("serviceWorker" in navigator)) return undefined;
  try {
    await navigator.serviceWorker.register("./sw.js", { scope: "./" });
    return await navigator.serviceWorker.ready;
  } catch {
    return undefined; // a development server has no sw.js: the page works online alone
  }
}

/** What the user is told when the camera cannot be used; the photo pickers below work either way. */
export function cameraProblem(e: unknown): string {
  const name = (e as Error)?.name;
  if (name === "NotAllowedError" || name === "SecurityError")
    return "Camera access was refused. Pick photos of the nose below, or allow the camera in the browser's site settings and reload.";
  if (name === "NotFoundError" || name === "OverconstrainedError" || (e as Error)?.message === "no camera API")
    return "No camera found. Pick photos of the nose below.";
  if (name === "NotReadableError")
    return "The camera is in use by another app. Pick photos of the nose below, or close that app and reload.";
  return `The camera could not be started (${(e as Error)?.message ?? e}). Pick photos of the nose below.`;
}

async function main() {
  setState("searching");
  page.serviceWorker = registerServiceWorker();
  page.ready = startModel();
  window.addEventListener("online", () => {
    backoffMs = 2000;
    void flush();
  });
  window.addEventListener("offline", () => void showQueue());
  void showQueue().then(() => (navigator.onLine ? flush() : undefined));
  $("register").addEventListener("click", () => void register());
  $("verify").addEventListener("click", () => void capture("verify").catch(() => undefined));
  $("identify").addEventListener("click", () => void identify());
  $("retake").addEventListener("click", () => void capture("register").catch(() => undefined));
  $<HTMLInputElement>("register-files").addEventListener(
    "change",
    (e) => void fromFiles(Array.from((e.target as HTMLInputElement).files ?? []), "register"),
  );
  $<HTMLInputElement>("verify-file").addEventListener(
    "change",
    (e) => void fromFiles(Array.from((e.target as HTMLInputElement).files ?? []), "verify"),
  );
  if (params.get("camera") === "0") {
    instruct("Pick photos of the nose");
    app.dataset.camera = "none";
    return;
  }
  try {
    await openCamera(video);
    app.dataset.camera = "live";
    status(`camera ${video.videoWidth}x${video.videoHeight}`);
  } catch (e) {
    app.dataset.camera = "none";
    status(cameraProblem(e));
    instruct("Pick photos of the nose");
    return;
  }
  void capture("register").catch(() => undefined);
}

void main();
