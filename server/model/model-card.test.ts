import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { DEFAULT_DUPLICATE_SIMILARITY, duplicateThreshold } from "../../shared/similarity.js";
import { readModelCard } from "./model-card.js";

const dir = mkdtempSync(path.join(tmpdir(), "nosepaw-card-"));
const card = (name: string, calibration: Record<string, unknown>) => {
  const file = path.join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify({ version: name, calibration: { cosine: [-1, 0.8, 1], similarity: [0, 0.85, 1], ...calibration } }));
  return file;
};

test("calibration.duplicate_similarity is read from the card", async () => {
  const c = await readModelCard(card("with", { duplicate_similarity: 0.97 }));
  assert.equal(c?.calibration?.duplicateSimilarity, 0.97);
  assert.equal(duplicateThreshold(c?.calibration), 0.97);
});

test("a card without duplicate_similarity, or no card, refuses duplicates from 0.95", async () => {
  const c = await readModelCard(card("without", {}));
  assert.equal(c?.calibration?.duplicateSimilarity, undefined);
  assert.equal(DEFAULT_DUPLICATE_SIMILARITY, 0.95);
  assert.equal(duplicateThreshold(c?.calibration), 0.95);
  assert.equal(duplicateThreshold(undefined), 0.95);
});

test("a duplicate_similarity below SAME (0.85), above 1 or not a number is refused at load", async () => {
  for (const bad of [0.8, 1.2, "0.97", true]) {
    await assert.rejects(
      readModelCard(card(`bad-${String(bad)}`, { duplicate_similarity: bad })),
      /duplicate_similarity must be a number from 0\.85 to 1/,
    );
  }
});
