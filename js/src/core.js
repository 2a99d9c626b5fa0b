// ELMo from an elmo-onnx package (format 3), written from docs/package-format.md: the part shared
// by Node and the browser. It takes bytes and returns arrays; the caller supplies ONNX Runtime
// (onnxruntime-node or onnxruntime-web) and a `read(name) -> Promise<Uint8Array>` for the
// package's files (node.js: the file system; web.js: fetch).

import { externalTensors, inlineExternalData, GraphFormatError } from './protobuf.js';
import { tokenize } from './tokenize.js';

export const FORMAT_VERSION = 3;
export const MANIFEST = 'elmo.json';
const BILM_INPUTS = ['token_embeddings', 'mask', 'initial_h', 'initial_c', 'sentence_edges'];
const OUTPUTS = { token_embedder: ['token_embeddings', 'mask'], bilm: ['layers', 'final_h', 'final_c'] };
// The manifest fields this client reads (docs/package-format.md, "Required fields").
const REQUIRED = [
  'format_version', 'architecture.lstm.n_layers', 'architecture.lstm.projection_dim', 'architecture.lstm.dim',
  'chars.scheme', 'chars.max_characters_per_token', 'chars.id_offset', 'chars.padding_row_id',
  'graphs.token_embedder.file', 'graphs.bilm.file', 'precision.name', 'initial_state.mode',
  'initial_state.dtype', 'initial_state.axes', 'initial_state.directions', 'initial_state.batch_axis',
  'initial_state.h', 'initial_state.c', 'sentences.boundaries', 'sentences.empty', 'sentences.padding',
  'conformance.file', 'files', 'parity.passed',
];
// What this client implements of each rule; another value is refused by name.
const IMPLEMENTS = {
  'chars.scheme': 'bytes', 'chars.id_offset': 1, 'chars.padding_row_id': 0, 'chars.bytes.unencodable': 'drop',
  'initial_state.dtype': 'float32', 'initial_state.batch_axis': 2, 'sentences.boundaries': 'bilm_graph',
  'sentences.empty': 'omit', 'sentences.padding': 'trailing_zero_rows', 'parity.passed': true,
};
const BOUNDARY_TOKENS = 2;  // <S> and </S>, added by the bilm graph

export class PackageError extends Error {}

function field(manifest, dotted, source) {
  let node = manifest;
  for (const key of dotted.split('.')) {
    if (node === null || typeof node !== 'object' || !(key in node)) throw new PackageError(`${source}: missing field '${dotted}'`);
    node = node[key];
  }
  return node;
}

/** A file name of the package: '/'-separated parts, none empty, '.' or '..', no '\\' or ':'. */
export function checkName(name, what, source) {
  if (typeof name !== 'string' || !name || name.startsWith('/') || /[\\:]/.test(name)
      || name.split('/').some((p) => p === '' || p === '.' || p === '..')) {
    throw new PackageError(`${source}: ${what} ${JSON.stringify(name)} is not a plain file name inside the package`);
  }
  return name;
}

/** Check a manifest (parsed elmo.json); throws PackageError naming the field. */
export function checkManifest(manifest, source) {
  if (manifest === null || typeof manifest !== 'object') throw new PackageError(`${source}: not a JSON object`);
  const version = manifest.format_version;
  if (version !== FORMAT_VERSION) {
    const hint = Number.isInteger(version) && version < FORMAT_VERSION
      ? 'export the package again with elmo-export' : 'this client reads only that version';
    throw new PackageError(`${source}: package format version ${JSON.stringify(version)}; this client reads ${FORMAT_VERSION} (${hint})`);
  }
  for (const f of REQUIRED) field(manifest, f, source);
  for (const [f, want] of Object.entries(IMPLEMENTS)) {
    const found = field(manifest, f, source);
    if (found !== want) throw new PackageError(`${source}: ${f} is ${JSON.stringify(found)}; this client implements ${JSON.stringify(want)}`);
  }
  const enc = String(field(manifest, 'chars.bytes.encoding', source));
  if (enc.toLowerCase() !== 'utf-8') throw new PackageError(`${source}: chars.bytes.encoding is ${JSON.stringify(enc)}; this client implements "utf-8"`);
  const W = manifest.chars.max_characters_per_token;
  if (field(manifest, 'chars.bytes.max_token_bytes', source) !== W - 2) {
    throw new PackageError(`${source}: chars.bytes.max_token_bytes is ${manifest.chars.bytes.max_token_bytes}; it must be max_characters_per_token - 2`);
  }
  for (const f of ['beginning_of_word', 'end_of_word', 'padding', 'special_tokens']) field(manifest, `chars.bytes.${f}`, source);
  if (manifest.initial_state.directions.join() !== 'forward,backward') {
    throw new PackageError(`${source}: initial_state.directions is ${JSON.stringify(manifest.initial_state.directions)}; this client implements ["forward","backward"]`);
  }
  const bilmInputs = Object.keys(field(manifest, 'graphs.bilm.inputs', source));
  if (bilmInputs.join() !== BILM_INPUTS.join()) {
    throw new PackageError(`${source}: graphs.bilm.inputs are ${bilmInputs}; this client feeds ${BILM_INPUTS}`);
  }
  for (const [name, entry] of Object.entries(manifest.files)) {
    checkName(name, 'file', source);
    if (!entry || !Number.isInteger(entry.bytes) || typeof entry.sha256 !== 'string') {
      throw new PackageError(`${source}: files[${JSON.stringify(name)}] needs 'bytes' (int) and 'sha256' (str)`);
    }
  }
  return manifest;
}

export async function sha256Hex(bytes) {
  const digest = new Uint8Array(await globalThis.crypto.subtle.digest('SHA-256', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** `initial_state.sha256`, where present: sha256 of h then c as float32 little-endian bytes (docs, "Trust"). */
async function checkStateDigest(manifest, source) {
  const s = manifest.initial_state;
  if (s.sha256 === undefined) return;
  const h = Float32Array.from(s.h.flat(2)), c = Float32Array.from(s.c.flat(2));
  const bytes = new Uint8Array(h.byteLength + c.byteLength);
  bytes.set(new Uint8Array(h.buffer));
  bytes.set(new Uint8Array(c.buffer), h.byteLength);
  if (await sha256Hex(bytes) !== s.sha256) {
    throw new PackageError(`${source}: initial_state.sha256 does not match initial_state.h and c (corrupt or altered)`);
  }
}

/** Read one listed file and check its size and sha256 (`verify`); the bytes checked are the bytes returned. */
async function readListed(read, manifest, name, source, verify) {
  const entry = manifest.files[name];
  if (!entry) throw new PackageError(`${source}: '${name}' is not listed in 'files' (no size or sha256 to check)`);
  let bytes;
  try {
    bytes = await read(name);
  } catch (e) {
    throw new PackageError(`${source}: file '${name}' listed in the manifest cannot be read (${e.message})`);
  }
  if (bytes.length !== entry.bytes) {
    throw new PackageError(`${source}: file '${name}' has ${bytes.length} bytes, the manifest says ${entry.bytes} (corrupt or truncated)`);
  }
  if (verify && await sha256Hex(bytes) !== entry.sha256) {
    throw new PackageError(`${source}: file '${name}' does not match its sha256 in the manifest (corrupt or altered)`);
  }
  return bytes;
}

/** A graph's bytes with its external weights inline, every file read once and verified. */
async function verifiedGraph(read, manifest, graph, source, verify) {
  const file = checkName(manifest.graphs[graph].file, `graphs.${graph}.file`, source);
  const model = await readListed(read, manifest, file, source, verify);
  const folder = file.includes('/') ? file.slice(0, file.lastIndexOf('/') + 1) : '';
  let tensors;
  try {
    tensors = externalTensors(model);
  } catch (e) {
    throw new PackageError(`${source}: graph file '${file}' is not a valid ONNX file (${e.message})`);
  }
  const files = {};
  for (const t of tensors) {
    checkName(t.location, `external data of ${file} (tensor '${t.name}')`, source);
    if (t.inSubgraph) throw new PackageError(`${source}: ${file} keeps tensor '${t.name}' of a subgraph in external data; format 3 keeps only main-graph initializers there`);
    files[t.location] ||= await readListed(read, manifest, folder + t.location, source, verify);
  }
  try {
    return tensors.length ? inlineExternalData(model, files) : model;
  } catch (e) {
    if (e instanceof GraphFormatError) throw new PackageError(`${source}: ${file}: ${e.message}`);
    throw e;
  }
}

/** A token's UTF-8 bytes, lone surrogates dropped (chars.bytes.unencodable "drop"). */
function utf8Bytes(token) {
  let kept = '';
  for (const ch of token) {
    const cp = ch.codePointAt(0);
    if (cp < 0xd800 || cp > 0xdfff) kept += ch;
  }
  return new TextEncoder().encode(kept);
}

/** Char ids of one token, the "bytes" scheme: `max_characters_per_token` ints. */
export function tokenCharIds(token, chars) {
  const b = chars.bytes;
  const row = new Array(chars.max_characters_per_token).fill(b.padding);
  row[0] = b.beginning_of_word;
  if (Object.prototype.hasOwnProperty.call(b.special_tokens, token)) {
    row[1] = b.special_tokens[token];
    row[2] = b.end_of_word;
  } else {
    const bytes = utf8Bytes(token).subarray(0, b.max_token_bytes);
    bytes.forEach((byte, i) => { row[1 + i] = byte; });
    row[1 + bytes.length] = b.end_of_word;
  }
  return row.map((id) => id + chars.id_offset);
}

export { tokenize };

/** `layers` option -> 'all', a layer index, or float32 weights (as the Python runtime's `layers`). */
function layerMix(layers, n) {
  if (layers === undefined || layers === 'all') return 'all';
  if (layers === 'top') return n - 1;
  if (layers === 'average') return new Array(n).fill(Math.fround(1 / n));
  if (Number.isInteger(layers) && layers >= -n && layers < n) return (layers + n) % n;
  if (Array.isArray(layers) && layers.length === n && layers.every(Number.isFinite)) return layers.map(Math.fround);
  throw new RangeError(`layers is ${JSON.stringify(layers)}; choose 'all', 'top', 'average', a layer index in ${-n}..${n - 1}, or ${n} weights`);
}

/** One sentence's `(L + 1, n, dim)` layers mixed as `mix` says: `{dims, data}`. */
function mixed(all, L1, n, dim, mix) {
  if (mix === 'all') return { dims: [L1, n, dim], data: all };
  if (Number.isInteger(mix)) return { dims: [n, dim], data: all.slice(mix * n * dim, (mix + 1) * n * dim) };
  const data = new Float32Array(n * dim);
  for (let k = 0; k < L1; k++) {
    for (let i = 0; i < n * dim; i++) data[i] = Math.fround(data[i] + Math.fround(mix[k] * all[k * n * dim + i]));
  }
  return { dims: [n, dim], data };
}

/** Per leading index (a layer): max abs difference and min cosine of the last axis' vectors. */
export function compare(got, want) {
  const D = want.dims[want.dims.length - 1];
  const L1 = want.dims.length === 3 ? want.dims[0] : 1;
  const per = want.data.length / L1;
  const out = [];
  for (let k = 0; k < L1; k++) {
    let maxAbs = 0, minCos = 1;
    for (let t = 0; t < per / D; t++) {
      let dot = 0, ng = 0, nw = 0, same = true;
      for (let d = 0; d < D; d++) {
        const i = k * per + t * D + d, g = got.data[i], w = want.data[i];
        const diff = Math.abs(g - w);
        maxAbs = Number.isNaN(diff) ? NaN : Math.max(maxAbs, diff);
        dot += g * w; ng += g * g; nw += w * w; same = same && g === w;
      }
      const cos = ng === 0 || nw === 0 ? (same ? 1 : 0) : dot / Math.sqrt(ng * nw);
      minCos = Number.isNaN(cos) ? NaN : Math.min(minCos, cos);
    }
    out.push({ layer: k, max_abs: maxAbs, min_cosine: minCos });
  }
  return out;
}

export class Elmo {
  constructor({ ort, manifest, tokenEmbedder, bilm, read, source, verify }) {
    Object.assign(this, { ort, manifest, tokenEmbedder, bilm, read, source, verifyFiles: verify });
    const lstm = manifest.architecture.lstm;
    this.nLayers = lstm.n_layers;
    this.projectionDim = lstm.projection_dim;
    this.cellDim = lstm.dim;
    this.dim = 2 * lstm.projection_dim;
    this.batchTokens = 512;  // token positions per bilm call, <S> and </S> included (the Python runtime's CPU default)
  }

  /**
   * Open a package: every graph and weights file read once, size and sha256 checked, before any
   * session exists; the sessions are made from those bytes. Throws PackageError naming the file
   * or field; nothing is left half-loaded.
   */
  static async open({ ort, read, source, verify = true, sessionOptions = {} }) {
    const where = `${source}/${MANIFEST}`;
    let manifest;
    try {
      manifest = JSON.parse(new TextDecoder().decode(await read(MANIFEST)));
    } catch (e) {
      throw new PackageError(`${where}: cannot read the manifest (${e.message})`);
    }
    checkManifest(manifest, where);
    await checkStateDigest(manifest, where);
    const graphs = {};
    for (const graph of ['token_embedder', 'bilm']) graphs[graph] = await verifiedGraph(read, manifest, graph, source, verify);
    const options = { graphOptimizationLevel: 'all', logSeverityLevel: 3, ...sessionOptions };
    const sessions = [];
    try {
      for (const graph of ['token_embedder', 'bilm']) {
        sessions.push(await ort.InferenceSession.create(graphs[graph], options));
        delete graphs[graph];
      }
    } catch (e) {
      await Promise.all(sessions.map((s) => s.release()));
      throw new PackageError(`${source}: ONNX Runtime cannot load ${manifest.graphs[Object.keys(graphs)[0]].file} (${String(e.message).split('\n')[0]})`);
    }
    const [tokenEmbedder, bilm] = sessions;
    const missing = BILM_INPUTS.filter((n) => !bilm.inputNames.includes(n))
      .concat(OUTPUTS.bilm.filter((n) => !bilm.outputNames.includes(n)), OUTPUTS.token_embedder.filter((n) => !tokenEmbedder.outputNames.includes(n)));
    if (missing.length) {
      await Promise.all(sessions.map((s) => s.release()));
      throw new PackageError(`${source}: the graphs lack ${missing.join(', ')} (the package contract)`);
    }
    return new this({ ort, manifest, tokenEmbedder, bilm, read, source, verify });  // the subclass open was called on
  }

  async release() { await Promise.all([this.tokenEmbedder.release(), this.bilm.release()]); }

  get defaultState() { return this.manifest.initial_state.mode; }
  get precision() { return this.manifest.precision.name; }

  tokenize(text) { return tokenize(text); }

  charIds(tokens) { return tokens.map((t) => tokenCharIds(t, this.manifest.chars)); }

  /** `h (L, 2, rows, P)` and `c (L, 2, rows, D)`, every row the package's warm state or zeros. */
  initialState(state, rows) {
    if (state !== 'warm' && state !== 'zero') throw new RangeError(`state is ${JSON.stringify(state)}; choose 'warm' or 'zero'`);
    const s = this.manifest.initial_state;
    if (state === 'warm' && s.mode !== 'warm') throw new RangeError(`${this.source} has no warm state; use state 'zero'`);
    const spread = (values, units) => {
      const flat = Float32Array.from(values.flat(2));
      const out = new Float32Array(this.nLayers * 2 * rows * units);
      if (state === 'zero') return out;
      for (let ld = 0; ld < this.nLayers * 2; ld++) {
        for (let b = 0; b < rows; b++) out.set(flat.subarray(ld * units, (ld + 1) * units), (ld * rows + b) * units);
      }
      return out;
    };
    return { h: spread(s.h, this.projectionDim), c: spread(s.c, this.cellDim), rows };
  }

  /** Both graphs on one padded batch. `edges`: per row [has <S>, has </S>] (default: whole sentences). */
  async run(batch, state, edges = [[1, 1]]) {
    const B = batch.length, T = Math.max(1, ...batch.map((s) => s.length)), W = this.manifest.chars.max_characters_per_token;
    const ids = new Int32Array(B * T * W).fill(this.manifest.chars.padding_row_id);
    batch.forEach((tokens, b) => this.charIds(tokens).forEach((row, t) => ids.set(row, (b * T + t) * W)));
    const { Tensor } = this.ort;
    const embedded = await this.tokenEmbedder.run({ char_ids: new Tensor('int32', ids, [B, T, W]) });
    const L = this.nLayers;
    const result = await this.bilm.run({
      token_embeddings: embedded.token_embeddings,
      mask: embedded.mask,
      initial_h: new Tensor('float32', state.h, [L, 2, B, this.projectionDim]),
      initial_c: new Tensor('float32', state.c, [L, 2, B, this.cellDim]),
      sentence_edges: new Tensor('int64', BigInt64Array.from(edges.flat(), (v) => BigInt(v ? 1 : 0)), [edges.length, 2]),
    });
    for (const t of Object.values(embedded)) t.dispose?.();
    return { layers: result.layers.data, T, h: result.final_h.data, c: result.final_c.data, rows: B };
  }

  /** Row `b`'s `(L + 1, n, dim)` layers out of a batch's `(L + 1, B, T, dim)`. */
  rowLayers(out, b, n) {
    const L1 = this.nLayers + 1, D = this.dim, data = new Float32Array(L1 * n * D);
    for (let k = 0; k < L1; k++) {
      const start = ((k * out.rows + b) * out.T) * D;
      data.set(out.layers.subarray(start, start + n * D), k * n * D);
    }
    return data;
  }

  /** Rows `[from, to)` of each (layer, direction) of a state `(L, 2, rows, X)`, as a `to - from` row state. */
  static rowsOf(values, rows, units, from, to) {
    const ld = values.length / (rows * units), out = new Float32Array(ld * (to - from) * units);
    for (let i = 0; i < ld; i++) out.set(values.subarray((i * rows + from) * units, (i * rows + to) * units), i * (to - from) * units);
    return out;
  }

  /** Stack states along the row axis: each `{h, c, rows}`. */
  stackRows(states) {
    const rows = states.reduce((n, s) => n + s.rows, 0), L2 = this.nLayers * 2;
    const stack = (key, units) => {
      const out = new Float32Array(L2 * rows * units);
      for (let i = 0; i < L2; i++) {
        let at = i * rows * units;
        for (const s of states) { out.set(s[key].subarray(i * s.rows * units, (i + 1) * s.rows * units), at); at += s.rows * units; }
      }
      return out;
    };
    return { h: stack('h', this.projectionDim), c: stack('c', this.cellDim), rows };
  }

  /** One direction (0 forward, 1 backward) of a one-row state taken from `from`, the other from `other`. */
  pickDirection(from, other, direction) {
    const P = this.projectionDim, Dc = this.cellDim, out = { h: other.h.slice(), c: other.c.slice(), rows: 1 };
    for (let l = 0; l < this.nLayers; l++) {
      const i = l * 2 + direction;
      out.h.set(from.h.subarray(i * P, (i + 1) * P), i * P);
      out.c.set(from.c.subarray(i * Dc, (i + 1) * Dc), i * Dc);
    }
    return out;
  }

  /**
   * One sentence in time chunks of `size` tokens (docs/package-format.md, "Time chunks"): call k
   * runs chunk k for the forward direction and chunk K-1-k for the backward one, each row carrying
   * its own direction's state. Returns the `(L + 1, n, dim)` layers and the sentence's final state
   * (forward from the last chunk, backward from the first chunk's backward run).
   */
  async runInChunks(tokens, start, size) {
    const n = tokens.length, P = this.projectionDim, D = this.dim, L1 = this.nLayers + 1;
    const spans = [];
    for (let s = 0; s < n; s += size) spans.push([s, Math.min(s + size, n)]);
    const last = spans.length - 1, data = new Float32Array(L1 * n * D);
    let forward = start, backward = start;
    for (let k = 0; k <= last; k++) {
      const [fs, fe] = spans[k], [bs, be] = spans[last - k];
      const out = await this.run([tokens.slice(fs, fe), tokens.slice(bs, be)], this.stackRows([forward, backward]),
        [[k === 0, k === last], [last - k === 0, last - k === last]]);
      for (let l = 0; l < L1; l++) {
        for (let t = fs; t < fe; t++) {
          const src = ((l * 2 + 0) * out.T + (t - fs)) * D;
          data.set(out.layers.subarray(src, src + P), (l * n + t) * D);
        }
        for (let t = bs; t < be; t++) {
          const src = ((l * 2 + 1) * out.T + (t - bs)) * D + P;
          data.set(out.layers.subarray(src, src + P), (l * n + t) * D + P);
        }
      }
      const row = (b) => ({ h: Elmo.rowsOf(out.h, 2, P, b, b + 1), c: Elmo.rowsOf(out.c, 2, this.cellDim, b, b + 1), rows: 1 });
      forward = row(0);
      backward = row(1);
    }
    return { data, final: this.pickDirection(forward, backward, 0) };
  }

  /**
   * Embed sentences (token arrays, or raw text that `tokenize` splits), every one from the same
   * initial state. Returns one `{dims, data, tokens}` per sentence: `data` a Float32Array, C
   * order, `dims` `[L + 1, n, dim]` (layers 'all') or `[n, dim]`. A sentence with no tokens is
   * not run (`sentences.empty: "omit"`) and gets `n = 0`.
   */
  async embed(sentences, { layers = 'all', state, batchTokens } = {}) {
    state ||= this.defaultState;
    const budget = batchTokens || this.batchTokens;
    if (!Number.isInteger(budget) || budget < 2 * (1 + BOUNDARY_TOKENS)) throw new RangeError(`batchTokens is ${budget}; at least 6`);
    const mix = layerMix(layers, this.nLayers + 1);
    const token = sentences.map((s) => (typeof s === 'string' ? tokenize(s) : s));
    const all = token.map((t) => new Float32Array((this.nLayers + 1) * t.length * this.dim));
    let batch = [];
    const flush = async () => {
      if (!batch.length) return;
      const out = await this.run(batch.map((i) => token[i]), this.initialState(state, batch.length));
      batch.forEach((i, b) => { all[i] = this.rowLayers(out, b, token[i].length); });
      batch = [];
    };
    for (const [i, tokens] of token.entries()) {
      if (!tokens.length) continue;
      if (tokens.length + BOUNDARY_TOKENS > budget) {
        all[i] = (await this.runInChunks(tokens, this.initialState(state, 1), Math.floor(budget / 2) - BOUNDARY_TOKENS)).data;
        continue;
      }
      const longest = Math.max(tokens.length, ...batch.map((j) => token[j].length));
      if ((batch.length + 1) * (longest + BOUNDARY_TOKENS) > budget) await flush();
      batch.push(i);
    }
    await flush();
    return token.map((t, i) => ({ ...mixed(all[i], this.nLayers + 1, t.length, this.dim, mix), tokens: t }));
  }

  /**
   * A carried stream (docs/package-format.md, "Streams"): row b of a call continues from row b of
   * the previous call; rows a smaller call leaves out keep their state; new rows start from
   * `state`; an empty sentence is sent as an all-padding row, so its row's state steps through
   * <S></S>. Each call runs as one batch, as given.
   */
  stream(state) {
    state ||= this.defaultState;
    this.initialState(state, 1);  // checks the name now
    const elmo = this;
    let carried = null;
    return {
      get state() { return carried; },
      reset() { carried = null; },
      async embed(sentences, { layers = 'all' } = {}) {
        const token = sentences.map((s) => (typeof s === 'string' ? tokenize(s) : s));
        if (!token.length) return [];
        const rows = token.length, start = elmo.initialState(state, rows);
        if (carried) {
          const kept = Math.min(rows, carried.rows);
          const parts = [{ h: Elmo.rowsOf(carried.h, carried.rows, elmo.projectionDim, 0, kept), c: Elmo.rowsOf(carried.c, carried.rows, elmo.cellDim, 0, kept), rows: kept }];
          if (rows > kept) parts.push({ h: Elmo.rowsOf(start.h, rows, elmo.projectionDim, kept, rows), c: Elmo.rowsOf(start.c, rows, elmo.cellDim, kept, rows), rows: rows - kept });
          Object.assign(start, elmo.stackRows(parts));
        }
        const out = await elmo.run(token, start);
        let next = { h: out.h, c: out.c, rows };
        if (carried && carried.rows > rows) {
          next = elmo.stackRows([next, { h: Elmo.rowsOf(carried.h, carried.rows, elmo.projectionDim, rows, carried.rows), c: Elmo.rowsOf(carried.c, carried.rows, elmo.cellDim, rows, carried.rows), rows: carried.rows - rows }]);
        }
        carried = next;
        const mix = layerMix(layers, elmo.nLayers + 1);
        return token.map((t, b) => ({ ...mixed(elmo.rowLayers(out, b, t.length), elmo.nLayers + 1, t.length, elmo.dim, mix), tokens: t }));
      },
    };
  }
}
