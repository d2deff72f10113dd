/**
 * A node:test reporter that writes one JSON object per line: which test file
 * started, each test's result with its file (failures with the whole error,
 * causes included), and what test files wrote to stderr and stdout outside
 * the test protocol. `npm test` sends it to $NOSEPAW_TEST_EVENTS (nowhere
 * when unset); scripts/ci-tests.ts reads it to tell which files failed and
 * why, to count skips, and to name the file that was running when a run was
 * stopped. Works on Node 20 and 24 (file names there are relative).
 *
 *   {"t":"file","file":"/abs/test/x.test.ts"}                 a test file began running
 *   {"t":"pass"|"fail","file","name","nesting","suite"?,"skip"?,"todo"?,"error"?,"ms"}
 *   {"t":"done","file","ok"}                                 a test file ended
 *   {"t":"stderr"|"stdout","file","msg"}                     output outside the protocol (capped per file)
 */
import path from "node:path";
import { inspect } from "node:util";

const OUTPUT_CAP = 256 * 1024;

export default async function* eventsReporter(source) {
  const abs = (f) => (typeof f === "string" ? path.resolve(f) : undefined);
  const written = new Map();
  for await (const event of source) {
    const d = event.data ?? {};
    const file = abs(d.file);
    // A file-level test is named after its file (relative on Node 24, absolute on Node 20).
    const isFile = d.nesting === 0 && typeof d.name === "string" && file !== undefined && abs(d.name) === file;
    switch (event.type) {
      case "test:dequeue":
        if (isFile) yield line({ t: "file", file });
        break;
      case "test:complete":
        if (isFile)
          yield line({
            t: "done",
            file,
            ok: d.details?.passed === true,
            ...(d.details?.passed === true ? {} : { error: text(d.details?.error) }),
          });
        break;
      case "test:pass":
      case "test:fail": {
        if (isFile) break; // reported once, by test:complete
        const out = {
          t: event.type === "test:pass" ? "pass" : "fail",
          file,
          name: d.name,
          nesting: d.nesting,
          ms: Math.round(d.details?.duration_ms ?? 0),
        };
        if (d.details?.type === "suite") out.suite = true;
        if (d.skip !== undefined && d.skip !== false) out.skip = d.skip === true ? "" : String(d.skip);
        if (d.todo !== undefined && d.todo !== false) out.todo = d.todo === true ? "" : String(d.todo);
        if (event.type === "test:fail") out.error = text(d.details?.error);
        yield line(out);
        break;
      }
      case "test:stderr":
      case "test:stdout": {
        const key = `${file}\n${event.type}`;
        const n = written.get(key) ?? 0;
        if (n >= OUTPUT_CAP) break;
        const msg = String(d.message ?? "").slice(0, OUTPUT_CAP - n);
        written.set(key, n + msg.length);
        yield line({ t: event.type === "test:stderr" ? "stderr" : "stdout", file, msg });
        break;
      }
    }
  }
}

function line(o) {
  return `${JSON.stringify(o)}\n`;
}

/** The error as a person reads it: message, stack, causes (node:test wraps the thrown error in ERR_TEST_FAILURE). */
function text(error) {
  if (error === undefined) return undefined;
  return inspect(error, { depth: 8, breakLength: 120 });
}
