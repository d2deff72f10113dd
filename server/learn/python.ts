import { spawn } from "node:child_process";
import { ROOT } from "../config.js";

/** Debian's interpreter, where torch and the model tooling are installed (as the model:* scripts use). */
export const PYTHON = process.env.NOSEPAW_PYTHON ?? "/usr/bin/python3";

/**
 * Runs one of the model tools under models/train/ from the repository root,
 * passing each output line to `line`; rejects with the last lines when it
 * exits non-zero.
 */
export function runPython(args: string[], line: (l: string) => void): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, args, { cwd: ROOT, env: { ...process.env, PYTHONWARNINGS: "ignore" }, stdio: ["ignore", "pipe", "pipe"] });
    const tail: string[] = [];
    const all: string[] = [];
    const take = (buf: { rest: string }) => (chunk: Buffer) => {
      const parts = (buf.rest + chunk.toString("utf8")).split("\n");
      buf.rest = parts.pop() ?? "";
      for (const p of parts) {
        all.push(p);
        tail.push(p);
        if (tail.length > 40) tail.shift();
        line(p);
      }
    };
    const o = { rest: "" };
    const e = { rest: "" };
    child.stdout.on("data", take(o));
    child.stderr.on("data", take(e));
    child.on("error", reject);
    child.on("close", (code) => {
      for (const r of [o.rest, e.rest]) if (r) all.push(r);
      if (code === 0) resolve(all);
      else reject(new Error(`${args[0]} exited ${code}:\n${tail.join("\n")}`));
    });
  });
}
