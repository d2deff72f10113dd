// Reads a model card exactly as the service does (server/model/model-card.ts) and prints what the
// service would use: version, the cosine -> similarity knots, the duplicate threshold, the
// registration pair threshold and the verdict at a few cosines. Exits 1 when the service would refuse the card. No Python needed.
//   node --import tsx models/train/check-card.ts <card.json> [cosine ...]
import { readModelCard } from "../../server/model/model-card.js";
import { REGISTER_PAIR_THRESHOLD } from "../../server/registry/input.js";
import { calibrate, duplicateThreshold, verdictOf } from "../../shared/similarity.js";

const [file, ...rest] = process.argv.slice(2);
if (!file) {
  console.error("usage: node --import tsx models/train/check-card.ts <card.json> [cosine ...]");
  process.exit(2);
}
try {
  const card = await readModelCard(file);
  if (!card) throw new Error(`${file}: no such file`);
  if (!card.version) throw new Error(`${file}: no version (enrolled embeddings are tied to it)`);
  if (!card.calibration) throw new Error(`${file}: no calibration`);
  const c = card.calibration;
  console.log(`${file}: version ${card.version}`);
  console.log(`  knots: ${c.cosine.map((x, i) => `${x.toFixed(4)} -> ${c.similarity[i]}`).join(", ")}`);
  console.log(`  duplicate refusal from similarity ${duplicateThreshold(c)}`);
  console.log(
    `  registration: every photo pair at similarity >= ${card.registerPairThreshold ?? REGISTER_PAIR_THRESHOLD}` +
      (card.registerPairThreshold === undefined ? " (no registration.pair_threshold: the default)" : " (registration.pair_threshold)"),
  );
  const cosines = rest.length ? rest.map(Number) : [0.5, 0.7, 0.8, 0.9, 0.95, 0.99];
  for (const x of cosines) {
    const s = calibrate(x, c);
    console.log(`  cosine ${x.toFixed(3)}: similarity ${s.toFixed(4)} ${verdictOf(s)}${s >= duplicateThreshold(c) ? " duplicate" : ""}`);
  }
} catch (e) {
  console.error(`model card rejected: ${(e as Error).message}`);
  process.exit(1);
}
