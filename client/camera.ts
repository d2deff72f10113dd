/** The rear camera (when there is one) and the framing guide drawn over it. */
export async function openCamera(video: HTMLVideoElement): Promise<MediaStream> {
  if (!navigator.mediaDevices?.getUserMedia) throw new Error("no camera API");
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: false,
    video: { facingMode: { ideal: "environment" }, width: { ideal: 1280 }, height: { ideal: 720 } },
  });
  video.srcObject = stream;
  video.muted = true;
  video.playsInline = true;
  await video.play();
  if (!video.videoWidth) await new Promise((r) => video.addEventListener("loadedmetadata", r, { once: true }));
  return stream;
}

export function stopCamera(video: HTMLVideoElement): void {
  const s = video.srcObject as MediaStream | null;
  s?.getTracks().forEach((t) => t.stop());
  video.srcObject = null;
}

/** The centred square the nose should fill, as a fraction of the frame. */
export const GUIDE = { size: 0.62 };

export function drawGuide(
  canvas: HTMLCanvasElement,
  video: { videoWidth: number; videoHeight: number },
  opts: { ok: boolean; noseBox?: { x: number; y: number; w: number; h: number }; scale?: number },
): void {
  const w = (canvas.width = video.videoWidth || 640);
  const h = (canvas.height = video.videoHeight || 480);
  const ctx = canvas.getContext("2d")!;
  ctx.clearRect(0, 0, w, h);
  const side = Math.min(w, h) * GUIDE.size;
  ctx.fillStyle = "rgba(0,0,0,0.35)";
  ctx.beginPath();
  ctx.rect(0, 0, w, h);
  ctx.roundRect((w - side) / 2, (h - side) / 2, side, side, side * 0.25);
  ctx.fill("evenodd");
  ctx.lineWidth = Math.max(3, w / 200);
  ctx.strokeStyle = opts.ok ? "#3ddc84" : "#ffffff";
  ctx.beginPath();
  ctx.roundRect((w - side) / 2, (h - side) / 2, side, side, side * 0.25);
  ctx.stroke();
  if (opts.noseBox) {
    const s = opts.scale ?? 1;
    ctx.setLineDash([8, 6]);
    ctx.strokeStyle = "#ffd54f";
    ctx.strokeRect(opts.noseBox.x * s, opts.noseBox.y * s, opts.noseBox.w * s, opts.noseBox.h * s);
    ctx.setLineDash([]);
  }
}
