import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { ROOT } from "../test/support/server.js";

/** Four shots of one dog: 0 and 1 enrol it, 2 and 3 are later captures of the same nose. */
export type NosePhotoSet = (dog: number, shot: number) => Buffer;

const RENDERER = path.join(ROOT, "test/support/nose_photos.py");
const RENDER_MODULE = path.join(ROOT, "models/train/render.py");
/**
 * Dogs are rendered in batches of this many, each batch by one process with
 * its own seed (test/support/nose_photos.py seeds dog d of a batch with
 * [seed, 9, d], so batches never repeat an identity). Batches let a larger
 * run reuse a smaller run's dogs and let two processes render at once.
 */
const BATCH = 25;
const BASE_SEED = 700_000;

const run = promisify(execFile);

/** Folder of the cache, named after the renderer's source so a changed renderer renders afresh. */
function cacheDir(): string {
  const h = createHash("sha256").update(readFileSync(RENDERER)).update(readFileSync(RENDER_MODULE)).digest("hex").slice(0, 12);
  return path.join(ROOT, ".cache", "nose-photos", h);
}

async function renderBatch(dir: string, batch: number): Promise<void> {
  const final = path.join(dir, `batch-${batch}`);
  if (existsSync(final)) return;
  // Rendered beside and renamed into place, so an interrupted run leaves no half batch.
  const partial = `${final}.partial-${process.pid}`;
  rmSync(partial, { recursive: true, force: true });
  await run("/usr/bin/python3", [RENDERER, partial, String(BATCH), "--seed", String(BASE_SEED + batch)], { maxBuffer: 1 << 20 });
  try {
    renameSync(partial, final);
  } catch (e) {
    // Another run finished the same batch first; its copy is identical.
    if (!existsSync(final)) throw e;
    rmSync(partial, { recursive: true, force: true });
  }
}

/**
 * `dogs` distinct synthetic dogs (test/support/nose_photos.py, the training
 * pipeline's renderer), rendered once into `.cache/nose-photos/` and reused by
 * every later run that needs as many or fewer. Rendering costs about a third
 * of a second per dog and core.
 */
export async function nosePhotoCache(dogs: number): Promise<{ photo: NosePhotoSet; renderedMs: number }> {
  const dir = cacheDir();
  mkdirSync(dir, { recursive: true });
  const batches = Array.from({ length: Math.ceil(dogs / BATCH) }, (_, b) => b);
  const missing = batches.filter((b) => !existsSync(path.join(dir, `batch-${b}`)));
  const t0 = performance.now();
  const parallel = Math.max(1, Math.min(os.availableParallelism(), 4));
  for (let i = 0; i < missing.length; i += parallel) {
    await Promise.all(missing.slice(i, i + parallel).map((b) => renderBatch(dir, b)));
  }
  const renderedMs = performance.now() - t0;
  const memo = new Map<string, Buffer>();
  const photo: NosePhotoSet = (dog, shot) => {
    if (!Number.isInteger(dog) || dog < 0 || dog >= dogs) throw new RangeError(`dog ${dog} outside 0..${dogs - 1}`);
    const file = path.join(dir, `batch-${Math.floor(dog / BATCH)}`, `dog${dog % BATCH}_${shot}.jpg`);
    let bytes = memo.get(file);
    if (!bytes) memo.set(file, (bytes = readFileSync(file)));
    return bytes;
  };
  return { photo, renderedMs };
}
