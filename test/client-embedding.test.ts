import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { petDidFromVector } from "../shared/did.js";
import sharp from "sharp";
import { toModelInput } from "../shared/preprocess.js";
import { cosine, l2normalize, template } from "../shared/similarity.js";
import { openPglite } from "../server/db/database.js";
import { gatewayClient, type GatewayClient } from "./support/grpc-client.js";
import { makeTestModel, startServer, type RunningServer } from "./support/server.js";
import { nosePhotos } from "./support/nose-photos.js";

/**
 * Client embeddings: the browser embeds each photo itself and sends the
 * vector along; the server embeds the photo too and refuses any vector of
 * another model version or that disagrees with its own. Runs on the
 * predictable pattern model (see registry-wire.test.ts), whose card names
 * version test-pattern-1.
 */
const MODEL_PATH = makeTestModel(path.join(mkdtempSync(path.join(tmpdir(), "nosepaw-model-")), "pattern.onnx"), {
  kind: "pattern",
  card: true,
});
const VERSION = "test-pattern-1";
/** The server's MODEL_INPUT_SIZE default, which the capture app reads from the model card. */
const INPUT_SIZE = 224;
const bytes = (b: Buffer) => ({ image_data: b, image_format: "jpeg" });

function assertRefused(res: any, pattern: RegExp) {
  assert.equal(res.success, false, `expected a refusal, got ${JSON.stringify(res).slice(0, 300)}`);
  assert.equal(res.error_code, "INVALID_REQUEST", res.error_message);
  assert.equal(res.retryable, false);
  assert.match(res.error_message, /^ML_4006: /);
  assert.match(res.error_message, pattern);
}

/** `v` plus deterministic noise of relative size `rel`: cosine about 1/sqrt(1+rel^2). */
function noisy(v: number[], rel: number): number[] {
  const sigma = rel / Math.sqrt(v.length);
  return v.map((x, i) => x + sigma * Math.SQRT2 * Math.sin(i * 12.9898 + 78.233));
}

describe("client embeddings in RegisterPet, VerifyPet and IdentifyPet, through the gateway's gRPC client", () => {
  const dataDir = mkdtempSync(path.join(tmpdir(), "nosepaw-data-"));
  let server: RunningServer | undefined;
  let client: GatewayClient | undefined;
  let photo: (dog: number, shot: number) => Buffer;
  let petA = "";
  let honestDid = "";

  const embed = async (img: Buffer): Promise<number[]> => {
    const r = await client!.call("ExtractNoseVector", bytes(img));
    assert.equal(r.success, true, r.error_message);
    return r.vector;
  };
  /**
   * An honest client's vector, computed as the capture app computes it and
   * not by the server: the photo decoded here (sharp, standing in for the
   * browser's canvas), the client's own preprocessing (shared/preprocess
   * toModelInput), the model run on onnxruntime-web's WASM backend, one
   * thread. It agrees with the server's where the two pipelines agree: a
   * change to either side's preprocessing shows here.
   */
  let clientSession: import("onnxruntime-web").InferenceSession | undefined;
  const clientVector = async (img: Buffer): Promise<number[]> => {
    const ort = await import("onnxruntime-web");
    ort.env.wasm.numThreads = 1;
    clientSession ??= await ort.InferenceSession.create(readFileSync(MODEL_PATH));
    const { data, info } = await sharp(img).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    const input = toModelInput({ width: info.width, height: info.height, channels: 3, data: new Uint8Array(data) }, INPUT_SIZE);
    const out = await clientSession.run({
      [clientSession.inputNames[0]]: new ort.Tensor("float32", input, [1, 3, INPUT_SIZE, INPUT_SIZE]),
    });
    return Array.from(l2normalize(out[clientSession.outputNames[0]].data as Float32Array));
  };
  const honest = async (img: Buffer, provider = "wasm") => ({
    vector: await clientVector(img),
    execution_provider: provider,
    model_version: VERSION,
  });
  const shots = (did: string) => readdirSync(path.join(dataDir, "objects", "nose-print-photo", did)).filter((f) => f.startsWith("verify_"));

  before(async () => {
    photo = nosePhotos(4);
    server = await startServer({ MODEL_PATH, DATA_DIR: dataDir });
    client = gatewayClient(server.address);
    await server.waitForLog((l) => l.msg === "database ready");
  });
  after(async () => {
    client?.close();
    await server?.stop();
  });

  test("an honest client's vector, computed on the capture app's path (its preprocessing, onnxruntime-web), agrees with the server's", async () => {
    for (const [dog, shot] of [
      [0, 0],
      [1, 1],
      [3, 2],
    ]) {
      const mine = await clientVector(photo(dog, shot));
      const server = await embed(photo(dog, shot));
      assert.equal(mine.length, server.length);
      assert.ok(cosine(mine, server) >= 0.999, `dog ${dog} shot ${shot}: client and server disagree, cosine ${cosine(mine, server)}`);
    }
  });

  test("RegisterPet with honest client vectors: accepted, client_agreement >= 0.999; without them, as before", async () => {
    const r = await client!.call("RegisterPet", {
      photos: [bytes(photo(0, 0)), bytes(photo(0, 1))],
      client_embeddings: [await honest(photo(0, 0), "webgpu"), await honest(photo(0, 1), "webgpu")],
      request_id: "reg-honest",
    });
    assert.equal(r.success, true, r.error_message);
    assert.equal(r._client_agreement, "client_agreement", "client_agreement is present on the wire");
    assert.ok(r.client_agreement >= 0.999 && r.client_agreement <= 1, String(r.client_agreement));
    assert.equal(r.model_version, VERSION);
    petA = r.pet_did;

    const plain = await client!.call("RegisterPet", { photos: [bytes(photo(1, 0)), bytes(photo(1, 1))] });
    assert.equal(plain.success, true, plain.error_message);
    assert.equal(plain._client_agreement, undefined, "no client embeddings, no client_agreement");
  });

  test("a tampered client vector (another dog's, or the honest one with noise) is refused before anything is written", async () => {
    const [v0, v1] = [await embed(photo(2, 0)), await embed(photo(2, 1))];
    const did = petDidFromVector(template([Float32Array.from(v0), Float32Array.from(v1)]));
    const folder = path.join(dataDir, "objects", "nose-print-photo", did);

    const otherDog = await client!.call("RegisterPet", {
      photos: [bytes(photo(2, 0)), bytes(photo(2, 1))],
      client_embeddings: [
        await honest(photo(2, 0)),
        { vector: await embed(photo(0, 0)), execution_provider: "wasm", model_version: VERSION },
      ],
    });
    assertRefused(otherDog, /photo 2: client embedding disagrees with the server's \(cosine -?\d\.\d{3,} < 0\.999\)/);
    assert.equal(otherDog._client_agreement, "client_agreement");
    assert.ok(otherDog.client_agreement < 0.999);
    assert.ok(Math.abs(otherDog.client_agreement - cosine(v1, await embed(photo(0, 0)))) < 1e-4);

    const slightly = noisy(v0, 0.15);
    const c = cosine(slightly, v0);
    assert.ok(c > 0.98 && c < 0.999, `noise gives cosine ${c}`);
    const noise = await client!.call("RegisterPet", {
      photos: [bytes(photo(2, 0)), bytes(photo(2, 1))],
      client_embeddings: [{ vector: slightly, execution_provider: "wasm", model_version: VERSION }, await honest(photo(2, 1))],
    });
    assertRefused(noise, new RegExp(`photo 1: client embedding disagrees with the server's \\(cosine ${c.toFixed(3)} < 0\\.999\\)`));

    assert.equal(existsSync(folder), false, "no object was written for the refused registrations");
    // Had either committed, this would be refused as the same enrolment template.
    const ok = await client!.call("RegisterPet", {
      photos: [bytes(photo(2, 0)), bytes(photo(2, 1))],
      client_embeddings: [await honest(photo(2, 0)), await honest(photo(2, 1))],
    });
    assert.equal(ok.success, true, ok.error_message);
    assert.equal(ok.pet_did, did);
    honestDid = did;
  });

  test("another model version, a wrong length, non-finite values or a count per photo that does not match are INVALID_REQUEST", async () => {
    const photos = [bytes(photo(3, 0)), bytes(photo(3, 1))];
    const good = [await honest(photo(3, 0)), await honest(photo(3, 1))];
    const old = await client!.call("RegisterPet", {
      photos,
      client_embeddings: [good[0], { ...good[1], model_version: "test-pattern-0" }],
    });
    assertRefused(old, /photo 2: client embedding was computed with model version "test-pattern-0", but the server runs "test-pattern-1"/);
    const none = await client!.call("RegisterPet", { photos, client_embeddings: [{ ...good[0], model_version: "" }, good[1]] });
    assertRefused(none, /model version "", but the server runs "test-pattern-1"/);
    assertRefused(
      await client!.call("RegisterPet", { photos, client_embeddings: [good[0], { ...good[1], vector: good[1].vector.slice(0, 511) }] }),
      /photo 2: client embedding has 511 values, the model gives 512/,
    );
    const nan = [...good[0].vector];
    nan[7] = NaN;
    assertRefused(
      await client!.call("RegisterPet", { photos, client_embeddings: [{ ...good[0], vector: nan }, good[1]] }),
      /photo 1: client embedding value 7 is not a finite number/,
    );
    assertRefused(
      await client!.call("RegisterPet", { photos, client_embeddings: [good[0]] }),
      /one client embedding per photo: 2 photos, 1 client embeddings/,
    );
    assertRefused(
      await client!.call("VerifyPet", {
        pet_did: petA,
        photo: bytes(photo(0, 2)),
        client_embedding: { ...(await honest(photo(0, 2))), model_version: "test-pattern-0" },
      }),
      /client embedding was computed with model version "test-pattern-0", but the server runs "test-pattern-1"/,
    );
    assertRefused(
      await client!.call("IdentifyPet", {
        photo: bytes(photo(0, 2)),
        client_embedding: { ...(await honest(photo(0, 2))), vector: [Infinity, ...good[0].vector.slice(1)] },
      }),
      /client embedding value 0 is not a finite number/,
    );
  });

  test("VerifyPet and IdentifyPet: an honest vector is accepted with its agreement, a tampered one refused (no verification shot stored)", async () => {
    const ok = await client!.call("VerifyPet", {
      pet_did: petA,
      photo: bytes(photo(0, 2)),
      client_embedding: await honest(photo(0, 2), "wasm"),
    });
    assert.equal(ok.success, true, ok.error_message);
    assert.equal(ok.verdict, "SAME");
    assert.ok(ok.client_agreement >= 0.999, String(ok.client_agreement));
    const before = shots(petA).length;
    const forged = await client!.call("VerifyPet", {
      pet_did: petA,
      photo: bytes(photo(1, 2)),
      client_embedding: { vector: await embed(photo(0, 2)), execution_provider: "wasm", model_version: VERSION },
    });
    assertRefused(forged, /^ML_4006: client embedding disagrees with the server's \(cosine -?\d\.\d{3,} < 0\.999\)$/);
    assert.ok(forged.client_agreement < 0.999);
    assert.equal(shots(petA).length, before, "a refused verification stores no shot");
    const plain = await client!.call("VerifyPet", { pet_did: petA, photo: bytes(photo(0, 3)) });
    assert.equal(plain.success, true, plain.error_message);
    assert.equal(plain._client_agreement, undefined);

    const found = await client!.call("IdentifyPet", { photo: bytes(photo(0, 3)), client_embedding: await honest(photo(0, 3), "webgpu") });
    assert.equal(found.success, true, found.error_message);
    assert.equal(found.matches[0].pet_did, petA);
    assert.ok(found.client_agreement >= 0.999, String(found.client_agreement));
    const noise = await client!.call("IdentifyPet", {
      photo: bytes(photo(0, 3)),
      client_embedding: { vector: noisy(await embed(photo(0, 3)), 0.15), execution_provider: "webgpu", model_version: VERSION },
    });
    assertRefused(noise, /client embedding disagrees with the server's/);
  });

  test("the audit rows record the agreement and the execution provider; refused requests wrote none", async () => {
    assert.ok(petA && honestDid, "runs after the tests above");
    // PGlite is single-process: the registry is read once the server has stopped.
    await server!.stop();
    server = undefined;
    client!.close();
    client = undefined;
    const db = await openPglite({ dataDir: path.join(dataDir, "pg") });
    try {
      const { rows } = await db.query<{ kind: string; pet_did: string | null; detail: unknown }>(
        "SELECT kind, pet_did, detail FROM audit_log ORDER BY id",
      );
      const audit = rows.map((r) => ({
        ...r,
        detail: (typeof r.detail === "string" ? JSON.parse(r.detail) : r.detail) as Record<string, any>,
      }));
      const reg = audit.filter((r) => r.kind === "register");
      assert.equal(reg.length, 3, "pet A, the plain registration, the honest retry of dog 2");
      const a = reg.find((r) => r.pet_did === petA)!.detail.clientEmbedding;
      assert.equal(a.executionProvider, "webgpu");
      assert.equal(a.modelVersion, VERSION);
      assert.ok(a.agreement >= 0.999);
      assert.equal(a.cosines.length, 2);
      assert.equal(reg.find((r) => r.pet_did === honestDid)!.detail.clientEmbedding.executionProvider, "wasm");
      assert.equal(reg.filter((r) => r.detail.clientEmbedding === undefined).length, 1);

      const verify = audit.filter((r) => r.kind === "verify");
      assert.equal(verify.length, 2, "the honest and the plain verification");
      assert.equal(verify[0].detail.clientEmbedding.executionProvider, "wasm");
      assert.ok(verify[0].detail.clientEmbedding.agreement >= 0.999);
      assert.equal(verify[1].detail.clientEmbedding, undefined);

      const identify = audit.filter((r) => r.kind === "identify");
      assert.equal(identify.length, 1);
      assert.equal(identify[0].detail.clientEmbedding.executionProvider, "webgpu");
    } finally {
      await db.close();
    }
  });
});
