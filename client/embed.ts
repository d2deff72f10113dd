/**
 * On-device embedding with onnxruntime-web: WebGPU when the browser gives an
 * adapter, WebAssembly otherwise. Pixels go through shared/preprocess.ts, the
 * very code the server runs, so both sides feed the model the same tensor.
 */
import { toModelInput, type PixelImage } from "../shared/preprocess.js";
import { l2normalize } from "../shared/similarity.js";

export type Provider = "webgpu" | "wasm";

export interface Embedder {
  provider: Provider;
  inputSize: number;
  embed(img: PixelImage): Promise<{ vector: Float32Array; ms: number }>;
}

async function webgpuAvailable(): Promise<boolean> {
  const gpu = (navigator as Navigator & { gpu?: { requestAdapter(): Promise<unknown> } }).gpu;
  if (!gpu) return false;
  try {
    return (await gpu.requestAdapter()) != null;
  } catch {
    return false;
  }
}

export async function createEmbedder(model: Uint8Array, inputSize: number, prefer?: Provider): Promise<Embedder> {
  // Its own chunk, loaded on demand: a static import together with several
  // WASM threads makes session creation hang.
  const ort = await import("onnxruntime-web/webgpu");
  // ONNX Runtime Web writes its warnings (node placement, unused initialisers)
  // through console.error; only real errors should show as errors.
  ort.env.logLevel = "error";
  ort.env.wasm.numThreads = globalThis.crossOriginIsolated ? Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1)) : 1;
  const provider: Provider = prefer ?? ((await webgpuAvailable()) ? "webgpu" : "wasm");
  const session = await ort.InferenceSession.create(model, {
    executionProviders: [provider],
    graphOptimizationLevel: "all",
    logSeverityLevel: 3,
  });
  const inputName = session.inputNames[0];
  const outputName = session.outputNames[0];
  return {
    provider,
    inputSize,
    async embed(img) {
      const started = performance.now();
      const data = toModelInput(img, inputSize);
      const input = new ort.Tensor("float32", data, [1, 3, inputSize, inputSize]);
      const out = await session.run({ [inputName]: input });
      const vector = l2normalize(out[outputName].data as Float32Array);
      return { vector, ms: performance.now() - started };
    },
  };
}

/** Decoded pixels of an image file or blob, without colour management. */
export async function pixelsOf(source: Blob | CanvasImageSource): Promise<PixelImage> {
  const bmp = source instanceof Blob ? await createImageBitmap(source, { colorSpaceConversion: "none", premultiplyAlpha: "none" }) : source;
  const w = (bmp as { width: number }).width;
  const h = (bmp as { height: number }).height;
  if (bmp instanceof ImageBitmap && source instanceof Blob) {
    const straight = straightPixels(bmp);
    if (straight) {
      bmp.close();
      return { width: w, height: h, channels: 4, data: straight };
    }
  }
  const canvas = new OffscreenCanvas(w, h);
  const ctx = canvas.getContext("2d", { colorSpace: "srgb" })!;
  ctx.drawImage(bmp as CanvasImageSource, 0, 0);
  const { data } = ctx.getImageData(0, 0, w, h, { colorSpace: "srgb" });
  if (bmp instanceof ImageBitmap && source instanceof Blob) bmp.close();
  return { width: w, height: h, channels: 4, data };
}

/**
 * The decoded pixels with their stored colour under any alpha, read through a
 * WebGL texture: a 2D canvas keeps premultiplied colour, which loses levels
 * under translucent pixels and all colour under transparent ones, while the
 * server (as Pillow's convert("RGB")) keeps the stored colour. Undefined
 * where WebGL is not available; the caller then reads a 2D canvas.
 */
function straightPixels(bmp: ImageBitmap): Uint8ClampedArray | undefined {
  const gl = new OffscreenCanvas(1, 1).getContext("webgl2", { premultipliedAlpha: false, antialias: false });
  if (!gl) return undefined;
  const { width: w, height: h } = bmp;
  if (w > gl.getParameter(gl.MAX_TEXTURE_SIZE) || h > gl.getParameter(gl.MAX_TEXTURE_SIZE)) return undefined;
  const tex = gl.createTexture();
  const fb = gl.createFramebuffer();
  try {
    gl.bindTexture(gl.TEXTURE_2D, tex);
    gl.pixelStorei(gl.UNPACK_PREMULTIPLY_ALPHA_WEBGL, false);
    gl.pixelStorei(gl.UNPACK_COLORSPACE_CONVERSION_WEBGL, gl.NONE);
    gl.pixelStorei(gl.UNPACK_FLIP_Y_WEBGL, false);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA8, gl.RGBA, gl.UNSIGNED_BYTE, bmp);
    gl.bindFramebuffer(gl.FRAMEBUFFER, fb);
    gl.framebufferTexture2D(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0, gl.TEXTURE_2D, tex, 0);
    if (gl.checkFramebufferStatus(gl.FRAMEBUFFER) !== gl.FRAMEBUFFER_COMPLETE) return undefined;
    const out = new Uint8ClampedArray(w * h * 4);
    // Texture row 0 is the image's first row, so the read-back is top-down already.
    gl.readPixels(0, 0, w, h, gl.RGBA, gl.UNSIGNED_BYTE, out);
    return gl.getError() === gl.NO_ERROR ? out : undefined;
  } finally {
    gl.deleteFramebuffer(fb);
    gl.deleteTexture(tex);
    gl.getExtension("WEBGL_lose_context")?.loseContext();
  }
}
