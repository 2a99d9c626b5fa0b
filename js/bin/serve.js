#!/usr/bin/env node
// node bin/serve.js [--package DIR] [--port 8023] [--host 127.0.0.1]
// Serves the page (web/), the client (src/), onnxruntime-web's files and one package under
// /package/, with the COOP/COEP headers that wasm threads need (SharedArrayBuffer). Static files
// only; nothing outside those folders is served.

import { createServer } from 'node:http';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8', '.json': 'application/json', '.wasm': 'application/wasm', '.svg': 'image/svg+xml',
  '.png': 'image/png', '.webmanifest': 'application/manifest+json',
};
// URL prefix -> folder; the longest prefix wins.
function routes(packageDir) {
  return [
    ['/package/', packageDir],
    ['/ort/', path.join(ROOT, 'node_modules', 'onnxruntime-web', 'dist')],
    ['/src/', path.join(ROOT, 'src')],
    ['/', path.join(ROOT, 'web')],
  ];
}

function option(args, name, fallback) {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
}

export function serve({ packageDir, port = 8023, host = '127.0.0.1', log = () => {} }) {
  const table = routes(path.resolve(packageDir));
  const server = createServer(async (request, response) => {
    const headers = {
      'Cross-Origin-Opener-Policy': 'same-origin',
      'Cross-Origin-Embedder-Policy': 'require-corp',
      'Cross-Origin-Resource-Policy': 'same-origin',
      'Cache-Control': 'no-cache',
    };
    let pathname;
    try {
      pathname = decodeURIComponent(new URL(request.url, 'http://x').pathname);
    } catch {
      response.writeHead(400, headers).end('bad path');
      return;
    }
    const [prefix, folder] = table.find(([p]) => pathname.startsWith(p));
    let file = path.join(folder, pathname.slice(prefix.length) || 'index.html');
    if (!file.startsWith(folder + path.sep) && file !== folder) {
      response.writeHead(403, headers).end('outside the served folders');
      return;
    }
    try {
      if ((await stat(file)).isDirectory()) file = path.join(file, 'index.html');
      const body = await readFile(file);
      response.writeHead(200, { ...headers, 'Content-Type': TYPES[path.extname(file)] || 'application/octet-stream', 'Content-Length': body.length });
      response.end(request.method === 'HEAD' ? undefined : body);
      log(`200 ${pathname}`);
    } catch {
      response.writeHead(404, headers).end('not found');
      log(`404 ${pathname}`);
    }
  });
  return new Promise((resolve) => server.listen(Number(port), host, () => resolve(server)));
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const args = process.argv.slice(2);
  const packageDir = option(args, '--package', path.join(ROOT, '..', 'elmo_runtime', 'default'));
  const server = await serve({ packageDir, port: option(args, '--port', 8023), host: option(args, '--host', '127.0.0.1') });
  const { address, port } = server.address();
  process.stdout.write(`serving http://${address}:${port}/ (package: ${path.resolve(packageDir)}); Ctrl-C stops\n`);
}
