/**
 * Live frame checks: every camera frame is downscaled, assessed, and one
 * short instruction is shown; after a run of passing frames the best ones
 * (full resolution) are kept.
 */
import { assessFrame, selectBest, type FrameAssessment } from "../shared/quality/index.js";

export interface KeptFrame {
  canvas: HTMLCanvasElement;
  assessment: FrameAssessment;
}

export interface CaptureOptions {
  keep: number;
  /** Consecutive passing frames needed before keeping. */
  run: number;
  /** Width of the frame the checks see. */
  analysisWidth: number;
  onFrame(a: FrameAssessment, ms: number, scale: number): void;
}

export const DEFAULT_CAPTURE = { keep: 5, run: 8, analysisWidth: 640 };

type FrameSource = HTMLVideoElement | HTMLCanvasElement | ImageBitmap;

function sizeOf(src: FrameSource): { w: number; h: number } {
  return src instanceof HTMLVideoElement ? { w: src.videoWidth, h: src.videoHeight } : { w: src.width, h: src.height };
}

/** Downscaled RGBA pixels of a frame for the checks. */
export function analysisFrame(src: FrameSource, width: number, canvas = document.createElement("canvas")) {
  const { w, h } = sizeOf(src);
  const scale = Math.min(1, width / w);
  canvas.width = Math.round(w * scale);
  canvas.height = Math.round(h * scale);
  const ctx = canvas.getContext("2d", { willReadFrequently: true })!;
  ctx.drawImage(src, 0, 0, canvas.width, canvas.height);
  const img = ctx.getImageData(0, 0, canvas.width, canvas.height);
  return { frame: { data: img.data, width: img.width, height: img.height, channels: 4 as const }, scale };
}

export function snapshot(src: FrameSource): HTMLCanvasElement {
  const { w, h } = sizeOf(src);
  const c = document.createElement("canvas");
  c.width = w;
  c.height = h;
  c.getContext("2d")!.drawImage(src, 0, 0);
  return c;
}

/** Runs the checks on the video until the best frames are kept; resolves with them. */
export function captureFromVideo(video: HTMLVideoElement, opts: CaptureOptions, signal: AbortSignal): Promise<KeptFrame[]> {
  return new Promise((resolve, reject) => {
    const work = document.createElement("canvas");
    let previous: FrameAssessment["stats"] | undefined;
    let candidates: { assessment: FrameAssessment; item: HTMLCanvasElement }[] = [];
    let passing = 0;
    const next = () => {
      if (signal.aborted) return reject(signal.reason);
      if ("requestVideoFrameCallback" in video) video.requestVideoFrameCallback(step);
      else requestAnimationFrame(step);
    };
    const step = () => {
      if (signal.aborted) return reject(signal.reason);
      if (!video.videoWidth) return next();
      const { frame, scale } = analysisFrame(video, opts.analysisWidth, work);
      const t0 = performance.now();
      const a = assessFrame(frame, previous);
      const ms = performance.now() - t0;
      previous = a.stats;
      opts.onFrame(a, ms, 1 / scale);
      if (a.pass) {
        passing++;
        candidates.push({ assessment: a, item: snapshot(video) });
        if (passing >= opts.run && candidates.length >= opts.keep) {
          resolve(selectBest(candidates, opts.keep).map((c) => ({ canvas: c.item, assessment: c.assessment })));
          return;
        }
      } else {
        // the kept frames come from one steady run
        passing = 0;
        candidates = [];
      }
      next();
    };
    next();
  });
}

/** The file-picker path: each picked photo is assessed like a camera frame. */
export async function assessFiles(
  files: File[],
  opts: Pick<CaptureOptions, "keep" | "analysisWidth">,
): Promise<{ kept: KeptFrame[]; rejected: { file: string; instruction?: string }[] }> {
  const all: { assessment: FrameAssessment; item: HTMLCanvasElement }[] = [];
  const rejected: { file: string; instruction?: string }[] = [];
  for (const f of files) {
    const bmp = await createImageBitmap(f, { colorSpaceConversion: "none" });
    const canvas = snapshot(bmp);
    bmp.close();
    const { frame } = analysisFrame(canvas, opts.analysisWidth);
    const a = assessFrame(frame);
    if (a.pass) all.push({ assessment: a, item: canvas });
    else rejected.push({ file: f.name, instruction: a.instruction });
  }
  return { kept: selectBest(all, opts.keep).map((c) => ({ canvas: c.item, assessment: c.assessment })), rejected };
}

export function toJpeg(canvas: HTMLCanvasElement, quality = 0.95): Promise<Blob> {
  return new Promise((resolve, reject) =>
    canvas.toBlob((b) => (b ? resolve(b) : reject(new Error("JPEG encoding failed"))), "image/jpeg", quality),
  );
}
