import { execFile } from "node:child_process";
import path from "node:path";
import { ROOT } from "./server.js";

export interface CommandRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** A command in its own process from the project root, with the test's environment plus `env`; resolves with its exit code, never rejects. */
export function runCommand(cmd: string, args: string[], env: Record<string, string> = {}, timeoutMs = 600_000): Promise<CommandRun> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd: ROOT, env: { ...process.env, ...env }, timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** A server tool (server/tools/<file>) as an operator runs it: its own process, the server's environment. */
export function runTool(file: string, args: string[], env: Record<string, string> = {}, timeoutMs = 120_000): Promise<CommandRun> {
  return runCommand(process.execPath, ["--import", "tsx", path.join(ROOT, "server/tools", file), ...args], env, timeoutMs);
}
