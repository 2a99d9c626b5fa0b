// Node.js entry: the core with onnxruntime-node and the file system.
//
//   import { Elmo } from 'elmo-onnx';
//   const elmo = await Elmo.load('path/to/package');
//   const [v] = await elmo.embed(['The cat sat.']);   // v.dims: [layers, tokens, dim]

import { readFile } from 'node:fs/promises';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { Elmo as Core, PackageError, checkName } from './core.js';
import { verify } from './conformance.js';

export class Elmo extends Core {
  /** Load a package directory; `threads`: intra-op threads per session (default: ONNX Runtime's). */
  static async load(dir, { threads, verify: verifyFiles = true } = {}) {
    const read = async (name) => new Uint8Array(await readFile(path.join(dir, checkName(name, 'file', dir))));
    const sessionOptions = { executionProviders: ['cpu'] };
    if (threads) Object.assign(sessionOptions, { intraOpNumThreads: threads, interOpNumThreads: 1 });
    return this.open({ ort, read, source: dir, verify: verifyFiles, sessionOptions });
  }

  /** Run the package's conformance vectors (see conformance.js). */
  selfCheck() { return verify(this); }
}

export { PackageError, verify };
export { tokenize } from './tokenize.js';
