import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import { REVIEW_THRESHOLD, verdictOf } from "../similarity.js";
import {
  checkGeometryParams,
  checkGeometryPolicy,
  decideVerdict,
  decodeFeatures,
  DEFAULT_GEOMETRY_PARAMS,
  DEFAULT_GEOMETRY_POLICY,
  encodeFeatures,
  extractFeatures,
  FeatureFileError,
  featureSetId,
  loadOpenCv,
  matchFeatures,
  type GeometryEvidence,
  type GreyImage,
  type OpenCv,
} from "./index.js";

/** Seeded generator, so every run sees the same pictures. */
function rng(seed: number) {
  let s = seed >>> 0;
  return () => (s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32;
}

/**
 * A bead mosaic: cells around random centres, each a dome of its own
 * brightness with dark grooves between, the structure a nose print's
 * keypoints come from. Sampled through `map` (output pixel -> mosaic
 * coordinates) so one mosaic can be seen from two viewpoints.
 */
function mosaic(seed: number, size: number, map: (x: number, y: number) => [number, number] = (x, y) => [x, y]): GreyImage {
  const r = rng(seed);
  const cells = Array.from({ length: 420 }, () => ({ x: r() * 320 - 32, y: r() * 320 - 32, tone: 60 + r() * 140 }));
  const data = new Uint8Array(size * size);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const [u, v] = map(x, y);
      let d1 = Infinity;
      let d2 = Infinity;
      let tone = 0;
      for (const c of cells) {
        const d = (c.x - u) ** 2 + (c.y - v) ** 2;
        if (d < d1) {
          d2 = d1;
          d1 = d;
          tone = c.tone;
        } else if (d < d2) d2 = d;
      }
      const groove = Math.min(1, (Math.sqrt(d2) - Math.sqrt(d1)) / 3);
      data[y * size + x] = Math.round(20 + (tone - 20) * groove);
    }
  }
  return { data, width: size, height: size };
}

/** The same mosaic turned by `deg` about the centre and scaled by `scale`: a second photo of one nose. */
function turned(seed: number, size: number, deg: number, scale: number): GreyImage {
  const a = (deg * Math.PI) / 180;
  const c = size / 2;
  return mosaic(seed, size, (x, y) => {
    const dx = (x - c) / scale;
    const dy = (y - c) / scale;
    return [c + dx * Math.cos(a) - dy * Math.sin(a), c + dx * Math.sin(a) + dy * Math.cos(a)];
  });
}

describe("keypoint geometry", () => {
  let cv: OpenCv;
  before(async () => {
    cv = await loadOpenCv();
  });
  const params = DEFAULT_GEOMETRY_PARAMS;

  test("two views of one bead mosaic share many inliers; two different mosaics share few", () => {
    const a = extractFeatures(cv, mosaic(1, 256), params);
    const b = extractFeatures(cv, turned(1, 256, 25, 1.15), params);
    const other = extractFeatures(cv, turned(2, 256, 25, 1.15), params);
    assert.ok(a.count >= 100, `keypoints in a mosaic: ${a.count}`);
    const same = matchFeatures(cv, a, b, params);
    const different = matchFeatures(cv, a, other, params);
    assert.ok(same.inliers >= 3 * DEFAULT_GEOMETRY_POLICY.sameInliers, `same mosaic: ${same.inliers} inliers`);
    assert.ok(different.inliers < DEFAULT_GEOMETRY_POLICY.sameInliers, `different mosaics: ${different.inliers} inliers`);
    assert.ok(same.inlierRatio > different.inlierRatio);
  });

  test("at most maxKeypoints are kept, strongest first, and the result does not depend on the run", () => {
    const img = mosaic(3, 256);
    const few = extractFeatures(cv, img, { ...params, maxKeypoints: 50 });
    assert.equal(few.count, 50);
    assert.equal(few.descriptors.length, 50 * few.descriptorBytes);
    const again = extractFeatures(cv, img, { ...params, maxKeypoints: 50 });
    assert.deepEqual(again.points, few.points);
    assert.deepEqual(again.descriptors, few.descriptors);
  });

  test("a flat image has no keypoints, and matching it finds nothing", () => {
    const flat = extractFeatures(cv, { data: new Uint8Array(256 * 256).fill(90), width: 256, height: 256 }, params);
    assert.equal(flat.count, 0);
    const m = matchFeatures(cv, flat, extractFeatures(cv, mosaic(4, 256), params), params);
    assert.deepEqual(m, { candidates: 0, inliers: 0, inlierRatio: 0 });
  });

  test("a grey buffer of the wrong length is refused", () => {
    assert.throws(() => extractFeatures(cv, { data: new Uint8Array(10), width: 256, height: 256 }, params), RangeError);
  });

  test("every geometric model fits two views of one mosaic", () => {
    const a = extractFeatures(cv, mosaic(5, 256), params);
    const b = extractFeatures(cv, turned(5, 256, -15, 0.9), params);
    for (const model of ["homography", "affine"] as const) {
      assert.ok(matchFeatures(cv, a, b, { ...params, model }).inliers >= 40, model);
    }
  });

  test("a feature file reads back exactly, and a damaged one is refused with a reason", () => {
    const f = extractFeatures(cv, mosaic(6, 256), params);
    const bytes = encodeFeatures(featureSetId(params), f);
    const back = decodeFeatures(bytes);
    assert.equal(back.featureSetId, featureSetId(params));
    assert.deepEqual(back.features, f);
    assert.throws(() => decodeFeatures(bytes.subarray(0, bytes.length - 1)), FeatureFileError);
    assert.throws(() => decodeFeatures(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16])), /bad magic/);
    const future = bytes.slice();
    future[4] = 9;
    assert.throws(() => decodeFeatures(future), /version 9/);
  });

  test("the feature-set id changes with every setting that changes a stored file", () => {
    const base = featureSetId(params);
    for (const change of [
      { side: 320 },
      { akazeThreshold: 0.001 },
      { akazeOctaveLayers: 2 },
      { maxKeypoints: 500 },
      { claheClip: 3 },
      { claheTiles: 4 },
    ]) {
      assert.notEqual(featureSetId({ ...params, ...change }), base, JSON.stringify(change));
    }
    // Matching settings do not change what a file holds.
    assert.equal(featureSetId({ ...params, ratio: 0.7, model: "affine" }), base);
  });
});

describe("decisions with geometry", () => {
  const policy = DEFAULT_GEOMETRY_POLICY;
  const evidence = (inliers: number): GeometryEvidence => ({
    checked: true,
    inliers,
    inlierRatio: 0.5,
    candidates: 2 * inliers,
    probeKeypoints: 300,
    required: policy.sameInliers,
    supported: inliers >= policy.sameInliers,
  });

  test("SAME needs both the similarity and the inliers", () => {
    assert.equal(decideVerdict(0.99, evidence(policy.sameInliers - 1), policy), "REVIEW");
    assert.equal(decideVerdict(0.99, evidence(policy.sameInliers), policy), "SAME");
    assert.equal(decideVerdict(policy.sameSimilarity, evidence(policy.sameInliers), policy), "SAME");
    assert.equal(decideVerdict(policy.sameSimilarity - 0.01, evidence(500), policy), "REVIEW");
  });

  test("below the review similarity, strong geometry asks for review and weak geometry says DIFFERENT", () => {
    assert.equal(decideVerdict(0.3, evidence(policy.sameInliers), policy), "REVIEW");
    assert.equal(decideVerdict(0.3, evidence(3), policy), "DIFFERENT");
    assert.equal(decideVerdict(REVIEW_THRESHOLD, evidence(0), policy), "REVIEW");
  });

  test("without geometry the similarity decides alone, as before", () => {
    for (const s of [0.2, 0.7, 0.84, 0.85, 0.99]) {
      assert.equal(decideVerdict(s, { checked: false, reason: "no photos" }, policy), verdictOf(s));
      assert.equal(decideVerdict(s, undefined, policy), verdictOf(s));
    }
  });

  test("a card's policy and parameters are checked before they are used", () => {
    assert.throws(() => checkGeometryPolicy({ ...policy, sameInliers: 2 }), /sameInliers/);
    assert.throws(() => checkGeometryPolicy({ ...policy, sameSimilarity: 0.5 }), /sameSimilarity/);
    assert.throws(() => checkGeometryPolicy({ ...policy, minKeypoints: -1 }), /minKeypoints/);
    assert.throws(() => checkGeometryParams({ ...DEFAULT_GEOMETRY_PARAMS, model: "warp" as "affine" }), /model/);
    assert.throws(() => checkGeometryParams({ ...DEFAULT_GEOMETRY_PARAMS, side: 10 }), /side/);
    assert.deepEqual(checkGeometryPolicy({ ...policy }), policy);
  });
});
