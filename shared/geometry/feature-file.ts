import type { NoseFeatures } from "./features.js";

/**
 * The stored form of one enrolled photo's keypoints, `image_N.features`
 * beside the photo. Little-endian:
 *
 *   0   4  magic "NPKF"
 *   4   1  format version (1)
 *   5   1  descriptor bytes per keypoint (61 for AKAZE)
 *   6   2  length L of the feature-set id
 *   8   2  width, 10 2 height of the grey image the keypoints were found in
 *   12  4  keypoint count N
 *   16  L  feature-set id, UTF-8 (see featureSetId); then zero padding to a multiple of 4
 *   ..  8N x, y of each keypoint, float32
 *   ..  N x descriptor bytes
 *
 * The id names the detector and its parameters: a file whose id differs from
 * the running one is recomputed from the photo, never compared.
 */
const MAGIC = [0x4e, 0x50, 0x4b, 0x46]; // "NPKF"
const VERSION = 1;
const HEADER = 16;

export class FeatureFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FeatureFileError";
  }
}

export interface StoredFeatures {
  featureSetId: string;
  features: NoseFeatures;
}

const pad4 = (n: number) => (n + 3) & ~3;

export function encodeFeatures(featureSetId: string, f: NoseFeatures): Uint8Array {
  const id = new TextEncoder().encode(featureSetId);
  if (id.length > 0xffff) throw new RangeError("feature-set id too long");
  const pointsAt = pad4(HEADER + id.length);
  const out = new Uint8Array(pointsAt + 8 * f.count + f.count * f.descriptorBytes);
  const view = new DataView(out.buffer);
  out.set(MAGIC, 0);
  view.setUint8(4, VERSION);
  view.setUint8(5, f.descriptorBytes);
  view.setUint16(6, id.length, true);
  view.setUint16(8, f.width, true);
  view.setUint16(10, f.height, true);
  view.setUint32(12, f.count, true);
  out.set(id, HEADER);
  for (let i = 0; i < 2 * f.count; i++) view.setFloat32(pointsAt + 4 * i, f.points[i], true);
  out.set(f.descriptors.subarray(0, f.count * f.descriptorBytes), pointsAt + 8 * f.count);
  return out;
}

export function decodeFeatures(bytes: Uint8Array): StoredFeatures {
  if (bytes.length < HEADER || MAGIC.some((m, i) => bytes[i] !== m)) throw new FeatureFileError("not a nose feature file (bad magic)");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint8(4);
  if (version !== VERSION) throw new FeatureFileError(`unsupported feature file version ${version}`);
  const descriptorBytes = view.getUint8(5);
  const idLength = view.getUint16(6, true);
  const width = view.getUint16(8, true);
  const height = view.getUint16(10, true);
  const count = view.getUint32(12, true);
  const pointsAt = pad4(HEADER + idLength);
  const expected = pointsAt + 8 * count + count * descriptorBytes;
  if (descriptorBytes === 0 || bytes.length !== expected) {
    throw new FeatureFileError(`feature file is ${bytes.length} bytes, its header describes ${expected}`);
  }
  const featureSetId = new TextDecoder().decode(bytes.subarray(HEADER, HEADER + idLength));
  const points = new Float32Array(2 * count);
  for (let i = 0; i < 2 * count; i++) points[i] = view.getFloat32(pointsAt + 4 * i, true);
  const descriptors = bytes.slice(pointsAt + 8 * count, expected);
  return { featureSetId, features: { width, height, points, descriptors, descriptorBytes, count } };
}
