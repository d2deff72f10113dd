/**
 * The part of OpenCV's WebAssembly build (npm `@techstark/opencv-js`) that
 * the geometric check uses, typed structurally: the package's own typings
 * leave out AKAZE and several overloads, and code here must run unchanged in
 * Node and in the browser, so the module is passed in rather than imported.
 */
/* eslint-disable @typescript-eslint/no-explicit-any */
export interface CvMat {
  rows: number;
  cols: number;
  data: Uint8Array;
  data32F: Float32Array;
  delete(): void;
}

export interface CvKeyPoint {
  pt: { x: number; y: number };
  response: number;
  size: number;
  angle: number;
  octave: number;
  class_id: number;
}

export interface CvVector<T> {
  size(): number;
  get(i: number): T;
  push_back(v: T): void;
  delete(): void;
}

export interface OpenCv {
  CV_8UC1: number;
  CV_32FC2: number;
  NORM_HAMMING: number;
  RANSAC: number;
  Mat: new () => CvMat;
  Size: new (w: number, h: number) => unknown;
  matFromArray(rows: number, cols: number, type: number, data: ArrayLike<number>): CvMat;
  CLAHE: new (clipLimit: number, tiles: unknown) => { apply(src: CvMat, dst: CvMat): void; delete(): void };
  AKAZE: new () => {
    setThreshold(t: number): void;
    setNOctaves(n: number): void;
    setNOctaveLayers(n: number): void;
    detect(img: CvMat, kp: CvVector<CvKeyPoint>, mask: CvMat): void;
    compute(img: CvMat, kp: CvVector<CvKeyPoint>, des: CvMat): void;
    delete(): void;
  };
  KeyPointVector: new () => CvVector<CvKeyPoint>;
  BFMatcher: new (
    norm: number,
    crossCheck: boolean,
  ) => {
    knnMatch(a: CvMat, b: CvMat, out: CvVector<CvVector<{ queryIdx: number; trainIdx: number; distance: number }>>, k: number): void;
    delete(): void;
  };
  DMatchVectorVector: new () => CvVector<CvVector<{ queryIdx: number; trainIdx: number; distance: number }>>;
  findHomography(src: CvMat, dst: CvMat, method: number, threshold: number, mask: CvMat): CvMat;
  estimateAffine2D(src: CvMat, dst: CvMat, inliers: CvMat, method: number, threshold: number): CvMat;
  onRuntimeInitialized?: () => void;
}

/**
 * Loads the WebAssembly build once. Depending on the bundler and the build,
 * the package's export is the ready module, a Promise of it, or a module that
 * becomes ready at `onRuntimeInitialized`. Emscripten also gives the module a
 * `then` that calls back with the module itself, so resolving any Promise
 * with it would recurse forever: once the runtime is up that `then` is
 * removed, and the module is a plain object from there on.
 */
let loading: Promise<OpenCv> | undefined;
export function loadOpenCv(): Promise<OpenCv> {
  loading ??= (async () => {
    const mod: any = await import("@techstark/opencv-js");
    let cv: any = mod?.default ?? mod;
    if (cv instanceof Promise) cv = await cv;
    if (typeof cv.Mat !== "function" || cv.calledRun === false) {
      await new Promise<void>((resolve) => {
        const before = cv.onRuntimeInitialized;
        cv.onRuntimeInitialized = () => {
          before?.();
          resolve();
        };
      });
    }
    delete cv.then;
    return cv as OpenCv;
  })();
  return loading;
}
