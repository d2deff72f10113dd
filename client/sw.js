/*
 * nosepaw's service worker: the app shell (the page, its scripts and styles,
 * the ONNX runtime's JavaScript and WebAssembly, the manifest and icons) is
 * stored when the worker installs, so the page opens without a network after
 * one online visit. The model itself is kept by the page in the Cache API
 * ("nosepaw-model", keyed by version) and its card in localStorage; the RPCs
 * are never touched here: captures made offline wait in IndexedDB instead.
 *
 * The build (vite.config.ts) fills in VERSION and PRECACHE.
 */
const VERSION = "__VERSION__";
const PRECACHE = __PRECACHE__;
const SHELL = `nosepaw-shell-${VERSION}`;

self.addEventListener("install", (event) => {
  event.waitUntil(
    (async () => {
      const cache = await caches.open(SHELL);
      // "reload": straight from the server, not an older copy in the HTTP cache
      await cache.addAll(PRECACHE.map((p) => new Request(new URL(p, self.registration.scope), { cache: "reload" })));
      await self.skipWaiting();
    })(),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    (async () => {
      for (const key of await caches.keys()) if (key.startsWith("nosepaw-shell-") && key !== SHELL) await caches.delete(key);
      await self.clients.claim();
    })(),
  );
});

self.addEventListener("fetch", (event) => {
  const req = event.request;
  if (req.method !== "GET") return;
  const url = new URL(req.url);
  const scope = new URL(self.registration.scope);
  if (url.origin !== scope.origin) return;
  if (req.mode === "navigate") {
    // The network first, so a new build shows at once; the stored page when there is none.
    event.respondWith(
      fetch(req).catch(async () => (await caches.match(new URL("./", scope).href, { cacheName: SHELL })) ?? Response.error()),
    );
    return;
  }
  const rel = url.pathname.startsWith(scope.pathname) ? url.pathname.slice(scope.pathname.length) : url.pathname;
  if (!PRECACHE.includes(rel)) return;
  // Built files carry their content's hash in their name: the stored copy is the right one.
  event.respondWith((async () => (await caches.match(req, { cacheName: SHELL, ignoreSearch: true })) ?? fetch(req))());
});
