/**
 * The benchmark's old-pipeline server must keep computing exactly what the
 * old Python server computed, or its comparison silently measures something
 * else: its ExtractNoseVector tensor, and the tensor of the in-process
 * reference's Pillow pipe, are checked value for value against
 * test/pil/reference.py on the same photos.
 */
import * as grpc from "@grpc/grpc-js";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import sharp from "sharp";
import { extractNoseVector } from "../bench/grpc-call.js";
import { startPillowPipe } from "../bench/fixed-cost.js";
import { oldPipelineUnavailable, startOldPipeline, type OldPipeline } from "../bench/old-pipeline/start.js";
import { gatewayClient } from "./support/grpc-client.js";
import { nosePhotos } from "./support/nose-photos.js";
import { INSTALL, requireSystem } from "./support/require-system.js";
import { ROOT } from "./support/server.js";

function skipReason(): string | false {
  return requireSystem("grpc, numpy and Pillow under /usr/bin/python3", oldPipelineUnavailable(), INSTALL.python);
}

describe("old-pipeline benchmark server", { skip: skipReason(), timeout: 120_000 }, () => {
  let old: OldPipeline;
  before(async () => {
    old = await startOldPipeline();
  });
  after(async () => {
    await old?.stop();
  });

  it("answers ExtractNoseVector with the tensor test/pil/reference.py computes, EXIF orientation included", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "nosepaw-harness-"));
    const nose = nosePhotos(1)(0, 0);
    const photos: Record<string, Buffer> = {
      "nose.jpg": nose,
      // A phone's portrait shot: stored sideways, EXIF orientation 6, and larger than the model input.
      "rotated.jpg": await sharp(nose).resize(640, 480, { fit: "fill" }).withMetadata({ orientation: 6 }).jpeg({ quality: 88 }).toBuffer(),
    };
    for (const [name, bytes] of Object.entries(photos)) writeFileSync(path.join(dir, name), bytes);
    writeFileSync(path.join(dir, "manifest.json"), JSON.stringify(Object.keys(photos).map((file) => ({ file }))));
    execFileSync("/usr/bin/python3", [path.join(ROOT, "test/pil/reference.py"), dir, "224"], { stdio: "pipe" });

    const client = gatewayClient(old.address);
    try {
      const asTensor = new grpc.Metadata();
      asTensor.set("x-return-tensor", "1");
      for (const [name, bytes] of Object.entries(photos)) {
        const { res, trailers } = await extractNoseVector(client, bytes, asTensor);
        assert.equal(res.success, true, res.error_message);
        const want = new Float32Array(new Uint8Array(readFileSync(path.join(dir, `${name}.f32`))).buffer);
        const got = Float32Array.from(res.vector);
        assert.equal(got.length, 3 * 224 * 224, name);
        const differing = got.reduce((n, v, i) => n + (v === want[i] ? 0 : 1), 0);
        assert.equal(differing, 0, `${name}: ${differing} values differ from the reference`);
        assert.ok(Number(trailers.get("x-preprocess-ms")[0]) > 0, "preprocessing time in the trailers");
      }
    } finally {
      client.close();
    }
    // The in-process reference (bench/fixed-cost.ts) feeds the same photos to Pillow over a pipe.
    const pipe = startPillowPipe();
    try {
      for (const [name, bytes] of Object.entries(photos)) {
        const { ms, tensor } = await pipe.preprocess(bytes);
        const want = new Float32Array(new Uint8Array(readFileSync(path.join(dir, `${name}.f32`))).buffer);
        const differing = tensor.reduce((n, v, i) => n + (v === want[i] ? 0 : 1), 0);
        assert.equal(tensor.length, want.length, name);
        assert.equal(differing, 0, `pipe, ${name}: ${differing} values differ from the reference`);
        assert.ok(ms > 0, "preprocessing time from the pipe");
      }
    } finally {
      pipe.stop();
    }
  });
});
