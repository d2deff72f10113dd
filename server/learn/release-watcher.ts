import { randomBytes } from "node:crypto";
import { mkdir, readdir, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "../log.js";
import type { ModelHolder } from "../model/model-holder.js";
import { readModelCard } from "../model/model-card.js";
import type { ObjectStore } from "../storage/object-store.js";
import { parsePointer, POINTER_KEY, PointerError, type Pointer } from "./model-release.js";

export interface ReleaseWatcherOptions {
  /** Where releases are published: the object store, or a folder store over MODEL_RELEASES=<dir>. */
  source: ObjectStore;
  /** Names the source in logs. */
  sourceName: string;
  /** Local folder the adopted releases are downloaded to, one sub-folder per version. */
  cacheDir: string;
  pollMs: number;
  model: ModelHolder;
  log: Logger;
  /** [0, 1): the jitter of each wait. */
  random?: () => number;
}

export interface ReleaseWatcher {
  close(): void;
}

/** A release that cannot be adopted: logged, the running model stays. */
class RefusedRelease extends Error {}

/**
 * Polls the release pointer and moves this replica to the version it names
 * (a promotion or a rollback alike): downloads the model and its card into
 * `cacheDir/{version}/`, checks the card names that version (and the model's
 * size, when the card gives it), then switches through the model holder,
 * which drops no call and keeps the running model when the new one fails to
 * load. Each wait is the poll interval times 0.5 to 1.5, so replicas adopt
 * one after another and the rollout's sweep lock re-embeds once.
 *
 * A refused release is not fetched again until the pointer changes.
 */
export function startReleaseWatcher(o: ReleaseWatcherOptions): ReleaseWatcher {
  const random = o.random ?? Math.random;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let closed = false;
  /** The pointer content last refused (or unparsable), so it is reported once. */
  let refused: string | undefined;

  const running = () => {
    const s = o.model.state();
    return s.status === "ready" ? s.model.version : undefined;
  };

  const refuse = (seen: string, reason: string, version?: string) => {
    if (refused === seen) return;
    refused = seen;
    o.log.error("model release refused; the running model stays", {
      source: o.sourceName,
      version,
      reason,
      runningVersion: running(),
    });
  };

  const download = async (p: Pointer): Promise<{ modelPath: string; cardPath: string }> => {
    const [model, card] = await Promise.all([o.source.get(p.model_key), o.source.get(p.card_key)]);
    if (!model || model.length === 0) throw new RefusedRelease(`${p.model_key} is missing or empty`);
    if (!card) throw new RefusedRelease(`${p.card_key} is missing`);
    await mkdir(o.cacheDir, { recursive: true });
    const tmp = path.join(o.cacheDir, `.partial-${randomBytes(6).toString("hex")}`);
    const dir = path.join(o.cacheDir, p.version);
    try {
      await mkdir(tmp);
      await writeFile(path.join(tmp, "card.json"), card);
      let parsed;
      try {
        parsed = await readModelCard(path.join(tmp, "card.json"));
      } catch (e) {
        throw new RefusedRelease(`card: ${(e as Error).message}`);
      }
      if (parsed?.version !== p.version) {
        throw new RefusedRelease(`the card names version ${JSON.stringify(parsed?.version)}, the pointer ${JSON.stringify(p.version)}`);
      }
      const size = (parsed.raw?.export as { onnx_bytes?: unknown } | undefined)?.onnx_bytes;
      if (typeof size === "number" && size !== model.length) {
        throw new RefusedRelease(`model.onnx has ${model.length} bytes, the card says ${size} (a partial upload?)`);
      }
      await writeFile(path.join(tmp, "model.onnx"), model);
      await rm(dir, { recursive: true, force: true });
      await rename(tmp, dir);
    } finally {
      await rm(tmp, { recursive: true, force: true }).catch(() => {});
    }
    return { modelPath: path.join(dir, "model.onnx"), cardPath: path.join(dir, "card.json") };
  };

  /** Removes cached versions other than the running one and the one it replaced. */
  const prune = async (keep: Set<string | undefined>) => {
    const entries = await readdir(o.cacheDir).catch(() => [] as string[]);
    for (const name of entries) {
      if (!keep.has(name)) await rm(path.join(o.cacheDir, name), { recursive: true, force: true }).catch(() => {});
    }
  };

  const poll = async () => {
    const bytes = await o.source.get(POINTER_KEY);
    if (!bytes) return;
    const seen = Buffer.from(bytes).toString("base64");
    const p = parsePointer(bytes);
    if (p instanceof PointerError) return refuse(seen, p.message);
    const before = running();
    // Not while the first load is still running; a failed bundled model is replaced.
    if (p.version === before || o.model.state().status === "loading" || refused === seen) return;
    o.log.info("model release found", { source: o.sourceName, version: p.version, promotedAt: p.promoted_at, runningVersion: before });
    let files;
    try {
      files = await download(p);
    } catch (e) {
      if (e instanceof RefusedRelease) return refuse(seen, e.message, p.version);
      throw e;
    }
    const outcome = await o.model.switchTo({ ...files, promoted: true });
    if (outcome.result === "failed") return refuse(seen, outcome.reason, p.version);
    refused = undefined;
    o.log.info("model release adopted", { source: o.sourceName, version: p.version, previousVersion: before, promotedAt: p.promoted_at });
    await prune(new Set([p.version, before]));
  };

  const schedule = (ms: number) => {
    if (closed) return;
    timer = setTimeout(() => {
      poll()
        .catch((e) => o.log.warn("model release poll failed; will retry", { source: o.sourceName, err: e }))
        .finally(() => schedule(o.pollMs * (0.5 + random())));
    }, ms);
    timer.unref?.();
  };
  // The first look soon after start, so a new replica joins the released version quickly.
  schedule(Math.min(o.pollMs, 1000) * random());
  o.log.info("watching for model releases", { source: o.sourceName, pointer: POINTER_KEY, pollMs: o.pollMs, cacheDir: o.cacheDir });

  return {
    close() {
      closed = true;
      clearTimeout(timer);
    },
  };
}
