// Offline once loaded: the page, the client and onnxruntime-web are cached when the worker
// installs; the package's files when the page loads them. Every same-origin GET goes to the
// network first (so a re-exported package is seen) and falls back to the cache offline.
const CACHE = 'elmo-onnx-v1';
const SHELL = [
  '/', '/app.js', '/style.css', '/sw.js',
  '/src/core.js', '/src/web.js', '/src/conformance.js', '/src/protobuf.js', '/src/tokenize.js',
  '/ort/ort.wasm.min.mjs', '/ort/ort-wasm-simd-threaded.mjs', '/ort/ort-wasm-simd-threaded.wasm',
];

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));
self.addEventListener('fetch', (event) => {
  const request = event.request;
  if (request.method !== 'GET' || new URL(request.url).origin !== self.location.origin) return;
  event.respondWith((async () => {
    const cache = await caches.open(CACHE);
    try {
      const response = await fetch(request);
      if (response.ok) await cache.put(request, response.clone());
      return response;
    } catch (error) {
      const cached = await cache.match(request, { ignoreSearch: request.mode === 'navigate' });
      if (cached) return cached;
      throw error;
    }
  })());
});
