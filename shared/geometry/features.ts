import type { CvKeyPoint, OpenCv } from "./opencv.js";
import type { GeometryParams } from "./params.js";

/** An 8-bit grey image, row-major, one byte per pixel. */
export interface GreyImage {
  data: Uint8Array;
  width: number;
  height: number;
}

/** Keypoints of one photo: positions at the working scale and their binary descriptors. */
export interface NoseFeatures {
  /** Size of the grey image the keypoints were found in. */
  width: number;
  height: number;
  /** x0, y0, x1, y1, ... */
  points: Float32Array;
  /** `count` rows of `descriptorBytes` bytes. */
  descriptors: Uint8Array;
  descriptorBytes: number;
  count: number;
}

/** Bytes of an AKAZE (MLDB, full size) descriptor. */
export const AKAZE_DESCRIPTOR_BYTES = 61;

export function emptyFeatures(width: number, height: number): NoseFeatures {
  return { width, height, points: new Float32Array(0), descriptors: new Uint8Array(0), descriptorBytes: AKAZE_DESCRIPTOR_BYTES, count: 0 };
}

/**
 * AKAZE keypoints of a grey photo after CLAHE, the strongest
 * `maxKeypoints` of them. The caller scales the photo so that its short side
 * is `params.side`: keypoint scale and the RANSAC threshold are in those
 * pixels.
 */
export function extractFeatures(cv: OpenCv, grey: GreyImage, params: GeometryParams): NoseFeatures {
  const { width, height } = grey;
  if (grey.data.length !== width * height)
    throw new RangeError(`grey image of ${width}x${height} needs ${width * height} bytes, got ${grey.data.length}`);
  const src = cv.matFromArray(height, width, cv.CV_8UC1, grey.data);
  const equalised = new cv.Mat();
  const clahe = new cv.CLAHE(params.claheClip, new cv.Size(params.claheTiles, params.claheTiles));
  const akaze = new cv.AKAZE();
  const found = new cv.KeyPointVector();
  const kept = new cv.KeyPointVector();
  const mask = new cv.Mat();
  const descriptors = new cv.Mat();
  try {
    clahe.apply(src, equalised);
    akaze.setThreshold(params.akazeThreshold);
    akaze.setNOctaveLayers(params.akazeOctaveLayers);
    akaze.detect(equalised, found, mask);
    const all: CvKeyPoint[] = [];
    for (let i = 0; i < found.size(); i++) all.push(found.get(i));
    // Strongest first; ties by position so the choice does not depend on detection order.
    all.sort((a, b) => b.response - a.response || a.pt.y - b.pt.y || a.pt.x - b.pt.x);
    for (const k of all.slice(0, params.maxKeypoints)) kept.push_back(k);
    if (kept.size() === 0) return emptyFeatures(width, height);
    // compute() may drop keypoints too close to the border: read back what it kept.
    akaze.compute(equalised, kept, descriptors);
    const count = kept.size();
    const points = new Float32Array(2 * count);
    for (let i = 0; i < count; i++) {
      const k = kept.get(i);
      points[2 * i] = k.pt.x;
      points[2 * i + 1] = k.pt.y;
    }
    const descriptorBytes = descriptors.cols;
    if (descriptors.rows !== count || descriptorBytes !== AKAZE_DESCRIPTOR_BYTES) {
      throw new Error(`AKAZE returned ${descriptors.rows}x${descriptorBytes} descriptors for ${count} keypoints`);
    }
    return { width, height, points, descriptors: descriptors.data.slice(0, count * descriptorBytes), descriptorBytes, count };
  } finally {
    for (const m of [src, equalised, clahe, akaze, found, kept, mask, descriptors]) m.delete();
  }
}
