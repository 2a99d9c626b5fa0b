// The package's conformance vectors (conformance.json) run through this client: the self-check.

import { compare, PackageError, sha256Hex } from './core.js';
import { tokenize } from './tokenize.js';

function decode(entry, where) {
  if (!entry || !Array.isArray(entry.shape) || typeof entry.float32_base64 !== 'string') {
    throw new Error(`${where}: expected {shape, float32_base64}`);
  }
  const raw = atob(entry.float32_base64);
  const count = entry.shape.reduce((a, b) => a * b, 1);
  if (raw.length !== 4 * count) throw new Error(`${where}: ${raw.length} bytes for shape ${entry.shape}`);
  const view = new DataView(Uint8Array.from(raw, (ch) => ch.charCodeAt(0)).buffer);
  const data = new Float32Array(count);
  for (let i = 0; i < count; i++) data[i] = view.getFloat32(4 * i, true);  // little-endian
  return { dims: entry.shape, data };
}

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

// Each precision's own bar (elmo_runtime/conformance.py CONFORMANCE_TOLERANCES): the one in conformance.json is
// informational, so that a tampered file cannot lower it.
export const TOLERANCES = {
  fp32: { max_abs: 1e-4, min_cosine: null },
  fp16: { max_abs: 2e-2, min_cosine: 0.9999 },
  int8: { max_abs: 1e-1, min_cosine: 0.999 },
  int4: { max_abs: 1e-2, min_cosine: 0.9999 },
};

/**
 * Run `elmo` on its package's conformance vectors. Never throws for a mismatch: returns
 * `{passed, precision, tolerance, worst, failures, checks}`, one failure line per sentence,
 * state and layer out of tolerance (or case that failed).
 */
export async function verify(elmo) {
  const failures = [], checks = [];
  const file = elmo.manifest.conformance.file;
  let doc;
  try {
    const entry = elmo.manifest.files[file];
    if (!entry) throw new PackageError(`'${file}' is not listed in 'files'`);
    const bytes = await elmo.read(file);
    if (bytes.length !== entry.bytes || await sha256Hex(bytes) !== entry.sha256) throw new PackageError(`file '${file}' does not match its size or sha256 in the manifest`);
    doc = JSON.parse(new TextDecoder().decode(bytes));
    if (doc.format_version !== elmo.manifest.format_version || doc.precision !== elmo.precision) {
      throw new PackageError(`${file} is format ${doc.format_version} ${doc.precision}, the manifest ${elmo.manifest.format_version} ${elmo.precision}`);
    }
  } catch (e) {
    return { passed: false, failures: [`package: ${e.message}`], checks };
  }
  const tol = TOLERANCES[elmo.precision];
  if (!tol) return { passed: false, failures: [`package: precision.name ${JSON.stringify(elmo.precision)} has no conformance bar`], checks };
  const judge = (where, got, want, tags) => {
    if (got.dims.join() !== want.dims.join()) { failures.push(`${where}: shape [${got.dims}], expected [${want.dims}]`); return; }
    for (const l of compare(got, want)) {
      checks.push({ ...tags, ...l });
      const at = `${where}, layer ${l.layer}`;
      if (!Number.isFinite(l.max_abs)) failures.push(`${at}: non-finite values`);
      else if (l.max_abs > tol.max_abs) failures.push(`${at}: max abs difference ${l.max_abs.toPrecision(3)} > ${tol.max_abs}`);
      else if (tol.min_cosine !== null && l.min_cosine < tol.min_cosine) failures.push(`${at}: min cosine ${l.min_cosine.toFixed(6)} < ${tol.min_cosine}`);
    }
  };
  const guarded = async (where, run) => {
    try { await run(); } catch (e) { failures.push(`${where}: ${e.message}`); }
  };
  for (const [i, s] of doc.sentences.entries()) {
    const where = `sentence ${i} (${JSON.stringify(s.name)})`;
    if (!same(elmo.charIds(s.tokens), s.char_ids)) failures.push(`${where}: char ids differ from the file's`);
    for (const [state, entry] of Object.entries(s.expected)) {
      await guarded(`${where}, state ${state}`, async () => {
        const [got] = await elmo.embed([s.tokens], { state });
        judge(`${where}, state ${state}`, got, decode(entry, where), { sentence: i, name: s.name, state });
      });
    }
  }
  if (doc.time_chunks) await timeChunks(elmo, doc.time_chunks, judge, guarded, failures);
  if (doc.stream) await stream(elmo, doc.stream, judge, guarded);
  let tokenizerCases = 0;
  for (const [i, c] of (doc.tokenizer?.cases || []).entries()) {
    tokenizerCases += 1;
    const got = tokenize(c.text);
    if (!same(got, c.tokens)) failures.push(`tokenizer case ${i} (${JSON.stringify(c.text.slice(0, 40))}): ${JSON.stringify(got)} differ from ${JSON.stringify(c.tokens)}`);
  }
  const worst = checks.length
    ? { max_abs: Math.max(...checks.map((c) => c.max_abs)), min_cosine: Math.min(...checks.map((c) => c.min_cosine)) }
    : null;
  return { passed: failures.length === 0 && checks.length > 0, precision: elmo.precision, tolerance: tol, worst, tokenizerCases, failures, checks };
}

/** The time-chunks case: layers and final state of a sentence run in chunks of `chunk_tokens`. */
async function timeChunks(elmo, chunks, judge, guarded, failures) {
  if (!same(elmo.charIds(chunks.tokens), chunks.char_ids)) failures.push('time chunks: char ids differ from the file\'s');
  for (const [state, entry] of Object.entries(chunks.expected)) {
    await guarded(`time chunks, state ${state}`, async () => {
      const run = await elmo.runInChunks(chunks.tokens, elmo.initialState(state, 1), chunks.chunk_tokens);
      const L1 = elmo.nLayers + 1;
      judge(`time chunks, state ${state}`, { dims: [L1, chunks.tokens.length, elmo.dim], data: run.data },
        decode(entry.layers, 'time chunks'), { case: 'time chunks', state });
      for (const key of ['h', 'c']) {
        const want = decode(entry[`final_${key}`], `final_${key}`);
        const dims = [1, want.dims[0] * 2, want.dims[2]];  // (L, 2, X) compared as one "layer" of 2L vectors
        judge(`time chunks, state ${state}, final_${key}`, { dims, data: run.final[key] }, { dims, data: want.data },
          { case: `time chunks final_${key}`, state });
      }
    });
  }
}

/** The stream case: the calls through one stream, each row against its expected layers. */
async function stream(elmo, doc, judge, guarded) {
  for (const [state, calls] of Object.entries(doc.expected)) {
    await guarded(`stream, state ${state}`, async () => {
      const carried = elmo.stream(state);
      for (const [k, batch] of doc.calls.entries()) {
        const got = await carried.embed(batch);
        calls[k].forEach((entry, b) => judge(`stream call ${k} row ${b}, state ${state}`, got[b], decode(entry, 'stream'),
          { case: `stream ${k}.${b}`, state }));
      }
    });
  }
}
