import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { decodeFeatures, DEFAULT_GEOMETRY_PARAMS, DEFAULT_GEOMETRY_POLICY, featureSetId } from "../shared/geometry/index.js";
import { gatewayClient, type GatewayClient } from "./support/grpc-client.js";
import { nosePhotos } from "./support/nose-photos.js";
import { makeTestModel, startServer, type RunningServer } from "./support/server.js";

/**
 * Keypoint geometry as the second factor, through the gateway's client. The
 * server runs a model that gives every photo the same embedding (make_onnx.py
 * --kind constant): every pair scores similarity 1, so whatever tells two
 * noses apart here is the geometry. Without it (GEOMETRY=off) the same calls
 * show what it guards against: a stranger's nose verifies SAME and a new dog
 * is refused as an enrolled one's duplicate.
 */
const model = makeTestModel(path.join(mkdtempSync(path.join(tmpdir(), "nosepaw-model-")), "constant.onnx"), {
  kind: "constant",
  card: true,
});
const photo = nosePhotos(4);
/**
 * The second dog, B. Every role here needs a textured nose: the geometry can
 * only support a pet whose enrolled photos carry the policy's minKeypoints.
 * Dog 1's render (seed 424242) is a dark, soft nose with about 20 AKAZE
 * keypoints a photo, under the 50 needed, so it would be decided by similarity
 * alone; dog 3 carries about 180.
 */
const B_DOG = 3;
const shot = (dog: number, k: number) => ({ image_data: photo(dog, k), image_format: "jpeg" });
const REQUIRED = DEFAULT_GEOMETRY_POLICY.sameInliers;

describe("keypoint geometry behind decisions", () => {
  let server: RunningServer;
  let client: GatewayClient;
  let dataDir: string;
  let a: string;
  let b: string;
  before(async () => {
    dataDir = mkdtempSync(path.join(tmpdir(), "nosepaw-geometry-"));
    server = await startServer({ MODEL_PATH: model, DATA_DIR: dataDir });
    client = gatewayClient(server.address);
  });
  after(async () => {
    client?.close();
    await server?.stop();
  });

  test("a second dog is registered, not refused as the first one's duplicate, when their keypoints do not agree", async () => {
    const regA = await client.call("RegisterPet", { photos: [shot(0, 0), shot(0, 1)] });
    assert.equal(regA.success, true, regA.error_message);
    assert.ok(regA.min_pair_inliers >= REQUIRED, `A's photos share ${regA.min_pair_inliers} inliers`);
    a = regA.pet_did;
    const regB = await client.call("RegisterPet", { photos: [shot(B_DOG, 0), shot(B_DOG, 1)] });
    assert.equal(regB.success, true, regB.error_message);
    assert.equal(regB.duplicate_pet_did, "");
    assert.equal(regB.review_pet_did, a, "similarity 1 to A is still recorded for review");
    b = regB.pet_did;
    const line = await server.waitForLog((l) => l.msg === "register.duplicate_without_geometry");
    assert.equal(line.candidatePetDid, a);
    assert.ok((line.inliers as number) < DEFAULT_GEOMETRY_POLICY.duplicateInliers);
  });

  test("each enrolled photo's keypoints are stored beside it, named by the detector settings", () => {
    for (const k of [1, 2]) {
      const file = path.join(dataDir, "objects", "nose-print-photo", a, `image_${k}.features`);
      const stored = decodeFeatures(new Uint8Array(readFileSync(file)));
      assert.equal(stored.featureSetId, featureSetId(DEFAULT_GEOMETRY_PARAMS));
      assert.ok(stored.features.count >= DEFAULT_GEOMETRY_POLICY.minKeypoints, `${stored.features.count} keypoints`);
    }
  });

  test("VerifyPet: SAME for the pet's own nose with its inliers; a stranger at similarity 1 only REVIEW", async () => {
    const own = await client.call("VerifyPet", { pet_did: a, photo: shot(0, 2) });
    assert.equal(own.success, true, own.error_message);
    assert.equal(own.verdict, "SAME");
    assert.equal(own.geometry.checked, true);
    assert.equal(own.geometry.supported, true);
    assert.equal(own.geometry.required_inliers, REQUIRED);
    assert.ok(own.geometry.inliers >= REQUIRED && own.geometry.score > 0 && own.geometry.probe_keypoints > 0);
    const stranger = await client.call("VerifyPet", { pet_did: a, photo: shot(2, 0) });
    assert.equal(stranger.success, true, stranger.error_message);
    assert.ok(stranger.similarity > 0.99, `similarity ${stranger.similarity}`);
    assert.equal(stranger.verdict, "REVIEW");
    assert.equal(stranger.geometry.supported, false);
    assert.ok(stranger.geometry.inliers < REQUIRED);
  });

  test("ApproveTransfer approves the pet's own nose and refuses a stranger's, whatever the similarity", async () => {
    const own = await client.call("ApproveTransfer", { pet_did: a, photo: shot(0, 3), from_guardian: "0xa", to_guardian: "0xb" });
    assert.equal(own.approved, true, own.error_message);
    assert.equal(own.geometry.supported, true);
    const stranger = await client.call("ApproveTransfer", { pet_did: a, photo: shot(2, 1), from_guardian: "0xa", to_guardian: "0xc" });
    assert.equal(stranger.success, true, stranger.error_message);
    assert.equal(stranger.approved, false);
    assert.equal(stranger.geometry.supported, false);
  });

  test("IdentifyPet puts the pet with geometric support first and gives only it SAME", async () => {
    const r = await client.call("IdentifyPet", { photo: shot(B_DOG, 2), top_k: 5 });
    assert.equal(r.success, true, r.error_message);
    assert.equal(r.matches.length, 2);
    assert.equal(r.matches[0].pet_did, b);
    assert.equal(r.matches[0].verdict, "SAME");
    assert.equal(r.matches[0].geometry.supported, true);
    assert.equal(r.matches[1].verdict, "REVIEW");
    assert.equal(r.matches[1].geometry.supported, false);
  });

  test("CompareWithStoredImage checks a stored photo against the pet's other enrolled photos", async () => {
    const r = await client.call("CompareWithStoredImage", { image_key: `nose-print-photo/${a}/image_1.jpg`, pet_did: a });
    assert.equal(r.success, true, r.error_message);
    assert.equal(r.geometry.checked, true);
    assert.equal(r.geometry.supported, true);
  });

  test("a pet whose enrolled photos are gone is decided by similarity alone, and the response says so", async () => {
    for (const k of [1, 2]) {
      for (const ext of ["jpg", "features"]) rmSync(path.join(dataDir, "objects", "nose-print-photo", b, `image_${k}.${ext}`));
    }
    // The server keeps recently used keypoints in memory; a restart drops them, as another replica would not have them.
    await server.stop();
    server = await startServer({ MODEL_PATH: model, DATA_DIR: dataDir });
    client.close();
    client = gatewayClient(server.address);
    const r = await client.call("VerifyPet", { pet_did: b, photo: shot(2, 2) });
    assert.equal(r.success, true, r.error_message);
    assert.equal(r.geometry.checked, false);
    assert.match(r.geometry.note, /enrolment photos cannot be read; decided by similarity alone/);
    assert.equal(r.verdict, "SAME");
    assert.ok(!existsSync(path.join(dataDir, "objects", "nose-print-photo", b, "image_1.features")));
  });
});

describe("the same calls without geometry (GEOMETRY=off)", () => {
  let server: RunningServer;
  let client: GatewayClient;
  before(async () => {
    server = await startServer({ MODEL_PATH: model, GEOMETRY: "off" });
    client = gatewayClient(server.address);
  });
  after(async () => {
    client?.close();
    await server?.stop();
  });

  test("a second dog is refused as the first one's duplicate and a stranger verifies SAME: what geometry prevents", async () => {
    const regA = await client.call("RegisterPet", { photos: [shot(0, 0), shot(0, 1)] });
    assert.equal(regA.success, true, regA.error_message);
    assert.equal(regA.min_pair_inliers, undefined);
    const regB = await client.call("RegisterPet", { photos: [shot(B_DOG, 0), shot(B_DOG, 1)] });
    assert.equal(regB.success, false);
    assert.equal(regB.duplicate_pet_did, regA.pet_did);
    const stranger = await client.call("VerifyPet", { pet_did: regA.pet_did, photo: shot(2, 0) });
    assert.equal(stranger.verdict, "SAME");
    assert.equal(stranger.geometry, null);
  });
});
