import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { formatFigures } from "../loadtest/figures.js";
import { runScenario } from "../loadtest/scenario.js";
import { REGISTER_VERIFY } from "../loadtest/workload.js";
import { postgresUnavailable } from "./support/postgres.js";
import { INSTALL, requireSystem } from "./support/require-system.js";

/**
 * Three server processes on three ports share one PostgreSQL and one
 * S3-protocol server. Registrations and verifications are spread round robin
 * over them by a client that, like a load balancer, sends a call that failed
 * at the transport level to the next replica. One replica is SIGKILLed midway
 * and started again on its port. Speed is printed, never asserted.
 */
describe(
  "scale-out: three replicas, one killed midway",
  { skip: requireSystem("PostgreSQL with pgvector", postgresUnavailable(), INSTALL.postgres), timeout: 420_000 },
  () => {
    test("1,000 registrations and verifications: calls to the dead replica go elsewhere, no pet lost or duplicated, any replica identifies pets registered through any other", async (t) => {
      const report = await runScenario({
        calls: 1000,
        concurrency: 16,
        replicas: 3,
        mix: REGISTER_VERIFY,
        disrupt: "kill-replica",
        log: (l) => t.diagnostic(l),
      });
      for (const line of formatFigures(report.figures).split("\n")) t.diagnostic(line);
      t.diagnostic(
        `answered by replica ${report.answeredBy.join(", ")}; disruption ${JSON.stringify(report.disruption)}; seconds ${JSON.stringify(report.seconds)}`,
      );

      assert.deepEqual(report.failures, [], "no call may fail for good, answer wrongly or leave the registry inconsistent");
      assert.equal(report.figures.calls, 1000);
      assert.ok(
        (report.figures.retries.byReason.transport ?? 0) > 0,
        `no call met the dead replica: ${JSON.stringify(report.figures.retries)}`,
      );
      for (const reason of Object.keys(report.figures.retries.byReason)) {
        assert.match(reason, /^(transport|in-band (STORAGE_CONNECTION_ERROR|SERVICE_UNAVAILABLE|MODEL_NOT_LOADED))$/);
      }
      assert.ok(
        report.answeredBy.every((n) => n > 0),
        `every replica answered calls: ${report.answeredBy}`,
      );

      assert.deepEqual(report.unexpectedLogLines, [], "a replica logged a warning or error the kill does not explain");

      const r = report.registry;
      // 1,000 calls of this mix register 128 dogs: most of them must become pets.
      assert.ok(r.pets > 100, `${r.pets} pets of ${r.dogs} dogs`);
      assert.equal(r.pets, r.dogs - r.lookalikes.length, `one pet per dog; look-alikes ${JSON.stringify(r.lookalikes)}`);
      assert.equal(r.objectsPresent, r.pets);
      // Each pet is read back on the other two replicas than the one that created it.
      assert.equal(r.verified, r.pets);
      assert.equal(r.identified, r.pets);
    });
  },
);
