import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { formatFigures } from "../loadtest/figures.js";
import { runScenario } from "../loadtest/scenario.js";
import { MIXED } from "../loadtest/workload.js";
import { postgresUnavailable } from "./support/postgres.js";
import { INSTALL, requireSystem } from "./support/require-system.js";

/**
 * `npm run loadtest` in small: 200 mixed calls (extract, register, a second
 * registration of some dogs, verify, identify, transfer) from 16 gRPC
 * clients against one server process on an S3-protocol server and
 * PostgreSQL, the object store stopped and started again midway. Speed is
 * printed, never asserted.
 */
describe(
  "load on one server with the object store restarted midway",
  { skip: requireSystem("PostgreSQL with pgvector", postgresUnavailable(), INSTALL.postgres), timeout: 240_000 },
  () => {
    test("200 mixed calls from 16 clients: every failure is in-band retryable (unavailability only) and retried to success, no unexplained server warning, every pet readable, none twice", async (t) => {
      const report = await runScenario({
        calls: 200,
        concurrency: 16,
        replicas: 1,
        mix: MIXED,
        disrupt: "object-store",
        log: (l) => t.diagnostic(l),
      });
      for (const line of formatFigures(report.figures).split("\n")) t.diagnostic(line);
      t.diagnostic(`peak RSS ${report.peakRssMiB[0]} MiB; seconds ${JSON.stringify(report.seconds)}`);

      assert.deepEqual(report.failures, [], "no call may fail for good, answer wrongly or leave the registry inconsistent");
      assert.equal(report.figures.calls, 200);
      // The outage has to hit calls in flight, or the test proves nothing about retries.
      assert.ok(
        (report.figures.retries.byReason["in-band STORAGE_CONNECTION_ERROR"] ?? 0) > 0,
        `the restart met no call: ${JSON.stringify(report.figures.retries)}`,
      );
      // One server: no transport error; and only unavailability is retried, never a server fault (INTERNAL, INFERENCE).
      for (const reason of Object.keys(report.figures.retries.byReason))
        assert.match(reason, /^in-band (STORAGE_CONNECTION_ERROR|SERVICE_UNAVAILABLE|MODEL_NOT_LOADED)$/);
      assert.deepEqual(report.unexpectedLogLines, [], "the server logged a warning or error the outage does not explain");

      const r = report.registry;
      assert.ok(r.pets > 20, `${r.pets} pets`);
      assert.equal(r.pets, r.dogs - r.lookalikes.length, `one pet per dog; look-alikes ${JSON.stringify(r.lookalikes)}`);
      assert.ok(r.duplicateAnswers > 0, "some dog was registered twice and answered as a duplicate");
      assert.equal(r.objectsPresent, r.pets);
      assert.equal(r.verified, r.pets);
      assert.equal(r.identified, r.pets);
    });
  },
);
