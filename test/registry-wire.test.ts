import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import sharp from "sharp";
import { petDidFromVector } from "../shared/did.js";
import { calibrate, cosine } from "../shared/similarity.js";
import { assertError, gatewayClient, type GatewayClient } from "./support/grpc-client.js";
import { blend } from "./support/images.js";
import { postgresUnavailable, startPostgres, type TestPostgres } from "./support/postgres.js";
import { INSTALL, requireSystem } from "./support/require-system.js";
import { startS3, type TestS3 } from "./support/s3.js";
import { startTcpProxy, type TcpProxy } from "./support/tcp-proxy.js";
import { makeTestModel, startServer, type RunningServer } from "./support/server.js";
import { nosePhotos } from "./support/nose-photos.js";
import { DEFAULT_GEOMETRY_POLICY } from "../shared/geometry/index.js";
import { remoteRegistryEnv } from "./support/registry-env.js";

/**
 * The flows are tested with verdicts known in advance, so they run on a user
 * model with a card whose scores are predictable (test/support/make_onnx.py
 * --kind pattern: re-takes of one photo score cosine > 0.95, different
 * synthetic noses < 0.75; the card refuses duplicates from similarity 0.97).
 * How well the bundled model tells dogs apart is measured by
 * `npm run model:eval`, not asserted here.
 */
const defaults: Record<string, string> = {
  MODEL_PATH: makeTestModel(path.join(mkdtempSync(path.join(tmpdir(), "nosepaw-model-")), "pattern.onnx"), { kind: "pattern", card: true }),
};
const bytes = (b: Buffer) => ({ image_data: b, image_format: "jpeg" });
const CARD_DUPLICATE_SIMILARITY = 0.97;

interface Enrolled {
  a: string;
  b: string;
  vectorA: number[];
}

/** register -> duplicate refused -> verify -> compare -> identify -> transfer, as the gateway drives them. */
async function roundTrip(client: GatewayClient, photo: (dog: number, shot: number) => Buffer): Promise<Enrolled> {
  const regA = await client.call("RegisterPet", {
    photos: [bytes(photo(0, 0)), bytes(photo(0, 1))],
    request_id: "reg-a",
    requested_by: "0xguardian1",
  });
  assert.equal(regA.success, true, regA.error_message);
  assert.match(regA.pet_did, /^did:ethr:besu:0x[0-9a-f]{40}$/);
  assert.equal(regA.pet_did, petDidFromVector(Float32Array.from(regA.vector)), "DID is keccak256 of the template");
  assert.equal(regA.vector_size, 512);
  assert.deepEqual(regA.image_keys, [`nose-print-photo/${regA.pet_did}/image_1.jpg`, `nose-print-photo/${regA.pet_did}/image_2.jpg`]);
  assert.equal(regA.vector_key, `nose-print-photo/${regA.pet_did}/vector.npy`);
  assert.ok(regA.min_pair_similarity >= 0.85);

  const again = await client.call("RegisterPet", { photos: [bytes(photo(0, 0)), bytes(photo(0, 1))], request_id: "reg-a" });
  assert.equal(again.success, true, "a retry with the same request id repeats the result");
  assert.equal(again.pet_did, regA.pet_did);

  const regB = await client.call("RegisterPet", { photos: [bytes(photo(1, 0)), bytes(photo(1, 1))], request_id: "reg-b" });
  assert.equal(regB.success, true, regB.error_message);
  assert.notEqual(regB.pet_did, regA.pet_did);

  // Both photos' best match is pet A, at or above the card's duplicate similarity.
  const dup = await client.call("RegisterPet", { photos: [bytes(photo(0, 2)), bytes(photo(0, 3))] });
  assertError(dup, "INVALID_REQUEST", false);
  assert.equal(dup.duplicate_pet_did, regA.pet_did);
  assert.ok(dup.duplicate_similarity >= CARD_DUPLICATE_SIMILARITY, String(dup.duplicate_similarity));
  assert.match(dup.error_message, new RegExp(`already registered as ${regA.pet_did} .*>= ${CARD_DUPLICATE_SIMILARITY}`));
  assert.equal(regA.review_pet_did, undefined, "a first registration has no review candidate");

  const mixed = await client.call("RegisterPet", { photos: [bytes(photo(2, 0)), bytes(photo(1, 2))] });
  assertError(mixed, "INVALID_REQUEST", false);
  assert.match(mixed.error_message, /photo/);

  const one = await client.call("RegisterPet", { photos: [bytes(photo(2, 0))] });
  assertError(one, "INVALID_REQUEST", false);

  const small = await sharp(photo(2, 1)).resize(100, 100).jpeg().toBuffer();
  const tooSmall = await client.call("RegisterPet", { photos: [bytes(photo(2, 0)), bytes(small)] });
  assertError(tooSmall, "INVALID_REQUEST", false);
  assert.match(tooSmall.error_message, /photo 2 is only 100 px/);

  const same = await client.call("VerifyPet", { pet_did: regA.pet_did, photo: bytes(photo(0, 2)), requested_by: "0xguardian1" });
  assert.equal(same.success, true, same.error_message);
  assert.equal(same.verdict, "SAME");
  assert.ok(same.similarity >= 0.85);
  assert.match(same.stored_image_key, new RegExp(`^nose-print-photo/${regA.pet_did}/verify_\\d+\\.jpg$`));

  const other = await client.call("VerifyPet", { pet_did: regA.pet_did, photo: bytes(photo(1, 2)) });
  assert.equal(other.success, true, other.error_message);
  assert.notEqual(other.verdict, "SAME");
  assert.ok(other.similarity < same.similarity);

  // The old flow: the gateway uploads the shot, then asks to compare the stored key.
  const cmp = await client.call("CompareWithStoredImage", { image_key: same.stored_image_key, pet_did: regA.pet_did });
  assert.equal(cmp.success, true, cmp.error_message);
  assert.equal(cmp.vector_size, 512);
  assert.ok(Math.abs(cmp.similarity - same.similarity) < 1e-5);
  assert.ok(cmp.cosine_similarity > 0.5 && cmp.cosine_similarity <= 1);
  assert.ok(Math.abs(cmp.euclidean_distance - Math.sqrt(Math.max(0, 2 - 2 * (2 * cmp.cosine_similarity - 1)))) < 1e-4);

  const unknown = await client.call("CompareWithStoredImage", {
    image_key: `nose-print-photo/did:ethr:besu:0x${"ab".repeat(20)}/verify_1.jpg`,
    pet_did: `did:ethr:besu:0x${"ab".repeat(20)}`,
  });
  assertError(unknown, "VECTOR_NOT_FOUND", false);
  assertError(
    await client.call("CompareWithStoredImage", { image_key: `nose-print-photo/${regA.pet_did}/../x.jpg`, pet_did: regA.pet_did }),
    "INVALID_REQUEST",
    false,
  );
  assertError(
    await client.call("CompareWithStoredImage", { image_key: `nose-print-photo/${regB.pet_did}/image_1.jpg`, pet_did: regA.pet_did }),
    "INVALID_REQUEST",
    false,
  );
  const missing = await client.call("CompareWithStoredImage", {
    image_key: `nose-print-photo/${regA.pet_did}/verify_9.jpg`,
    pet_did: regA.pet_did,
  });
  assertError(missing, "INVALID_REQUEST", false);
  assert.match(missing.error_message, /verify_9\.jpg/);

  const found = await client.call("IdentifyPet", { photo: bytes(photo(0, 3)), top_k: 2 });
  assert.equal(found.success, true, found.error_message);
  assert.equal(found.matches[0].pet_did, regA.pet_did);
  assert.equal(found.matches[0].verdict, "SAME");
  assert.ok(found.matches.length <= 2);

  const ok = await client.call("ApproveTransfer", {
    pet_did: regA.pet_did,
    photo: bytes(photo(0, 3)),
    from_guardian: "0xguardian1",
    to_guardian: "0xguardian2",
    request_id: "tr-1",
  });
  assert.equal(ok.success, true, ok.error_message);
  assert.equal(ok.approved, true);
  assert.ok(ok.approval_id.length > 0);
  assert.ok(!Number.isNaN(Date.parse(ok.approved_at)));
  const refused = await client.call("ApproveTransfer", {
    pet_did: regA.pet_did,
    photo: bytes(photo(1, 3)),
    from_guardian: "0xguardian1",
    to_guardian: "0xguardian3",
  });
  assert.equal(refused.success, true, refused.error_message);
  assert.equal(refused.approved, false);
  assert.notEqual(refused.verdict, "SAME");

  return { a: regA.pet_did, b: regB.pet_did, vectorA: regA.vector };
}

describe("registry flows through the gateway's gRPC client, embedded defaults (folder store, PGlite)", () => {
  let server: RunningServer;
  let client: GatewayClient;
  let enrolled: Enrolled | undefined;
  // A folder that does not exist yet, as ./data on a fresh clone.
  const dataDir = path.join(mkdtempSync(path.join(tmpdir(), "nosepaw-data-")), "data");

  before(async () => {
    server = await startServer({ ...defaults, DATA_DIR: dataDir });
    client = gatewayClient(server.address);
  });
  after(async () => {
    client?.close();
    await server?.stop();
  });

  test("register -> verify -> identify -> transfer; vector.npy reads with numpy.load", async () => {
    const photo = nosePhotos(3);
    await server.waitForLog((l) => l.msg === "database ready");
    enrolled = await roundTrip(client, photo);
    const { a, vectorA } = enrolled;
    const npy = path.join(dataDir, "objects", "nose-print-photo", a, "vector.npy");
    const loaded = JSON.parse(
      execFileSync("/usr/bin/python3", [
        "-c",
        "import numpy,sys,json; v=numpy.load(sys.argv[1]); print(json.dumps([str(v.dtype), list(v.shape), v.tolist()]))",
        npy,
      ]).toString(),
    );
    assert.equal(loaded[0], "float32");
    assert.deepEqual(loaded[1], [512]);
    loaded[2].forEach((x: number, i: number) => assert.ok(Math.abs(x - vectorA[i]) < 1e-6));
  });

  test("pets of the old server verify from pet-vectors/{DID}.json without migration; a wrong-size vector is VECTOR_DIMENSION_MISMATCH", async () => {
    const photo = nosePhotos(3);
    const objects = path.join(dataDir, "objects");
    const legacy = async (did: string, featureVector: number[]) => {
      mkdirSync(path.join(objects, "pet-vectors"), { recursive: true });
      writeFileSync(
        path.join(objects, "pet-vectors", `${did}.json`),
        JSON.stringify({ petDID: did, featureVector, vectorSize: featureVector.length, createdAt: "2025-10-01T00:00:00Z", version: "1.0" }),
      );
      mkdirSync(path.join(objects, "nose-print-photo", did), { recursive: true });
      writeFileSync(path.join(objects, "nose-print-photo", did, "verify_1700000000000.jpg"), photo(2, 1));
      return client.call("CompareWithStoredImage", { image_key: `nose-print-photo/${did}/verify_1700000000000.jpg`, pet_did: did });
    };
    const enrolled = await client.call("ExtractNoseVector", bytes(photo(2, 0)));
    const ok = await legacy(`did:ethr:besu:0x${"1f".repeat(20)}`, enrolled.vector);
    assert.equal(ok.success, true, ok.error_message);
    assert.ok(ok.similarity >= 0.85, `same-shoot photo scores ${ok.similarity}`);
    assertError(await legacy(`did:ethr:besu:0x${"2e".repeat(20)}`, enrolled.vector.slice(0, 128)), "VECTOR_DIMENSION_MISMATCH", false);
  });

  test("the registry survives a restart of the server, and a new model version re-embeds the enrolled photos", async () => {
    await server.stop();
    // The same weights under a new version stand in for a model upgrade.
    const upgraded = path.join(mkdtempSync(path.join(tmpdir(), "nosepaw-model-")), "pattern-v2.onnx");
    copyFileSync(defaults.MODEL_PATH, upgraded);
    const card = JSON.parse(readFileSync(defaults.MODEL_PATH.replace(/\.onnx$/, ".json"), "utf8"));
    writeFileSync(upgraded.replace(/\.onnx$/, ".json"), JSON.stringify({ ...card, version: "test-pattern-2" }));
    server = await startServer({ MODEL_PATH: upgraded, DATA_DIR: dataDir });
    const swept = await server.waitForLog((l) => l.msg === "embeddings re-embedded");
    assert.equal(swept.modelVersion, "test-pattern-2");
    assert.equal(swept.count, 4, "two pets with two enrolled photos each");
    client.close();
    client = gatewayClient(server.address);
    await server.waitForLog((l) => l.msg === "database ready");
    const photo = nosePhotos(1);
    const res = await client.call("IdentifyPet", { photo: bytes(photo(0, 2)) });
    assert.equal(res.success, true, res.error_message);
    assert.ok(enrolled, "runs after the round trip, which enrolled pet A (dog 0)");
    assert.equal(res.matches[0].pet_did, enrolled.a, "the best match is the pet enrolled before the restart");
    assert.equal(res.matches[0].verdict, "SAME");
  });

  test("registration rules: pairs judged at 0.70, duplicates refused only when both photos match one pet at the card's 0.97", async () => {
    assert.ok(enrolled, "runs after the round trip, which enrolled pets A (dog 0) and B (dog 1)");
    const { a, b } = enrolled;
    const photo = nosePhotos(6);
    // Similarity as the server computes it: cosine of the embeddings through the card's calibration.
    const card = JSON.parse(readFileSync(defaults.MODEL_PATH.replace(/\.onnx$/, ".json"), "utf8"));
    assert.equal(card.calibration.duplicate_similarity, CARD_DUPLICATE_SIMILARITY);
    const embed = async (img: Buffer): Promise<number[]> => {
      const r = await client.call("ExtractNoseVector", bytes(img));
      assert.equal(r.success, true, r.error_message);
      return r.vector;
    };
    const sim = async (x: Buffer, y: Buffer) => calibrate(cosine(await embed(x), await embed(y)), card.calibration);
    const near = (got: number, want: number) => assert.ok(Math.abs(got - want) < 1e-4, `${got} vs ${want}`);
    /**
     * A blend of `base` into `other` whose score lies in [lo, hi): bisection on
     * the blend weight, so the test does not depend on the rendered photos'
     * exact pixels.
     */
    const blendScoring = async (base: Buffer, other: Buffer, score: (img: Buffer) => Promise<number>, lo: number, hi: number) => {
      let [wLo, wHi] = [0, 1];
      for (let i = 0; i < 24; i++) {
        const w = (wLo + wHi) / 2;
        const img = await blend(base, other, w);
        const s = await score(img);
        if (s >= lo && s < hi) return { img, score: s };
        if (s < lo) wLo = w;
        else wHi = w;
      }
      throw new Error(`no blend scores in [${lo}, ${hi})`);
    };
    const bestOf = (refs: Buffer[]) => async (img: Buffer) => Math.max(...(await Promise.all(refs.map((r) => sim(img, r)))));

    // A pair between 0.70 and 0.85 registers and reports its score.
    const pairOk = [photo(3, 0), (await blendScoring(photo(3, 0), photo(4, 0), (img) => sim(photo(3, 0), img), 0.74, 0.81)).img];
    const okScore = await sim(pairOk[0], pairOk[1]);
    assert.ok(okScore >= 0.7 && okScore < 0.85, `pair scores ${okScore}`);
    const reg = await client.call("RegisterPet", { photos: pairOk.map(bytes) });
    assert.equal(reg.success, true, reg.error_message);
    near(reg.min_pair_similarity, okScore);
    assert.equal(reg.duplicate_pet_did, "");
    assert.equal(reg.review_pet_did, undefined);

    // Two noses under 0.70 without shared keypoints are refused; the message, min_pair_similarity
    // and min_pair_inliers carry the pair's score and inliers.
    const pairBad = [photo(5, 0), photo(4, 0)];
    const badScore = await sim(pairBad[0], pairBad[1]);
    assert.ok(badScore < 0.7, `pair scores ${badScore}`);
    const refused = await client.call("RegisterPet", { photos: pairBad.map(bytes) });
    assertError(refused, "INVALID_REQUEST", false);
    assert.match(
      refused.error_message,
      new RegExp(
        `photos 1 and 2 do not show the same nose \\(similarity ${badScore.toFixed(3)} < 0\\.7, \\d+ keypoint inliers < ${DEFAULT_GEOMETRY_POLICY.consistencyInliers}\\)`,
      ),
    );
    near(refused.min_pair_similarity, badScore);
    assert.ok(refused.min_pair_inliers < DEFAULT_GEOMETRY_POLICY.consistencyInliers, `inliers ${refused.min_pair_inliers}`);

    // Both photos match pet B at 0.95..0.97: SAME, but under the card's duplicate similarity
    // (the server's default 0.95 would have refused): registered, B named for review.
    const againstB = bestOf([photo(1, 0), photo(1, 1)]);
    const lookalike = [
      (await blendScoring(photo(1, 0), photo(4, 0), againstB, 0.955, 0.965)).img,
      (await blendScoring(photo(1, 1), photo(4, 1), againstB, 0.955, 0.965)).img,
    ];
    const bestB = await Promise.all(lookalike.map(againstB));
    assert.ok(
      bestB.every((s) => s >= 0.95 && s < CARD_DUPLICATE_SIMILARITY),
      `scores against B: ${bestB}`,
    );
    assert.ok((await sim(lookalike[0], lookalike[1])) >= 0.7, "the look-alike's photos are consistent");
    const twin = await client.call("RegisterPet", { photos: lookalike.map(bytes), request_id: "reg-lookalike" });
    assert.equal(twin.success, true, twin.error_message);
    assert.notEqual(twin.pet_did, b);
    assert.equal(twin.review_pet_did, b);
    near(twin.review_similarity, Math.max(...bestB));
    assert.equal(twin.duplicate_pet_did, "", "duplicate fields stay empty on success");
    const line = await server.waitForLog((l) => l.msg === "register.duplicate_review" && l.petDid === twin.pet_did);
    assert.equal(line.candidatePetDid, b);

    // Only one photo matches pet A above 0.97 (the other scores 0.86..0.93): not refused.
    const againstA = bestOf([photo(0, 0), photo(0, 1)]);
    const oneMatch = [photo(0, 2), (await blendScoring(photo(0, 2), photo(5, 0), againstA, 0.86, 0.93)).img];
    const bestA = await Promise.all(oneMatch.map(againstA));
    assert.ok(bestA[0] >= CARD_DUPLICATE_SIMILARITY && bestA[1] < CARD_DUPLICATE_SIMILARITY, `scores against A: ${bestA}`);
    const one = await client.call("RegisterPet", { photos: oneMatch.map(bytes) });
    assert.equal(one.success, true, one.error_message);
    assert.equal(one.review_pet_did, a);
    near(one.review_similarity, bestA[0]);

    // A pair under 0.70 whose photos share one bead pattern (the second is the first blended into
    // another nose) registers on its keypoints, and says how many it shared. Dog 2: a textured nose
    // (about 350 keypoints a photo; dog 5's soft render has about 50, the policy's floor).
    const pairGeo = [photo(2, 0), (await blendScoring(photo(2, 0), photo(4, 0), (img) => sim(photo(2, 0), img), 0.5, 0.66)).img];
    const geoScore = await sim(pairGeo[0], pairGeo[1]);
    const geo = await client.call("RegisterPet", { photos: pairGeo.map(bytes) });
    assert.equal(geo.success, true, geo.error_message);
    near(geo.min_pair_similarity, geoScore);
    assert.ok(geo.min_pair_inliers >= DEFAULT_GEOMETRY_POLICY.consistencyInliers, `inliers ${geo.min_pair_inliers}`);
  });
});

const pgMissing = requireSystem("PostgreSQL with pgvector", postgresUnavailable(), INSTALL.postgres);

describe("registry flows on an S3-protocol server and PostgreSQL with pgvector, with outages", { skip: pgMissing }, () => {
  let s3: TestS3;
  let pg: TestPostgres;
  let server: RunningServer;
  let client: GatewayClient;
  // The server reaches both through TCP proxies that can hold a request in flight.
  let s3Link: TcpProxy;
  let pgLink: TcpProxy;

  before(async () => {
    [s3, pg] = await Promise.all([startS3("nose-bucket"), startPostgres("ml_server")]);
    [s3Link, pgLink] = await Promise.all([startTcpProxy(Number(new URL(s3.config.endpoint).port)), startTcpProxy(pg.config.port)]);
    server = await startServer({
      ...defaults,
      ...remoteRegistryEnv(s3, pg),
      NCP_ENDPOINT: `http://127.0.0.1:${s3Link.port}`,
      DB_PORT: String(pgLink.port),
    });
    client = gatewayClient(server.address);
    await server.waitForLog((l) => l.msg === "database ready" && l.kind === "postgres");
  });
  after(async () => {
    client?.close();
    await server?.stop();
    await Promise.allSettled([s3Link?.close(), pgLink?.close()]);
    await Promise.allSettled([s3?.stop(), pg?.dispose()]);
  });

  test("round trip, then storage and database outages give retryable errors and the service recovers by itself", async () => {
    const photo = nosePhotos(3);
    const { a } = await roundTrip(client, photo);
    const verify = () => client.call("VerifyPet", { pet_did: a, photo: bytes(photo(0, 1)) });

    /** Waits until the link holds `n` requests at the dependency (bounded: a request that never gets there fails the test). */
    const heldAt = async (link: TcpProxy, n: number) => {
      for (let i = 0; link.holding() < n; i++) {
        assert.ok(i < 600, `${n} requests were never in flight at the dependency (holding ${link.holding()})`);
        await new Promise((r) => setTimeout(r, 25));
      }
    };

    // Object store killed while requests are in flight: the link holds them
    // at the store, then the store dies under them; each fails retryably.
    s3Link.stall();
    const inflight = [verify(), verify(), verify()];
    await heldAt(s3Link, 1);
    await s3.stop();
    s3Link.resume();
    for (const r of await Promise.all(inflight)) assertError(r, "STORAGE_CONNECTION_ERROR", true);
    assertError(await verify(), "STORAGE_CONNECTION_ERROR", true);
    assertError(
      await client.call("CompareWithStoredImage", { image_key: `nose-print-photo/${a}/image_1.jpg`, pet_did: a }),
      "STORAGE_CONNECTION_ERROR",
      true,
    );
    await s3.start();
    const back = await verify();
    assert.equal(back.success, true, back.error_message);
    assert.equal(back.verdict, "SAME");

    // Database killed mid-request: both requests held at the database first.
    pgLink.stall();
    const pending = [verify(), client.call("IdentifyPet", { photo: bytes(photo(0, 2)) })];
    await heldAt(pgLink, 2);
    await pg.stop();
    pgLink.resume();
    for (const r of await Promise.all(pending)) assertError(r, "SERVICE_UNAVAILABLE", true);
    assertError(await verify(), "SERVICE_UNAVAILABLE", true);
    assertError(await client.call("IdentifyPet", { photo: bytes(photo(0, 2)) }), "SERVICE_UNAVAILABLE", true);
    // ExtractNoseVector does not need the database.
    assert.equal((await client.call("ExtractNoseVector", bytes(photo(2, 0)))).success, true);
    await pg.start();
    const recovered = await verify();
    assert.equal(recovered.success, true, recovered.error_message);
    const identified = await client.call("IdentifyPet", { photo: bytes(photo(0, 2)) });
    assert.equal(identified.matches[0].pet_did, a);
  });
});
