import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import {
  cardKey,
  HISTORY_LENGTH,
  modelKey,
  parsePointer,
  POINTER_KEY,
  publishRelease,
  readPointer,
  releaseRef,
  rollbackRelease,
} from "../server/learn/model-release.js";
import { createFolderStore } from "../server/storage/folder-store.js";
import type { ObjectStore } from "../server/storage/object-store.js";

// The release layout both the learning loop and the replicas use: objects first, the pointer last.

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
function store(): ObjectStore {
  const d = mkdtempSync(path.join(tmpdir(), "nosepaw-release-"));
  dirs.push(d);
  return createFolderStore({ root: d });
}
const release = (version: string, model = `onnx of ${version}`) => ({
  version,
  model: Buffer.from(model),
  card: Buffer.from(JSON.stringify({ version })),
});

test("keys: one folder per version under models/nose-embedder, the pointer beside them", () => {
  assert.equal(modelKey("2026.12.06-learn-0230"), "models/nose-embedder/2026.12.06-learn-0230/model.onnx");
  assert.equal(cardKey("v1"), "models/nose-embedder/v1/card.json");
  assert.equal(POINTER_KEY, "models/nose-embedder/current.json");
  for (const bad of ["", "../x", "a/b", ".hidden", "x y"]) assert.throws(() => modelKey(bad), /not a plain name/);
});

test("the pointer is written after the objects and names them; a version is never rewritten with other bytes", async () => {
  const s = store();
  const puts: string[] = [];
  const watched: ObjectStore = { ...s, put: (k, b, t) => (puts.push(k), s.put(k, b, t)) };
  const p1 = await publishRelease(watched, release("v1"), new Date("2026-12-01T02:30:00Z"));
  assert.deepEqual(puts, [modelKey("v1"), cardKey("v1"), POINTER_KEY]);
  assert.deepEqual(p1, { ...releaseRef("v1"), promoted_at: "2026-12-01T02:30:00.000Z", previous: null, history: [] });
  assert.deepEqual(await readPointer(s), p1);
  const p2 = await publishRelease(s, release("v2"));
  assert.deepEqual(p2.previous, releaseRef("v1"));
  assert.deepEqual(p2.history, [releaseRef("v1")]);
  // The same bytes again are fine (a resumed promotion); other bytes under v2 are refused and the pointer stays.
  await publishRelease(s, release("v2"));
  await assert.rejects(publishRelease(s, release("v2", "other bytes")), /never rewritten/);
  assert.equal((await readPointer(s))!.version, "v2");
});

test("rollback walks the history back one release at a time and says what it replaced", async () => {
  const s = store();
  for (const v of ["v1", "v2", "v3"]) await publishRelease(s, release(v));
  const back = await rollbackRelease(s);
  assert.equal(back.version, "v2");
  assert.equal(back.rolled_back_from?.version, "v3");
  assert.deepEqual(back.previous, releaseRef("v1"));
  const again = await rollbackRelease(s);
  assert.equal(again.version, "v1");
  assert.equal(again.previous, null);
  await assert.rejects(rollbackRelease(s), /nothing to roll back to/);
  await assert.rejects(rollbackRelease(store()), /nothing has been promoted/);
});

test("the history is capped; a pointer without one reads as its previous", async () => {
  const s = store();
  for (let i = 0; i < HISTORY_LENGTH + 3; i++) await publishRelease(s, release(`v${i}`));
  const p = (await readPointer(s))!;
  assert.equal(p.history.length, HISTORY_LENGTH);
  assert.equal(p.history[0].version, `v${HISTORY_LENGTH + 1}`);
  const minimal = parsePointer(JSON.stringify({ ...releaseRef("b"), promoted_at: "2026-12-01T00:00:00Z", previous: releaseRef("a") }));
  assert.deepEqual(minimal.history, [releaseRef("a")]);
  assert.throws(() => parsePointer(JSON.stringify({ version: "x" })), /model_key/);
});
