import assert from "node:assert/strict";
import { test } from "node:test";
import { requireSystem, strictCI } from "./support/require-system.js";

test("CI=true, CI=1 and CI=yes are all CI: a missing dependency fails instead of skipping", () => {
  for (const CI of ["true", "1", "yes", "TRUE"]) assert.equal(strictCI({ CI }), true, `CI=${CI}`);
  for (const CI of [undefined, "", "0", "false"]) assert.equal(strictCI({ CI }), false, `CI=${CI}`);

  const before = process.env.CI;
  try {
    process.env.CI = "1";
    assert.throws(
      () => requireSystem("a thing", "not installed", "apt-get install thing"),
      /CI=1 and a test dependency is missing: a thing is not available/,
    );
    process.env.CI = "";
    assert.match(String(requireSystem("a thing", "not installed", "apt-get install thing")), /install it with: apt-get install thing/);
    assert.equal(requireSystem("a thing", false, "apt-get install thing"), false);
  } finally {
    if (before === undefined) delete process.env.CI;
    else process.env.CI = before;
  }
});
