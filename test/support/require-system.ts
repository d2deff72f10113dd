/**
 * The one way a test says it needs something from the system (Pillow,
 * PostgreSQL, Chromium...). On a developer's machine a missing dependency
 * skips the test with the reason; under CI (`CI=true` or `CI=1`, see strictCI; .ci/run sets it)
 * it fails instead, so a broken install can never pass as a green run of
 * fewer tests.
 *
 * `missing` is why the dependency is unavailable (falsy when it is there);
 * `install` is the step that provides it, named in both messages.
 * Returns what node:test's `skip` option takes: false, or the reason.
 */
/**
 * Whether this is a CI run, where nothing may skip: CI set to anything but
 * empty, "0" or "false" (CI=true, CI=1, CI=yes all count; CI providers set
 * "true", some people "1").
 */
export function strictCI(env: NodeJS.ProcessEnv = process.env): boolean {
  const v = (env.CI ?? "").trim().toLowerCase();
  return v !== "" && v !== "0" && v !== "false";
}

export function requireSystem(what: string, missing: string | false | undefined | null, install: string): string | false {
  if (!missing) return false;
  const reason = `${what} is not available (${missing}); install it with: ${install}`;
  if (strictCI()) throw new Error(`CI=${process.env.CI} and a test dependency is missing: ${reason}`);
  return reason;
}

/** The install steps of the system dependencies tests use, as .ci/run performs them. */
export const INSTALL = {
  postgres: "bash scripts/install-pgvector.sh (as root: Debian's postgresql-15, pgvector built from source)",
  python:
    "bash scripts/install-train-deps.sh (Debian's python3-pil, python3-numpy, python3-torch, python3-onnx, python3-opencv, python3-grpcio)",
  chromium: "apt-get install --no-install-recommends chromium",
  jpegAddon:
    "apt-get install --no-install-recommends gcc libc6-dev libjpeg62-turbo-dev, then npm test (its pretest builds dist/native/jpeg-decode.node)",
  iproute: "run the tests as root (CAP_NET_ADMIN) with iproute2 (apt-get install --no-install-recommends iproute2)",
} as const;
