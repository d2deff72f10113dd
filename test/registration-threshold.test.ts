import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { calibrate, cosine } from "../shared/similarity.js";
import { gatewayClient, type GatewayClient } from "./support/grpc-client.js";
import { blend } from "./support/images.js";
import { nosePhotos } from "./support/nose-photos.js";
import { makeTestModel, startServer, type RunningServer } from "./support/server.js";

/**
 * The registration pair threshold comes from the running model's card
 * (`registration.pair_threshold`, written by registry:learn), else 0.70. The
 * pattern test model scores blends of two synthetic noses between their two
 * scores, so a pair can be made to score in a chosen band; geometry is off so
 * the similarity rule alone decides.
 */
const dir = mkdtempSync(path.join(tmpdir(), "nosepaw-pair-threshold-"));
const MODEL_PATH = makeTestModel(path.join(dir, "pattern.onnx"), { kind: "pattern", card: true });
const baseCard = JSON.parse(readFileSync(MODEL_PATH.replace(/\.onnx$/, ".json"), "utf8"));
const bytes = (b: Buffer) => ({ image_data: b, image_format: "jpeg" });

/** A copy of the model's card with `registration` set (as registry:learn writes it). */
function cardWith(name: string, registration: Record<string, unknown>): string {
  const file = path.join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify({ ...baseCard, registration: { rule: "test", bound: 0.01, ...registration } }));
  return file;
}

interface Server {
  server: RunningServer;
  client: GatewayClient;
}

async function serve(env: Record<string, string>): Promise<Server> {
  const server = await startServer({ MODEL_PATH, GEOMETRY: "off", DATA_DIR: mkdtempSync(path.join(dir, "data-")), ...env });
  return { server, client: gatewayClient(server.address) };
}

describe("registration pair threshold from the model card", () => {
  const running: Server[] = [];
  let byDefault: Server;
  let low: Server;
  let high: Server;
  /** Two photos scoring in [0.55, 0.65) and two in [0.74, 0.82). */
  let pairLow: Buffer[];
  let pairMid: Buffer[];
  let lowScore: number;
  let midScore: number;

  before(async () => {
    [byDefault, low, high] = await Promise.all([
      serve({}),
      serve({ MODEL_CARD_PATH: cardWith("pair-050", { pair_threshold: 0.5 }) }),
      serve({ MODEL_CARD_PATH: cardWith("pair-085", { pair_threshold: 0.85 }) }),
    ]);
    running.push(byDefault, low, high);
    const photo = nosePhotos(2);
    const embed = async (img: Buffer): Promise<number[]> => {
      const r = await byDefault.client.call("ExtractNoseVector", bytes(img));
      assert.equal(r.success, true, r.error_message);
      return r.vector;
    };
    const base = photo(0, 0);
    const vBase = await embed(base);
    const sim = async (img: Buffer) => calibrate(cosine(vBase, await embed(img)), baseCard.calibration);
    /** Bisection on the blend weight of photo 0 into a different dog's photo, to a score in [lo, hi). */
    const pairScoring = async (lo: number, hi: number): Promise<[Buffer[], number]> => {
      let [wLo, wHi] = [0, 1];
      for (let i = 0; i < 24; i++) {
        const w = (wLo + wHi) / 2;
        const img = await blend(base, photo(1, 0), w);
        const s = await sim(img);
        if (s >= lo && s < hi) return [[base, img], s];
        if (s < lo) wLo = w;
        else wHi = w;
      }
      throw new Error(`no blend scores in [${lo}, ${hi})`);
    };
    [pairLow, lowScore] = await pairScoring(0.55, 0.65);
    [pairMid, midScore] = await pairScoring(0.74, 0.82);
  });
  after(async () => {
    for (const s of running) {
      s.client.close();
      await s.server.stop();
    }
  });

  const register = (s: Server, pair: Buffer[]) => s.client.call("RegisterPet", { photos: pair.map(bytes) });
  const near = (got: number, want: number) => assert.ok(Math.abs(got - want) < 1e-4, `${got} vs ${want}`);

  test("the model-loaded log names the threshold each server applies", () => {
    const applied = (s: Server) => s.server.logs.find((l) => l.msg === "model loaded")?.registerPairThreshold;
    assert.equal(applied(byDefault), 0.7);
    assert.equal(applied(low), 0.5);
    assert.equal(applied(high), 0.85);
  });

  test("a pair at 0.55..0.65: refused at the default 0.70, registered with a card's 0.5", async () => {
    const refused = await register(byDefault, pairLow);
    assert.equal(refused.success, false);
    assert.equal(refused.error_code, "INVALID_REQUEST");
    assert.match(refused.error_message, new RegExp(`similarity ${lowScore.toFixed(3)} < 0\\.7\\)`));

    const reg = await register(low, pairLow);
    assert.equal(reg.success, true, reg.error_message);
    near(reg.min_pair_similarity, lowScore);
  });

  test("a pair at 0.74..0.82: registered at the default 0.70, refused with a card's 0.85, whose message states 0.85", async () => {
    const reg = await register(byDefault, pairMid);
    assert.equal(reg.success, true, reg.error_message);
    near(reg.min_pair_similarity, midScore);

    const refused = await register(high, pairMid);
    assert.equal(refused.success, false);
    assert.equal(refused.error_code, "INVALID_REQUEST");
    assert.equal(refused.retryable, false);
    assert.match(
      refused.error_message,
      new RegExp(`photos 1 and 2 do not show the same nose \\(similarity ${midScore.toFixed(3)} < 0\\.85\\)`),
    );
    near(refused.min_pair_similarity, midScore);
  });

  for (const [name, value, shown] of [
    ["below 0.5", 0.2, "0.2"],
    ["not a number", "x", '"x"'],
  ] as const) {
    test(`a card whose registration.pair_threshold is ${name} (${shown}) is refused at load, with the reason`, async () => {
      const s = await serve({ MODEL_CARD_PATH: cardWith(`pair-bad-${typeof value}`, { pair_threshold: value }) });
      running.push(s);
      const h = await s.client.call("HealthCheck", { service: "NoseEmbedderService" });
      assert.equal(h.status, "NOT_SERVING");
      assert.match(h.message, /registration\.pair_threshold must be a number within \[0\.5, 0\.85\]/);
      assert.ok(h.message.includes(`got ${shown}`), h.message);
      const r = await s.client.call("RegisterPet", { photos: pairMid.map(bytes) });
      assert.equal(r.error_code, "MODEL_NOT_LOADED");
    });
  }
});
