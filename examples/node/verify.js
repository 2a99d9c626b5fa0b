#!/usr/bin/env node
'use strict';
// node verify.js PACKAGE [--json] [--threads N]
// Runs this client on the package's conformance vectors (conformance.json); exits 0 when every
// layer of every sentence is within the file's tolerance, 1 otherwise, naming sentence, state
// and layer. --json prints the per-layer figures too.

const fs = require('node:fs');
const path = require('node:path');
const { Elmo } = require('./elmo');

function decode(entry, where) {
  if (!entry || !Array.isArray(entry.shape) || typeof entry.float32_base64 !== 'string') {
    throw new Error(`${where}: expected {shape, float32_base64}`);
  }
  const bytes = Buffer.from(entry.float32_base64, 'base64');
  const count = entry.shape.reduce((a, b) => a * b, 1);
  if (bytes.length !== 4 * count) throw new Error(`${where}: ${bytes.length} bytes for shape ${entry.shape}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const data = new Float32Array(count);
  for (let i = 0; i < count; i++) data[i] = view.getFloat32(4 * i, true);  // little-endian
  return { dims: entry.shape, data };
}

/** Per layer: max abs difference and min cosine of the token vectors. */
function compare(got, want) {
  const [L1, T, D] = want.dims;
  const layers = [];
  for (let k = 0; k < L1; k++) {
    let maxAbs = 0;
    let minCos = 1;
    for (let t = 0; t < T; t++) {
      let dot = 0, ng = 0, nw = 0, same = true;
      for (let d = 0; d < D; d++) {
        const i = (k * T + t) * D + d;
        const g = got.data[i], w = want.data[i];
        const diff = Math.abs(g - w);
        maxAbs = Number.isNaN(diff) ? NaN : Math.max(maxAbs, diff);
        dot += g * w; ng += g * g; nw += w * w; same = same && g === w;
      }
      const cos = ng === 0 || nw === 0 ? (same ? 1 : 0) : dot / Math.sqrt(ng * nw);
      minCos = Number.isNaN(cos) ? NaN : Math.min(minCos, cos);
    }
    layers.push({ layer: k, max_abs: maxAbs, min_cosine: minCos });
  }
  return layers;
}

async function verify(dir, { threads } = {}) {
  const failures = [];
  const checks = [];
  let elmo, doc;
  try {
    elmo = await Elmo.load(dir, { threads });
    doc = JSON.parse(fs.readFileSync(path.join(dir, elmo.manifest.conformance.file), 'utf8'));
  } catch (e) {
    return { passed: false, failures: [`package: ${e.message}`], checks };
  }
  const tol = doc.tolerance;
  for (const [i, s] of doc.sentences.entries()) {
    const where = `sentence ${i} (${JSON.stringify(s.name)})`;
    const ids = elmo.charIds(s.tokens);
    if (JSON.stringify(ids) !== JSON.stringify(s.char_ids)) {
      const bad = ids.findIndex((row, t) => JSON.stringify(row) !== JSON.stringify(s.char_ids[t]));
      failures.push(`${where}: char ids differ from the file's at token ${bad}`);
    }
    for (const [state, entry] of Object.entries(s.expected)) {
      let got, want;
      try {
        want = decode(entry, `${where}, state ${state}`);
        [got] = await elmo.embed([s.tokens], { state });
      } catch (e) {
        failures.push(`${where}, state ${state}: ${e.message}`);
        continue;
      }
      if (got.dims.join() !== want.dims.join()) {
        failures.push(`${where}, state ${state}: layers have shape [${got.dims}], expected [${want.dims}]`);
        continue;
      }
      for (const l of compare(got, want)) {
        checks.push({ sentence: i, name: s.name, state, ...l });
        const at = `${where}, state ${state}, layer ${l.layer}`;
        if (!Number.isFinite(l.max_abs)) failures.push(`${at}: non-finite values`);
        else if (l.max_abs > tol.max_abs) failures.push(`${at}: max abs difference ${l.max_abs.toPrecision(3)} > ${tol.max_abs}`);
        else if (tol.min_cosine !== null && l.min_cosine < tol.min_cosine) failures.push(`${at}: min cosine ${l.min_cosine.toFixed(6)} < ${tol.min_cosine}`);
      }
    }
  }
  const worst = checks.length
    ? { max_abs: Math.max(...checks.map((c) => c.max_abs)), min_cosine: Math.min(...checks.map((c) => c.min_cosine)) }
    : null;
  return { passed: failures.length === 0 && checks.length > 0, precision: elmo.manifest.precision.name, tolerance: tol, worst, failures, checks };
}

async function main(argv) {
  const args = argv.slice(2);
  const json = args.includes('--json');
  const t = args.indexOf('--threads');
  const threads = t >= 0 ? Number(args[t + 1]) : undefined;
  const dir = args.find((a, i) => !a.startsWith('--') && (t < 0 || i !== t + 1));
  if (!dir) {
    process.stderr.write('usage: node verify.js PACKAGE [--json] [--threads N]\n');
    return 2;
  }
  const report = await verify(dir, { threads });
  if (json) {
    process.stdout.write(JSON.stringify(report, null, 1) + '\n');
  } else if (report.passed) {
    process.stdout.write(`${dir}: conformance passed (${report.precision}, Node.js): ${report.checks.length} layer checks; `
      + `worst max abs ${report.worst.max_abs.toPrecision(3)}, min cosine ${report.worst.min_cosine.toFixed(6)}\n`);
  } else {
    process.stderr.write(`${dir}: conformance FAILED (${report.failures.length} failures)\n`);
    for (const line of report.failures) process.stderr.write(`  ${line}\n`);
  }
  return report.passed ? 0 : 1;
}

if (require.main === module) {
  main(process.argv).then((code) => { process.exitCode = code; }, (e) => {
    process.stderr.write(`verify.js: ${e.message}\n`);
    process.exitCode = 1;
  });
}

module.exports = { verify, compare, decode };
