import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { ROOT } from "./server.js";

/** Synthetic nose photos rendered at test time: dog{d}_{k}.jpg, four shots of each dog from one shoot. */
export function nosePhotos(dogs: number): (dog: number, shot: number) => Buffer {
  const dir = mkdtempSync(path.join(tmpdir(), "nosepaw-noses-"));
  execFileSync("/usr/bin/python3", [path.join(ROOT, "test/support/nose_photos.py"), dir, String(dogs)], { stdio: "pipe" });
  return (dog, shot) => readFileSync(path.join(dir, `dog${dog}_${shot}.jpg`));
}
