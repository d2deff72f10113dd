import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { axisCoefficients, lanczos, resizeLanczos } from "./lanczos.js";
import { toModelBatch, toModelInput } from "./preprocess.js";

/** A 7x5 RGB pattern; the expected outputs below are Pillow 9.4's for it. */
const W = 7;
const H = 5;
const pattern = new Uint8Array(W * H * 3);
for (let y = 0; y < H; y++) {
  for (let x = 0; x < W; x++) {
    const p = (y * W + x) * 3;
    pattern[p] = (x * 37 + y * 11) % 256;
    pattern[p + 1] = (x * x * 5 + y * 23) % 256;
    pattern[p + 2] = (((255 - x * 19 - y * 7) % 256) + 256) % 256;
  }
}
const rgb = { width: W, height: H, channels: 3, data: pattern };

describe("lanczos filter", () => {
  test("is 1 at 0, 0 at the other integers, 0 outside [-3, 3)", () => {
    assert.equal(lanczos(0), 1);
    for (const x of [-3, -2, -1, 1, 2]) assert.ok(Math.abs(lanczos(x)) < 1e-15, `lanczos(${x})`);
    assert.equal(lanczos(3), 0);
    assert.equal(lanczos(-3.5), 0);
  });

  test("weights of every output sample sum to one in fixed point, within rounding", () => {
    for (const [inSize, outSize] of [
      [4032, 224],
      [224, 224],
      [65, 224],
      [37, 224],
      [3, 1],
    ]) {
      const c = axisCoefficients(inSize, outSize);
      for (let i = 0; i < outSize; i++) {
        const [start, n] = [c.bounds[2 * i], c.bounds[2 * i + 1]];
        assert.ok(start >= 0 && n >= 1 && start + n <= inSize && n <= c.ksize);
        let sum = 0;
        for (let k = 0; k < n; k++) sum += c.weights[i * c.ksize + k];
        assert.ok(Math.abs(sum - (1 << 22)) <= c.ksize, `${inSize}->${outSize} sample ${i}: ${sum}`);
      }
    }
  });
});

describe("resizeLanczos", () => {
  test("same size keeps every pixel", () => {
    assert.deepEqual(resizeLanczos(rgb, W, H), pattern);
  });

  test("a constant image stays constant, down and up", () => {
    const grey = { width: 50, height: 30, channels: 3, data: new Uint8Array(50 * 30 * 3).fill(173) };
    for (const [w, h] of [
      [7, 7],
      [224, 224],
      [50, 9],
      [1, 1],
    ]) {
      const out = resizeLanczos(grey, w, h);
      assert.equal(out.length, w * h * 3);
      assert.ok(
        out.every((v) => v === 173),
        `${w}x${h}`,
      );
    }
  });

  test("matches Pillow's resize((3, 4), LANCZOS) on a 7x5 pattern (downscale)", () => {
    const expected = [
      25, 5, 242, 112, 48, 197, 199, 146, 152, 39, 33, 234, 126, 76, 189, 212, 173, 144, 53, 63, 224, 139, 105, 179, 233, 209, 134, 63, 88,
      216, 166, 146, 171, 159, 151, 126,
    ];
    assert.deepEqual([...resizeLanczos(rgb, 3, 4)], expected);
  });

  test("matches Pillow's resize((11, 9), LANCZOS) on a 7x5 pattern (upscale, clipping)", () => {
    const out = resizeLanczos(rgb, 11, 9);
    assert.equal(out.length, 11 * 9 * 3);
    // First row, last row (ringing clipped to 0 and 255) of Pillow's output.
    assert.deepEqual([...out.subarray(0, 12)], [0, 0, 255, 11, 0, 250, 40, 4, 235, 65, 13, 222]);
    assert.deepEqual([...out.subarray(out.length - 12)], [223, 204, 146, 245, 232, 133, 83, 84, 118, 0, 0, 111]);
  });

  test("keeps the first bands of RGBA: alpha does not leak into RGB", () => {
    const rgba = new Uint8Array(W * H * 4);
    for (let i = 0; i < W * H; i++) {
      rgba.set(pattern.subarray(3 * i, 3 * i + 3), 4 * i);
      rgba[4 * i + 3] = (i * 97) % 256;
    }
    const fromRgba = resizeLanczos({ width: W, height: H, channels: 4, data: rgba }, 3, 4, 3);
    assert.deepEqual(fromRgba, resizeLanczos(rgb, 3, 4));
  });

  test("rejects data shorter than the declared size", () => {
    assert.throws(() => resizeLanczos({ width: 10, height: 10, channels: 3, data: new Uint8Array(299) }, 5, 5), RangeError);
  });
});

describe("toModelInput", () => {
  test("is CHW float32 in [0, 1]: v / 255 of the resized pixels", () => {
    const x = toModelInput({ width: W, height: H, channels: 3, data: pattern }, 4);
    const resized = resizeLanczos(rgb, 4, 4);
    assert.equal(x.length, 3 * 16);
    for (let i = 0; i < 16; i++) {
      for (let c = 0; c < 3; c++) assert.equal(x[c * 16 + i], Math.fround(resized[3 * i + c] / 255));
    }
  });

  // What preprocessing costs is measured by `npm run bench`, not here.
  test("upscales a 65 px image and downscales a 4032x3024 one to the model size", () => {
    const small = { width: 65, height: 65, channels: 3 as const, data: new Uint8Array(65 * 65 * 3).fill(9) };
    assert.equal(toModelInput(small, 224).length, 3 * 224 * 224);
    const big = { width: 4032, height: 3024, channels: 4 as const, data: new Uint8ClampedArray(4032 * 3024 * 4).fill(200) };
    const x = toModelInput(big, 224);
    assert.equal(x.length, 3 * 224 * 224);
    assert.ok(x.every((v) => v === Math.fround(200 / 255)));
  });

  test("toModelBatch lays the images out one after another", () => {
    const a = { width: W, height: H, channels: 3 as const, data: pattern };
    const b = { width: 3, height: 3, channels: 3 as const, data: new Uint8Array(27).fill(255) };
    const batch = toModelBatch([a, b], 8);
    assert.deepEqual(batch.subarray(0, 192), toModelInput(a, 8));
    assert.deepEqual(batch.subarray(192), toModelInput(b, 8));
  });

  test("rejects a wrong channel count or data length", () => {
    assert.throws(() => toModelInput({ width: 2, height: 2, channels: 3, data: new Uint8Array(11) }, 4), RangeError);
    assert.throws(() => toModelInput({ width: 2, height: 2, channels: 2 as 3, data: new Uint8Array(8) }, 4), RangeError);
  });
});
