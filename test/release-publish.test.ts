import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { parsePointer, POINTER_KEY, PointerError, releaseKeys } from "../server/learn/model-release.js";
import { HISTORY_LENGTH, historyOf, publishRelease, readPointer, rollbackRelease } from "../server/learn/release-publish.js";
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

const modelKey = (v: string) => releaseKeys(v).model_key;
const cardKey = (v: string) => releaseKeys(v).card_key;
const releaseRef = releaseKeys;

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
  assert.equal(historyOf(p).length, HISTORY_LENGTH);
  assert.equal(historyOf(p)[0].version, `v${HISTORY_LENGTH + 1}`);
  const minimal = parsePointer(
    Buffer.from(JSON.stringify({ ...releaseRef("b"), promoted_at: "2026-12-01T00:00:00Z", previous: releaseRef("a") })),
  );
  assert.ok(!(minimal instanceof PointerError));
  assert.deepEqual(historyOf(minimal), [releaseRef("a")]);
  assert.ok(parsePointer(Buffer.from(JSON.stringify({ version: "x" }))) instanceof PointerError);
});
