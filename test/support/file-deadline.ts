/**
 * Loaded into every test file's process by `npm test` (`--import`): a test
 * file that runs longer than NOSEPAW_TEST_FILE_TIMEOUT_MS (default 15
 * minutes) is ended with a message naming it and exit code 1, so a hang
 * fails the file instead of stalling the run. Node 20's --test-timeout bounds
 * a whole file too, Node 24's does not (a timed-out test whose handles stay
 * open keeps its file's process alive, as does a top-level await that never
 * settles); this bounds both. Exit handlers run (PostgreSQL servers and
 * server processes the file started are stopped).
 *
 * The runner's own process loads this too and is left alone: only processes
 * the runner started for a file (NODE_TEST_CONTEXT set) are timed.
 */
const context = process.env.NODE_TEST_CONTEXT;
const raw = process.env.NOSEPAW_TEST_FILE_TIMEOUT_MS;
const timeoutMs = raw === undefined || raw === "" ? 15 * 60_000 : Number(raw);

if (context?.startsWith("child") && Number.isFinite(timeoutMs) && timeoutMs > 0) {
  const file = process.argv[1] ?? "(unknown file)";
  const timer = setTimeout(() => {
    process.stderr.write(
      `\nnosepaw: test file ${file} still running after ${Math.round(timeoutMs / 1000)} s (NOSEPAW_TEST_FILE_TIMEOUT_MS): ended as a failure\n`,
    );
    process.exitCode = 1;
    process.exit(1);
  }, timeoutMs);
  // Only a file still busy is ended: a finished one exits as it would anyway.
  timer.unref();
}
