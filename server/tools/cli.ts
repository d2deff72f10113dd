import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

/** Where a tool writes, a line at a time: its result on `out`, everything else on `err`. */
export interface Io {
  out: (line: string) => void;
  err: (line: string) => void;
}

/** The process's stdout and stderr. */
export const stdio: Io = { out: (l) => process.stdout.write(l + "\n"), err: (l) => process.stderr.write(l + "\n") };

/** The exit codes every tool uses: done, a failure of what it uses (model, database, store, output), usage or configuration. */
export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

/** A command line the tool cannot take (exit 2 with the usage line); an empty message asks for the usage only. */
export class UsageError extends Error {}

export interface ArgSpec {
  options: Record<string, { type: "string" | "boolean"; short?: string }>;
  /** The message for an argument the tool does not know (`arg` as given, `--name=value` included). */
  unknown(arg: string): string;
  /** The message for a string option given last, without its value. */
  missingValue(option: string): string;
}

export interface Args {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
}

/**
 * node:util parseArgs over the tool's options, failures thrown as UsageError
 * in the tool's own words: an unknown option, `--` or a boolean given a value
 * is `unknown`, a string option without its value `missingValue`. A repeated
 * option keeps its last value.
 */
export function readArgs(argv: string[], spec: ArgSpec): Args {
  const { tokens } = parseArgs({ args: argv, options: spec.options, strict: false, allowPositionals: true, tokens: true });
  const values: Args["values"] = {};
  const positionals: string[] = [];
  for (const t of tokens) {
    if (t.kind === "positional") {
      positionals.push(t.value);
      continue;
    }
    if (t.kind === "option-terminator") throw new UsageError(spec.unknown("--"));
    const given = t.inlineValue ? `${t.rawName}=${t.value}` : t.rawName;
    const option = Object.hasOwn(spec.options, t.name) ? spec.options[t.name] : undefined;
    if (!option || (option.type === "boolean" && t.inlineValue)) throw new UsageError(spec.unknown(given));
    if (option.type === "string" && t.value === undefined) throw new UsageError(spec.missingValue(t.rawName));
    values[t.name] = option.type === "string" ? t.value : true;
  }
  return { values, positionals };
}

/**
 * Runs the tool's `main` when its module is the process's entry point, then
 * exits explicitly: an HTTP/2 session or an S3 client's keep-alive sockets
 * would hold the process open a while. A throw is printed and exits 1.
 */
export function runIfEntryPoint(moduleUrl: string, name: string, main: () => Promise<number>): void {
  if (!process.argv[1] || path.resolve(process.argv[1]) !== fileURLToPath(moduleUrl)) return;
  main().then(
    (code) => process.exit(code),
    (e) => {
      process.stderr.write(`${name}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exit(EXIT_FAILED);
    },
  );
}
