import { createHash } from "node:crypto";
import { copyFile, mkdir, rm } from "node:fs/promises";
import path from "node:path";
import type { Manifest } from "../tools/export-writer.js";

/**
 * Splits an export into training and held-out dogs, by dog: a dog's photos
 * are all on one side (a held-out dog's enrolment photos only). The order is a hash of the seed and the pet's DID, so
 * the split is the same on every rerun and a dog keeps its side as the
 * registry grows (unless the cap moves it).
 */

export interface SplitOptions {
  seed: number;
  /** Share of the dogs held out. */
  holdoutFrac: number;
  /** At most this many held-out dogs. */
  holdoutMax: number;
}

export interface SplitResult {
  train: { dogs: number; photos: number };
  heldout: { dogs: number; photos: number };
  heldoutPets: string[];
}

export const rankOf = (seed: number, petDid: string) => createHash("sha256").update(`${seed}\0${petDid}`).digest("hex");

export function chooseHeldout(pets: string[], o: SplitOptions): Set<string> {
  const n = Math.min(o.holdoutMax, Math.max(2, Math.round(pets.length * o.holdoutFrac)));
  const ranked = [...pets].sort((a, b) => (rankOf(o.seed, a) < rankOf(o.seed, b) ? -1 : 1));
  return new Set(ranked.slice(0, n));
}

/** Copies the export's per-dog folders into `<out>/train` and `<out>/heldout`. */
export async function splitExport(exportDir: string, manifest: Manifest, out: string, o: SplitOptions): Promise<SplitResult> {
  if (manifest.pets.length < 4) {
    throw new Error(`${manifest.pets.length} consenting pet(s) with enough photos: the loop needs at least 4 (2 held out, 2 to train on)`);
  }
  const held = chooseHeldout(
    manifest.pets.map((p) => p.petDid),
    o,
  );
  await rm(out, { recursive: true, force: true });
  const res: SplitResult = { train: { dogs: 0, photos: 0 }, heldout: { dogs: 0, photos: 0 }, heldoutPets: [] };
  for (const pet of manifest.pets) {
    const side = held.has(pet.petDid) ? "heldout" : "train";
    const dir = path.join(out, side, pet.folder);
    await mkdir(dir, { recursive: true });
    // Verification shots were kept because the running model answered SAME: on a held-out dog they would
    // favour it, so they are trained on only.
    const photos = side === "heldout" ? pet.photos.filter((ph) => ph.source === "enrolment") : pet.photos;
    for (const ph of photos) await copyFile(path.join(exportDir, pet.folder, ph.file), path.join(dir, ph.file));
    res[side].dogs++;
    res[side].photos += photos.length;
    if (side === "heldout") res.heldoutPets.push(pet.petDid);
  }
  return res;
}
