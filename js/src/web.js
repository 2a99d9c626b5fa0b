// Browser entry: the core with onnxruntime-web (wasm) and fetch. The page maps the bare name
// 'onnxruntime-web' to the served `ort.wasm.min.mjs` with an import map (no bundler, no CDN).
//
//   import { Elmo } from './src/web.js';
//   const elmo = await Elmo.load(new URL('package/', location.href));
//   const [v] = await elmo.embed(['The cat sat.']);

import * as ort from 'onnxruntime-web';
import { Elmo as Core, PackageError, checkName } from './core.js';
import { verify } from './conformance.js';

export class Elmo extends Core {
  /**
   * Load a package from a URL (a folder URL ending in '/'). `threads`: wasm threads (needs a
   * cross-origin isolated page: COOP/COEP headers); `wasmPaths`: where ort's .wasm files are served.
   */
  static async load(url, { threads = 1, wasmPaths, verify: verifyFiles = true, fetchOptions = {} } = {}) {
    const base = new URL(url, globalThis.location?.href);
    if (!base.pathname.endsWith('/')) base.pathname += '/';
    ort.env.wasm.numThreads = threads > 1 && globalThis.crossOriginIsolated ? threads : 1;
    if (wasmPaths) ort.env.wasm.wasmPaths = wasmPaths;
    const read = async (name) => {
      const response = await fetch(new URL(checkName(name, 'file', base.href), base), fetchOptions);
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      return new Uint8Array(await response.arrayBuffer());
    };
    return this.open({ ort, read, source: base.href.replace(/\/$/, ''), verify: verifyFiles,
      sessionOptions: { executionProviders: ['wasm'] } });
  }

  /** Run the package's conformance vectors (see conformance.js). */
  selfCheck() { return verify(this); }

  /** The wasm threads ONNX Runtime runs with. */
  static get threads() { return ort.env.wasm.numThreads; }
}

export { PackageError, verify };
export { tokenize } from './tokenize.js';
