import assert from "node:assert/strict";
import { test } from "node:test";
import { createMicroBatcher } from "./micro-batcher.js";

test("items arriving within the window form one batch, in order", async () => {
  const batches: number[][] = [];
  const call = createMicroBatcher<number, number>({
    windowMs: 20,
    maxBatch: 8,
    run: async (xs) => (batches.push(xs), xs.map((x) => x * 2)),
  });
  const out = await Promise.all([1, 2, 3].map(call));
  assert.deepEqual(out, [2, 4, 6]);
  assert.deepEqual(batches, [[1, 2, 3]]);
});

test("a full batch runs at once and the rest waits for the next run, not for the window", async () => {
  const batches: number[][] = [];
  const call = createMicroBatcher<number, number>({ windowMs: 10_000, maxBatch: 2, run: async (xs) => (batches.push(xs), xs) });
  const out = Promise.all([1, 2, 3, 4].map(call));
  // The second item filled the batch: it ran within the call, before any timer could.
  assert.deepEqual(batches, [[1, 2]]);
  // Counted in turns of the event loop, not milliseconds: the next full batch follows the run within a
  // few setImmediate turns, where waiting for the 10 s window would take a timer.
  let turns = 0;
  while (batches.length < 2 && turns < 10) {
    await new Promise<void>((r) => setImmediate(r));
    turns++;
  }
  assert.deepEqual(
    batches,
    [
      [1, 2],
      [3, 4],
    ],
    `after ${turns} turns of the event loop`,
  );
  assert.deepEqual(await out, [1, 2, 3, 4]);
});

test("a failing run rejects every item of its batch and later batches still run", async () => {
  let fail = true;
  const call = createMicroBatcher<number, number>({
    windowMs: 1,
    maxBatch: 4,
    run: async (xs) => {
      if (fail) throw new Error("boom");
      return xs;
    },
  });
  const results = await Promise.allSettled([call(1), call(2)]);
  assert.deepEqual(
    results.map((r) => r.status),
    ["rejected", "rejected"],
  );
  fail = false;
  assert.equal(await call(3), 3);
});

test("runs never overlap: a burst during a run becomes the next batch", async () => {
  let active = 0;
  let maxActive = 0;
  const batches: number[][] = [];
  const call = createMicroBatcher<number, number>({
    windowMs: 1,
    maxBatch: 16,
    run: async (xs) => {
      active++;
      maxActive = Math.max(maxActive, active);
      batches.push(xs);
      await new Promise((r) => setTimeout(r, 30));
      active--;
      return xs;
    },
  });
  const first = call(0);
  await new Promise((r) => setTimeout(r, 10));
  const rest = [1, 2, 3].map(call);
  await Promise.all([first, ...rest]);
  assert.equal(maxActive, 1);
  assert.deepEqual(batches, [[0], [1, 2, 3]]);
});
