/**
 * Content-Security-Policy of the capture app, built by Vite into files only
 * (no inline script or style): everything comes from the page's own origin.
 * - 'wasm-unsafe-eval': onnxruntime-web compiles its WebAssembly, nothing
 *   else is evaluated;
 * - worker-src 'self': its threads are module workers from the same files;
 * - img-src blob: data:: kept frames and picked photos are shown from blobs;
 * - connect-src 'self': the model, its card and the RPCs, on this origin.
 * Workers take their policy from their script's response, so every file of
 * the app is sent with it, not only index.html.
 */
export const CLIENT_CSP = [
  "default-src 'self'",
  "script-src 'self' 'wasm-unsafe-eval'",
  "worker-src 'self'",
  "connect-src 'self'",
  "img-src 'self' blob: data:",
  "media-src 'self' blob:",
  "style-src 'self'",
  "font-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

/** Headers of every file of the served capture app. */
export const CLIENT_SECURITY_HEADERS: Record<string, string> = {
  "Content-Security-Policy": CLIENT_CSP,
  // Cross-origin isolation (SharedArrayBuffer, so WASM threads).
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Embedder-Policy": "require-corp",
  "Cross-Origin-Resource-Policy": "same-origin",
  "X-Content-Type-Options": "nosniff",
  "Referrer-Policy": "no-referrer",
  // For browsers that predate frame-ancestors.
  "X-Frame-Options": "DENY",
  "Permissions-Policy": "camera=(self), microphone=(), geolocation=(), payment=(), usb=()",
};
