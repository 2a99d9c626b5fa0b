'use strict';
// ELMo vectors from an elmo-onnx package in Node.js, written from docs/package-format.md and the
// package's elmo.json alone: tokenized sentences in, one Float32Array of layers per sentence out.
//
//   const { Elmo } = require('./elmo');
//   const elmo = await Elmo.load('path/to/package');
//   const [v] = await elmo.embed([['The', 'cat', 'sat', '.']]);  // v.dims: [layers, tokens, dim]

const fs = require('node:fs');
const path = require('node:path');
const ort = require('onnxruntime-node');

const FORMAT_VERSION = 2;
const MANIFEST = 'elmo.json';
// Graph tensor names (docs/package-format.md, "Graphs"); each is checked against the manifest.
const NAMES = {
  tokenEmbedder: { inputs: ['char_ids'], outputs: ['token_embeddings', 'mask'] },
  bilm: { inputs: ['token_embeddings', 'mask', 'initial_h', 'initial_c'], outputs: ['layers', 'final_h', 'final_c'] },
};
// The manifest fields this client reads; a package lacking one is refused, naming it.
const REQUIRED = [
  'format_version', 'architecture.lstm.n_layers', 'architecture.lstm.projection_dim', 'architecture.lstm.dim',
  'chars.scheme', 'chars.max_characters_per_token', 'chars.id_offset', 'chars.padding_row_id',
  'graphs.token_embedder.file', 'graphs.token_embedder.inputs', 'graphs.bilm.file', 'graphs.bilm.inputs',
  'precision.name', 'initial_state.mode', 'initial_state.axes', 'initial_state.directions',
  'initial_state.batch_axis', 'initial_state.h', 'initial_state.c',
  'sentences.boundaries', 'sentences.empty', 'sentences.padding', 'conformance.file', 'files',
];
// What this client implements of each rule; another value means a package it cannot run.
const IMPLEMENTS = {
  'chars.scheme': 'bytes', 'chars.bytes.encoding': 'utf-8', 'chars.bytes.unencodable': 'drop',
  'initial_state.batch_axis': 2, 'sentences.boundaries': 'bilm_graph', 'sentences.empty': 'omit',
  'sentences.padding': 'trailing_zero_rows',
};

class PackageError extends Error {}

function get(manifest, dotted, source) {
  let node = manifest;
  for (const key of dotted.split('.')) {
    if (node === null || typeof node !== 'object' || !(key in node)) {
      throw new PackageError(`${source}: missing field '${dotted}'`);
    }
    node = node[key];
  }
  return node;
}

/** Read and check a package's manifest. Throws PackageError naming the file and field. */
function readManifest(dir) {
  const source = path.join(dir, MANIFEST);
  let manifest;
  try {
    manifest = JSON.parse(fs.readFileSync(source, 'utf8'));
  } catch (e) {
    throw new PackageError(`${source}: cannot read the manifest (${e.message})`);
  }
  for (const field of REQUIRED) get(manifest, field, source);
  if (manifest.format_version !== FORMAT_VERSION) {
    throw new PackageError(`${source}: format_version is ${manifest.format_version}; this client reads ${FORMAT_VERSION}`);
  }
  for (const [field, want] of Object.entries(IMPLEMENTS)) {
    const found = get(manifest, field, source);
    if (found !== want) throw new PackageError(`${source}: ${field} is ${JSON.stringify(found)}; this client implements ${JSON.stringify(want)}`);
  }
  for (const [graph, names] of Object.entries({ token_embedder: NAMES.tokenEmbedder, bilm: NAMES.bilm })) {
    for (const kind of ['inputs', 'outputs']) {
      const declared = Object.keys(get(manifest, `graphs.${graph}.${kind}`, source));
      if (declared.join() !== names[kind].join()) {
        throw new PackageError(`${source}: graphs.${graph}.${kind} are ${declared}; this client expects ${names[kind]}`);
      }
    }
  }
  for (const [name, entry] of Object.entries(manifest.files)) {
    let size;
    try {
      size = fs.statSync(path.join(dir, name)).size;
    } catch (e) {
      throw new PackageError(`${dir}: file '${name}' listed in the manifest is missing`);
    }
    if (entry && entry.bytes !== undefined && size !== entry.bytes) {
      throw new PackageError(`${dir}: file '${name}' has ${size} bytes, the manifest says ${entry.bytes} (corrupt or truncated)`);
    }
  }
  return manifest;
}

/** A token's UTF-8 bytes, code points UTF-8 cannot encode (lone surrogates) dropped. */
function utf8Bytes(token) {
  let text = '';
  for (const ch of token) {  // by code point: a surrogate pair is one, a lone surrogate alone
    const cp = ch.codePointAt(0);
    if (cp < 0xd800 || cp > 0xdfff) text += ch;
  }
  return Buffer.from(text, 'utf8');
}

/** Char ids of one token (the "bytes" scheme): `max_characters_per_token` ints. */
function tokenCharIds(token, chars) {
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

class Elmo {
  constructor(dir, manifest, tokenEmbedder, bilm) {
    this.dir = dir;
    this.manifest = manifest;
    this.tokenEmbedder = tokenEmbedder;
    this.bilm = bilm;
    const lstm = manifest.architecture.lstm;
    this.nLayers = lstm.n_layers;
    this.projectionDim = lstm.projection_dim;
    this.cellDim = lstm.dim;
    this.dim = 2 * lstm.projection_dim;
  }

  /** Load a package: `threads` sets intra-op threads per session (default: ONNX Runtime's). */
  static async load(dir, { threads } = {}) {
    const manifest = readManifest(dir);
    // Errors only: ONNX Runtime warns at every load that the biLM's optional `sentence_edges`
    // input is an initializer a caller may override (it is, by design: docs/package-format.md).
    const options = { graphOptimizationLevel: 'all', executionProviders: ['cpu'], logSeverityLevel: 3 };
    if (threads) Object.assign(options, { intraOpNumThreads: threads, interOpNumThreads: 1 });
    const open = (graph) => ort.InferenceSession.create(path.join(dir, manifest.graphs[graph].file), options);
    return new Elmo(dir, manifest, await open('token_embedder'), await open('bilm'));
  }

  /** The package's default state: "warm" or "zero". */
  get defaultState() { return this.manifest.initial_state.mode; }

  /** Char ids of a sentence, `[tokens][max_characters_per_token]`. */
  charIds(tokens) { return tokens.map((t) => tokenCharIds(t, this.manifest.chars)); }

  /** The initial state `h (L, 2, P)` and `c (L, 2, D)`, flat, as the manifest stores it (zeros for "zero"). */
  initialState(state) {
    const s = this.manifest.initial_state;
    if (state === 'warm' && s.mode !== 'warm') throw new Error(`${this.dir} has no warm state; use state 'zero'`);
    if (state !== 'warm' && state !== 'zero') throw new Error(`state is ${JSON.stringify(state)}; choose 'warm' or 'zero'`);
    const h = Float32Array.from(s.h.flat(2));
    const c = Float32Array.from(s.c.flat(2));
    return state === 'warm' ? { h, c } : { h: h.fill(0), c: c.fill(0) };
  }

  /**
   * Embed tokenized sentences as one batch, every row from the same initial state.
   * Returns one `{ dims: [L + 1, tokens, dim], data: Float32Array }` per sentence, in order;
   * a sentence with no tokens is not run (the package's sentences.empty rule) and gets 0 tokens.
   */
  async embed(sentences, { state } = {}) {
    state = state || this.defaultState;
    const rows = sentences.map((s, i) => ({ i, tokens: s })).filter((r) => r.tokens.length > 0);
    const out = sentences.map(() => ({ dims: [this.nLayers + 1, 0, this.dim], data: new Float32Array(0) }));
    if (rows.length === 0) return out;
    const B = rows.length;
    const T = Math.max(...rows.map((r) => r.tokens.length));
    const W = this.manifest.chars.max_characters_per_token;
    // Padding: a row's real tokens first, then rows of padding_row_id (0).
    const ids = new Int32Array(B * T * W).fill(this.manifest.chars.padding_row_id);
    rows.forEach((r, b) => this.charIds(r.tokens).forEach((row, t) => ids.set(row, (b * T + t) * W)));
    const embedded = await this.tokenEmbedder.run({ char_ids: new ort.Tensor('int32', ids, [B, T, W]) });

    // The stored (L, 2, units) state gets a batch axis at 2, every row the same.
    const { h, c } = this.initialState(state);
    const broadcast = (flat, units) => {
      const data = new Float32Array(this.nLayers * 2 * B * units);
      for (let ld = 0; ld < this.nLayers * 2; ld++) {
        for (let b = 0; b < B; b++) data.set(flat.subarray(ld * units, (ld + 1) * units), (ld * B + b) * units);
      }
      return new ort.Tensor('float32', data, [this.nLayers, 2, B, units]);
    };
    const result = await this.bilm.run({
      token_embeddings: embedded.token_embeddings,
      mask: embedded.mask,
      initial_h: broadcast(h, this.projectionDim),
      initial_c: broadcast(c, this.cellDim),
    });
    const layers = result.layers.data;  // (L + 1, B, T, dim)
    const L1 = this.nLayers + 1;
    rows.forEach((r, b) => {
      const n = r.tokens.length;
      const data = new Float32Array(L1 * n * this.dim);
      for (let k = 0; k < L1; k++) {
        const start = ((k * B + b) * T) * this.dim;
        data.set(layers.subarray(start, start + n * this.dim), k * n * this.dim);
      }
      out[r.i] = { dims: [L1, n, this.dim], data };
    });
    return out;
  }
}

module.exports = { Elmo, PackageError, readManifest, tokenCharIds, utf8Bytes };
