import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { resizeLanczos, type Raster } from "../../shared/lanczos.js";
import { prng } from "../../shared/prng.js";
import { assembleLanczosWasm } from "../../scripts/build-lanczos-wasm.js";
import { lanczosSimdWasm } from "./lanczos-simd-wasm.js";
import { resizeLanczosSimd, simdAvailable } from "./lanczos-simd.js";

type Fill = (x: number, y: number, c: number) => number;

function raster(width: number, height: number, channels: number, fill: Fill): Raster {
  const data = new Uint8Array(width * height * channels);
  for (let y = 0, i = 0; y < height; y++) {
    for (let x = 0; x < width; x++) for (let c = 0; c < channels; c++) data[i++] = fill(x, y, c);
  }
  return { width, height, channels, data };
}

function noise(seed: number): Fill {
  const r = prng(seed);
  return () => Math.floor(r() * 256);
}

/** Extremes only: the sums furthest from the middle, so ringing is clipped at both ends. */
function binaryNoise(seed: number): Fill {
  const r = prng(seed);
  return () => (r() < 0.5 ? 0 : 255);
}

const black: Fill = () => 0;
const white: Fill = () => 255;
const checker =
  (cell: number): Fill =>
  (x, y) =>
    (Math.floor(x / cell) + Math.floor(y / cell)) % 2 ? 255 : 0;

/** Asserts the SIMD resize gives exactly the JavaScript one's bytes; says where they first differ. */
function assertSame(src: Raster, outW: number, outH: number, bands: number, what: string): void {
  const want = resizeLanczos(src, outW, outH, bands);
  const got = resizeLanczosSimd(src, outW, outH, bands);
  assert.equal(got.length, want.length, `${what}: length`);
  const i = want.findIndex((v, k) => got[k] !== v);
  assert.equal(i, -1, `${what}: byte ${i} (pixel ${Math.floor(i / bands)}, band ${i % bands}) is ${got[i]}, not ${want[i]}`);
}

function label(src: Raster, outW: number, outH: number, bands: number): string {
  return `${src.width}x${src.height}x${src.channels} -> ${outW}x${outH}x${bands}`;
}

describe("resizeLanczosSimd", () => {
  // Without SIMD the function is resizeLanczos and every comparison below would hold trivially.
  test("runs the WebAssembly module on this engine", () => {
    assert.equal(simdAvailable, true);
  });

  test("equals resizeLanczos on random images and sizes, up and down, 1 to 4 channels and bands", () => {
    const r = prng(20261206);
    const size = () => 1 + Math.floor(r() * r() * 160);
    for (let n = 0; n < 300; n++) {
      const channels = 1 + Math.floor(r() * 4);
      const bands = 1 + Math.floor(r() * channels);
      const src = raster(size(), size(), channels, noise(n));
      // Some cases keep one axis, so the single-pass paths are covered too.
      const outW = r() < 0.15 ? src.width : size();
      const outH = r() < 0.15 ? src.height : size();
      assertSame(src, outW, outH, bands, label(src, outW, outH, bands));
    }
  });

  test("equals resizeLanczos at the model size, from RGB and RGBA photos of the usual sizes", () => {
    const sizes = [
      [225, 225],
      [300, 300],
      [448, 448],
      [540, 540],
      [1008, 756],
      [756, 1008],
      [2016, 1512],
      [65, 65],
      [37, 224],
    ];
    for (const [n, [w, h]] of sizes.entries()) {
      for (const channels of [3, 4]) {
        const src = raster(w, h, channels, noise(1000 + n * 2 + channels));
        assertSame(src, 224, 224, 3, label(src, 224, 224, 3));
      }
    }
  });

  test("equals resizeLanczos on thin images: 1xN, Nx1, 1x1, and thin outputs", () => {
    const cases: [number, number, number, number][] = [
      [1, 1, 224, 224],
      [1, 300, 224, 224],
      [300, 1, 224, 224],
      [1, 300, 1, 17],
      [300, 1, 17, 1],
      [57, 43, 1, 1],
      [57, 43, 1, 43],
      [57, 43, 57, 1],
      [2, 2, 1, 3],
      [5, 5, 5, 6],
    ];
    for (const [n, [w, h, outW, outH]] of cases.entries()) {
      for (const channels of [1, 3, 4]) {
        const src = raster(w, h, channels, noise(2000 + n * 5 + channels));
        for (const bands of new Set([channels, 3 <= channels ? 3 : 1])) assertSame(src, outW, outH, bands, label(src, outW, outH, bands));
      }
    }
  });

  test("equals resizeLanczos with large windows (ksize in the hundreds and thousands)", () => {
    const cases: [number, number, number, number][] = [
      [4032, 6, 3, 2],
      [6, 4032, 2, 3],
      [3000, 20, 1, 1],
      [997, 613, 5, 7],
      [4032, 40, 224, 3],
    ];
    for (const [n, [w, h, outW, outH]] of cases.entries()) {
      for (const channels of [3, 4]) {
        const src = raster(w, h, channels, noise(3000 + n * 5 + channels));
        assertSame(src, outW, outH, 3, label(src, outW, outH, 3));
        if (channels === 4) assertSame(src, outW, outH, 4, label(src, outW, outH, 4));
      }
    }
  });

  test("equals resizeLanczos on all-0, all-255, checkerboards and 0/255 noise (clipping at both ends)", () => {
    const fills: [string, Fill][] = [
      ["black", black],
      ["white", white],
      ["checker 1", checker(1)],
      ["checker 2", checker(2)],
      ["checker 7", checker(7)],
      ["0/255 noise", binaryNoise(4000)],
    ];
    const sizes: [number, number, number, number][] = [
      [17, 13, 224, 224],
      [64, 48, 97, 200],
      [540, 540, 224, 224],
      [300, 200, 31, 45],
      [9, 9, 10, 8],
    ];
    for (const [name, fill] of fills) {
      for (const [w, h, outW, outH] of sizes) {
        for (const channels of [3, 4]) {
          const src = raster(w, h, channels, fill);
          for (const bands of [3, channels]) assertSame(src, outW, outH, bands, `${name} ${label(src, outW, outH, bands)}`);
        }
      }
    }
    // Upscaled 1-pixel checkerboards ring past both ends; the cases above must have clipped something.
    const ringing = resizeLanczos(raster(17, 13, 3, checker(1)), 224, 224, 3);
    assert.ok(ringing.includes(0) && ringing.includes(255));
  });

  test("reads Uint8ClampedArray and offset views, leaves the source alone, and returns results that later calls do not touch", () => {
    const base = raster(120, 90, 4, noise(5000));
    const before = Uint8Array.from(base.data);
    const backing = new Uint8ClampedArray(base.data.length + 13);
    backing.set(base.data, 13);
    const view = { ...base, data: backing.subarray(13) };
    const first = resizeLanczosSimd(view, 50, 40, 3);
    const copy = Uint8Array.from(first);
    assert.deepEqual(first, resizeLanczos(base, 50, 40, 3));
    // A bigger call (memory grows) and another small one must not change the first result.
    resizeLanczosSimd(raster(900, 700, 3, noise(5001)), 224, 224, 3);
    resizeLanczosSimd(raster(20, 20, 3, noise(5002)), 50, 40, 3);
    assert.deepEqual(first, copy);
    assert.deepEqual(base.data, before);
  });

  test("same size copies the kept bands; bad arguments throw as resizeLanczos does", () => {
    const src = raster(31, 17, 4, noise(6000));
    assertSame(src, 31, 17, 4, "same size RGBA");
    assertSame(src, 31, 17, 3, "same size RGBA -> RGB");
    assert.throws(() => resizeLanczosSimd({ ...src, data: src.data.subarray(1) }, 5, 5), RangeError);
    assert.throws(() => resizeLanczosSimd(src, 5, 5, 5), RangeError);
    assert.throws(() => resizeLanczosSimd(src, 5, 5, 0), RangeError);
    assert.throws(() => resizeLanczosSimd(src, 0, 5), RangeError);
    assert.throws(() => resizeLanczosSimd(src, 5, 2.5), RangeError);
  });
});

describe("lanczos-simd-wasm.ts", () => {
  test("holds what scripts/build-lanczos-wasm.ts assembles from lanczos-simd.wat now", async () => {
    const assembled = await assembleLanczosWasm();
    const b64 = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("base64");
    assert.equal(b64(lanczosSimdWasm), b64(assembled), "the generated module is stale: run npm run build:wasm");
  });
});
