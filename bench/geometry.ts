/**
 * What keypoint geometry adds to a 1:1 decision: VerifyPet against a pet
 * enrolled with two photos, on one server with the geometric check and one
 * without (GEOMETRY=off), called alternately from one gateway client so both
 * see the same machine. Also the shared module's own cost per photo and per
 * pair in this process (OpenCV's WebAssembly build).
 */
import { nosePhotos } from "../test/support/nose-photos.js";
import { gatewayClient } from "../test/support/grpc-client.js";
import { startServer } from "../test/support/server.js";
import { DEFAULT_GEOMETRY_PARAMS, extractFeatures, loadOpenCv, matchFeatures } from "../shared/geometry/index.js";
import { greyForGeometry } from "../server/geometry/grey.js";
import { summarize, type Summary } from "./stats.js";
import { procStatusKiB } from "../test/support/server-process.js";

export interface GeometryBenchResult {
  /** VerifyPet, client round trip, ms. */
  verifyWith: Summary;
  verifyWithout: Summary;
  /** p50 with minus p50 without. */
  addedP50Ms: number;
  /** In-process: keypoints of one 256 px grey photo, and one probe-reference match. */
  featuresMs: Summary;
  matchMs: Summary;
  keypoints: number;
  /** Peak RSS (VmHWM) of each server after the runs, MiB: the geometry worker and OpenCV's WebAssembly memory. */
  peakRssWithMiB: number;
  peakRssWithoutMiB: number;
}

export async function geometryBench(rounds: number): Promise<GeometryBenchResult> {
  const photo = nosePhotos(1);
  const servers = await Promise.all([startServer({}), startServer({ GEOMETRY: "off" })]);
  try {
    const clients = servers.map((s) => gatewayClient(s.address));
    const dids: string[] = [];
    for (const c of clients) {
      const r = await c.call("RegisterPet", { photos: [photo(0, 0), photo(0, 1)].map((b) => ({ image_data: b })) });
      if (!r.success) throw new Error(`registration failed: ${r.error_message}`);
      dids.push(r.pet_did);
    }
    const times: number[][] = [[], []];
    for (let i = 0; i < rounds + 3; i++) {
      for (const k of [0, 1]) {
        const t = performance.now();
        const r = await clients[k].call("VerifyPet", { pet_did: dids[k], photo: { image_data: photo(0, 2 + (i % 2)) } });
        const ms = performance.now() - t;
        if (!r.success) throw new Error(`verify failed: ${r.error_message}`);
        if (k === 0 && !r.geometry?.checked) throw new Error("the geometric server did not check geometry");
        if (i >= 3) times[k].push(ms); // the first calls warm both servers up
      }
    }
    for (const c of clients) c.close();
    const pids = await Promise.all(servers.map((s) => s.waitForLog((l) => typeof l.pid === "number").then((l) => l.pid as number)));
    const [peakRssWithMiB, peakRssWithoutMiB] = pids.map((pid) => (procStatusKiB(pid, "VmHWM") ?? NaN) / 1024);

    const cv = await loadOpenCv();
    const greys = await Promise.all(
      [0, 1, 2, 3].map((k) => greyForGeometry(photo(0, k), DEFAULT_GEOMETRY_PARAMS.side, { maxBytes: 50 << 20, maxPixels: 50_000_000 })),
    );
    const featuresMs: number[] = [];
    let feats = greys.map((g) => extractFeatures(cv, g, DEFAULT_GEOMETRY_PARAMS));
    for (let i = 0; i < rounds; i++) {
      const t = performance.now();
      feats = greys.map((g) => extractFeatures(cv, g, DEFAULT_GEOMETRY_PARAMS));
      featuresMs.push((performance.now() - t) / greys.length);
    }
    const matchMs: number[] = [];
    for (let i = 0; i < rounds; i++) {
      const t = performance.now();
      matchFeatures(cv, feats[2], feats[i % 2], DEFAULT_GEOMETRY_PARAMS);
      matchMs.push(performance.now() - t);
    }
    const verifyWith = summarize(times[0]);
    const verifyWithout = summarize(times[1]);
    return {
      verifyWith,
      verifyWithout,
      addedP50Ms: verifyWith.p50 - verifyWithout.p50,
      featuresMs: summarize(featuresMs),
      matchMs: summarize(matchMs),
      keypoints: Math.round(feats.reduce((s, f) => s + f.count, 0) / feats.length),
      peakRssWithMiB,
      peakRssWithoutMiB,
    };
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
  }
}
