import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import sharp from "sharp";
import { petDidFromVector } from "../shared/did.js";
import { gatewayClient, type GatewayClient } from "./support/grpc-client.js";
import { postgresUnavailable, startPostgres, type TestPostgres } from "./support/postgres.js";
import { startS3, type TestS3 } from "./support/s3.js";
import { makeTestModel, ROOT, startServer, type RunningServer } from "./support/server.js";

/** Synthetic nose photos: dog{d}_{k}.jpg, four shots of each dog from one shoot. */
function nosePhotos(dogs: number): (dog: number, shot: number) => Buffer {
  const dir = mkdtempSync(path.join(tmpdir(), "nosepaw-noses-"));
  execFileSync("/usr/bin/python3", [path.join(ROOT, "test/support/nose_photos.py"), dir, String(dogs)], { stdio: "pipe" });
  return (dog, shot) => readFileSync(path.join(dir, `dog${dog}_${shot}.jpg`));
}

/**
 * The flows are tested with verdicts known in advance, so they run on a user
 * model with a card whose scores are predictable (test/support/make_onnx.py
 * --kind pattern: re-takes of one photo score cosine > 0.95, different
 * synthetic noses < 0.75). How well the bundled model tells dogs apart is
 * measured by `npm run model:eval`, not asserted here.
 */
const defaults: Record<string, string> = {
  MODEL_PATH: makeTestModel(path.join(mkdtempSync(path.join(tmpdir(), "nosepaw-model-")), "pattern.onnx"), { kind: "pattern", card: true }),
};
const bytes = (b: Buffer) => ({ image_data: b, image_format: "jpeg" });

function assertError(res: any, code: string, retryable: boolean) {
  assert.equal(res.success, false, `expected ${code}, got ${JSON.stringify(res).slice(0, 300)}`);
  assert.equal(res.error_code, code, res.error_message);
  assert.equal(res.retryable, retryable);
}

interface Enrolled {
  a: string;
  b: string;
  vectorA: number[];
}

/** register -> duplicate refused -> verify -> compare -> identify -> transfer, as the gateway drives them. */
async function roundTrip(client: GatewayClient, photo: (dog: number, shot: number) => Buffer): Promise<Enrolled> {
  const regA = await client.call("RegisterPet", { photos: [bytes(photo(0, 0)), bytes(photo(0, 1))], request_id: "reg-a", requested_by: "0xguardian1" });
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

  const dup = await client.call("RegisterPet", { photos: [bytes(photo(0, 2)), bytes(photo(0, 3))] });
  assertError(dup, "INVALID_REQUEST", false);
  assert.equal(dup.duplicate_pet_did, regA.pet_did);
  assert.ok(dup.duplicate_similarity >= 0.85);

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
  assertError(await client.call("CompareWithStoredImage", { image_key: `nose-print-photo/${regA.pet_did}/../x.jpg`, pet_did: regA.pet_did }), "INVALID_REQUEST", false);
  assertError(await client.call("CompareWithStoredImage", { image_key: `nose-print-photo/${regB.pet_did}/image_1.jpg`, pet_did: regA.pet_did }), "INVALID_REQUEST", false);
  const missing = await client.call("CompareWithStoredImage", { image_key: `nose-print-photo/${regA.pet_did}/verify_9.jpg`, pet_did: regA.pet_did });
  assertError(missing, "INVALID_REQUEST", false);
  assert.match(missing.error_message, /verify_9\.jpg/);

  const found = await client.call("IdentifyPet", { photo: bytes(photo(0, 3)), top_k: 2 });
  assert.equal(found.success, true, found.error_message);
  assert.equal(found.matches[0].pet_did, regA.pet_did);
  assert.equal(found.matches[0].verdict, "SAME");
  assert.ok(found.matches.length <= 2);

  const ok = await client.call("ApproveTransfer", { pet_did: regA.pet_did, photo: bytes(photo(0, 3)), from_guardian: "0xguardian1", to_guardian: "0xguardian2", request_id: "tr-1" });
  assert.equal(ok.success, true, ok.error_message);
  assert.equal(ok.approved, true);
  assert.ok(ok.approval_id.length > 0);
  assert.ok(!Number.isNaN(Date.parse(ok.approved_at)));
  const refused = await client.call("ApproveTransfer", { pet_did: regA.pet_did, photo: bytes(photo(1, 3)), from_guardian: "0xguardian1", to_guardian: "0xguardian3" });
  assert.equal(refused.success, true, refused.error_message);
  assert.equal(refused.approved, false);
  assert.notEqual(refused.verdict, "SAME");

  return { a: regA.pet_did, b: regB.pet_did, vectorA: regA.vector };
}

describe("registry flows through the gateway's gRPC client, embedded defaults (folder store, PGlite)", () => {
  let server: RunningServer;
  let client: GatewayClient;
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
    const { a, vectorA } = await roundTrip(client, photo);
    const npy = path.join(dataDir, "objects", "nose-print-photo", a, "vector.npy");
    const loaded = JSON.parse(
      execFileSync("/usr/bin/python3", ["-c", "import numpy,sys,json; v=numpy.load(sys.argv[1]); print(json.dumps([str(v.dtype), list(v.shape), v.tolist()]))", npy]).toString(),
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
    assert.equal(res.matches[0].verdict, "SAME");
  });
});

const pgMissing = postgresUnavailable();

describe("registry flows on an S3-protocol server and PostgreSQL with pgvector, with outages", { skip: pgMissing }, () => {
  let s3: TestS3;
  let pg: TestPostgres;
  let server: RunningServer;
  let client: GatewayClient;

  before(async () => {
    [s3, pg] = await Promise.all([startS3("nose-bucket"), startPostgres("ml_server")]);
    server = await startServer({
      ...defaults,
      NCP_ENDPOINT: s3.config.endpoint,
      NCP_ACCESS_KEY: s3.config.accessKeyId,
      NCP_SECRET_KEY: s3.config.secretAccessKey,
      NCP_BUCKET_NAME: s3.config.bucket,
      DB_HOST: pg.config.host,
      DB_PORT: String(pg.config.port),
      DB_USERNAME: pg.config.username,
      DB_PASSWORD: pg.config.password,
      DB_DATABASE: pg.config.database,
    });
    client = gatewayClient(server.address);
    await server.waitForLog((l) => l.msg === "database ready" && l.kind === "postgres");
  });
  after(async () => {
    client?.close();
    await server?.stop();
    await Promise.allSettled([s3?.stop(), pg?.dispose()]);
  });

  test("round trip, then storage and database outages give retryable errors and the service recovers by itself", async () => {
    const photo = nosePhotos(3);
    const { a } = await roundTrip(client, photo);
    const verify = () => client.call("VerifyPet", { pet_did: a, photo: bytes(photo(0, 1)) });

    // Object store killed while requests are in flight: each answer is a success or a retryable error.
    const inflight = [verify(), verify(), verify()];
    await s3.stop();
    for (const r of await Promise.all(inflight)) if (!r.success) assertError(r, "STORAGE_CONNECTION_ERROR", true);
    assertError(await verify(), "STORAGE_CONNECTION_ERROR", true);
    assertError(await client.call("CompareWithStoredImage", { image_key: `nose-print-photo/${a}/image_1.jpg`, pet_did: a }), "STORAGE_CONNECTION_ERROR", true);
    await s3.start();
    const back = await verify();
    assert.equal(back.success, true, back.error_message);
    assert.equal(back.verdict, "SAME");

    // Database killed mid-request.
    const pending = [verify(), client.call("IdentifyPet", { photo: bytes(photo(0, 2)) })];
    await pg.stop();
    for (const r of await Promise.all(pending)) if (!r.success) assertError(r, "SERVICE_UNAVAILABLE", true);
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
