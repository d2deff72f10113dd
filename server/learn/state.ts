import { existsSync, readFileSync } from "node:fs";
import { rename, writeFile } from "node:fs/promises";
import path from "node:path";

/**
 * The work folder's state.json: which stages of a run are done, with what
 * they found. A rerun with the same work folder continues after the last
 * completed stage; `--fresh` starts over.
 */

export const STAGES = ["running", "export", "split", "renders", "train", "evaluate", "report", "promote"] as const;
export type StageName = (typeof STAGES)[number];

export interface StageRecord {
  done: true;
  seconds: number;
  finishedAt: string;
  result: Record<string, unknown>;
}

export interface LearnState {
  format: "nosepaw-learn/1";
  version: string;
  startedAt: string;
  budgetMinutes: number;
  stages: Partial<Record<StageName, StageRecord>>;
}

export const statePath = (work: string) => path.join(work, "state.json");

export function loadState(work: string): LearnState | undefined {
  const p = statePath(work);
  if (!existsSync(p)) return undefined;
  const s = JSON.parse(readFileSync(p, "utf8")) as LearnState;
  if (s.format !== "nosepaw-learn/1") throw new Error(`${p} is not a registry:learn state file`);
  return s;
}

/** Written beside and renamed into place: a run killed mid-write leaves the previous state. */
export async function saveState(work: string, state: LearnState): Promise<void> {
  const tmp = statePath(work) + ".tmp";
  await writeFile(tmp, JSON.stringify(state, null, 2) + "\n");
  await rename(tmp, statePath(work));
}

/** Seconds the completed stages took, over every resumption. */
export const spentSeconds = (state: LearnState) => Object.values(state.stages).reduce((s, r) => s + (r?.seconds ?? 0), 0);
