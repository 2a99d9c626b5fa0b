// The page: load a package, embed the sentences, draw each word's similarity to every other.
import { Elmo, tokenize } from '/src/web.js';
import * as ort from 'onnxruntime-web';

const $ = (id) => document.getElementById(id);
const state = { elmo: null, result: null };
window.elmoPage = state;  // for tests and the console

if ('serviceWorker' in navigator) navigator.serviceWorker.register('/sw.js').catch(() => {});

const cores = navigator.hardwareConcurrency || 1;
for (const n of [...new Set([1, 2, 4, cores])].filter((n) => n <= cores).sort((a, b) => a - b)) {
  $('threads').add(new Option(n === 1 ? '1 (no SharedArrayBuffer needed)' : `${n}`, n));
}
if (!globalThis.crossOriginIsolated) $('threads').disabled = true;

$('package').addEventListener('change', () => {
  $('package-url').hidden = $('package').value !== 'url';
  $('package-folder').hidden = $('package').value !== 'folder';
});

function status(text, kind = '') {
  $('status').textContent = text;
  $('status').className = kind;
}

/** Load the package the controls name; a folder picked on this computer is read from its files. */
async function load() {
  const threads = Number($('threads').value) || 1;
  const choice = $('package').value;
  status('loading…');
  const started = performance.now();
  try {
    if (state.elmo) await state.elmo.release();
    state.elmo = null;
    if (choice === 'folder') {
      const files = {};
      for (const f of $('package-folder').files) files[f.webkitRelativePath.split('/').slice(1).join('/')] = f;
      ort.env.wasm.numThreads = threads;
      ort.env.wasm.wasmPaths = '/ort/';
      const read = async (name) => {
        if (!files[name]) throw new Error('not in the folder picked');
        return new Uint8Array(await files[name].arrayBuffer());
      };
      state.elmo = await Elmo.open({ ort, read, source: 'picked folder', sessionOptions: { executionProviders: ['wasm'] } });
    } else {
      const url = choice === 'url' ? $('package-url').value : choice;
      state.elmo = await Elmo.load(url, { threads, wasmPaths: '/ort/' });
    }
  } catch (e) {
    status(e.message, 'error');
    return;
  }
  state.loadMs = performance.now() - started;
  const m = state.elmo.manifest;
  status(`loaded ${m.precision.name}, ${m.architecture.lstm.n_layers} LSTM layers, ${2 * m.architecture.lstm.projection_dim}-d, `
    + `${ort.env.wasm.numThreads} thread(s) in ${state.loadMs.toFixed(0)} ms`, 'ok');
  $('layer').replaceChildren(...Array.from({ length: m.architecture.lstm.n_layers + 1 }, (_, k) => new Option(k === 0 ? '0 (characters only)' : `${k}`, k)),
    new Option('average', 'average'));
  $('layer').value = String(m.architecture.lstm.n_layers);
  $('embed').disabled = $('check').disabled = false;
  await embed();
}

/** Embed the sentences (all layers kept, so the layer picker needs no new run). */
async function embed() {
  const sentences = $('sentences').value.split('\n').map((s) => s.trim()).filter(Boolean);
  if (sentences.length < 2) { $('timings').textContent = 'give two or more sentences'; return; }
  const times = [];
  const results = [];
  for (const s of sentences) {
    const t = performance.now();
    results.push((await state.elmo.embed([s]))[0]);
    times.push(performance.now() - t);
  }
  state.result = results;
  const tokens = results.reduce((n, r) => n + r.tokens.length, 0);
  const median = [...times].sort((a, b) => a - b)[Math.floor(times.length / 2)];
  $('timings').textContent = `load ${state.loadMs.toFixed(0)} ms · ${results.length} sentences, ${tokens} tokens · `
    + `median ${median.toFixed(1)} ms a sentence (${times.map((t) => t.toFixed(0)).join(', ')} ms)`;
  draw();
}

/** One token's vector in the chosen layer (or the layers' average). */
function vector(result, t, layer) {
  const [L1, n, D] = result.dims;
  if (layer !== 'average') return result.data.subarray((layer * n + t) * D, (layer * n + t + 1) * D);
  const v = new Float32Array(D);
  for (let k = 0; k < L1; k++) for (let d = 0; d < D; d++) v[d] += result.data[(k * n + t) * D + d] / L1;
  return v;
}

function cosine(a, b) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return na && nb ? dot / Math.sqrt(na * nb) : 0;
}

// Low similarity pale, high dark blue; text flips to white on dark cells.
const colour = (c) => `hsl(215, 70%, ${Math.round(97 - Math.max(0, c) * 62)}%)`;

function draw() {
  const layer = $('layer').value === 'average' ? 'average' : Number($('layer').value);
  const words = state.result.flatMap((r, s) => r.tokens.map((token, t) => ({ token, s, v: vector(r, t, layer) })));
  const table = document.createElement('table');
  table.className = 'heat';
  const head = table.insertRow();
  head.appendChild(document.createElement('th'));
  words.forEach((w, j) => {
    const th = document.createElement('th');
    th.className = 'col' + (words[j + 1] && words[j + 1].s !== w.s ? ' sep-r' : '');
    th.textContent = w.token;
    head.appendChild(th);
  });
  words.forEach((a, i) => {
    const row = table.insertRow();
    const th = document.createElement('th');
    th.textContent = `${a.s + 1}: ${a.token}`;
    row.appendChild(th);
    words.forEach((b, j) => {
      const c = cosine(a.v, b.v), cell = row.insertCell();
      cell.style.background = colour(c);
      if (c > 0.6) cell.style.color = '#fff';
      cell.title = `${a.token} (sentence ${a.s + 1}) · ${b.token} (sentence ${b.s + 1}): ${c.toFixed(3)}`;
      cell.textContent = Math.round(c * 100);
      const classes = [];
      if (words[j + 1] && words[j + 1].s !== b.s) classes.push('sep-r');
      if (words[i + 1] && words[i + 1].s !== a.s) classes.push('sep-b');
      if (a.s !== b.s && a.token.toLowerCase() === b.token.toLowerCase() && /\p{L}/u.test(a.token)) classes.push('same');
      cell.className = classes.join(' ');
    });
  });
  $('heatmap').replaceChildren(table);
  // The same word in different sentences: how far its sense moved.
  const pairs = [];
  words.forEach((a, i) => words.slice(i + 1).forEach((b) => {
    // Content words only (four letters or more): "the" in every sentence says little.
    if (a.s !== b.s && a.token.toLowerCase() === b.token.toLowerCase() && /^\p{L}{4,}$/u.test(a.token)) pairs.push([a, b, cosine(a.v, b.v)]);
  }));
  const list = document.createElement('table');
  list.className = 'pairs';
  list.innerHTML = '<tr><th>same word</th><th>sentences</th><th>cosine</th></tr>';
  for (const [a, b, c] of pairs) {
    const row = list.insertRow();
    row.insertCell().textContent = a.token;
    row.insertCell().textContent = `${a.s + 1} · ${b.s + 1}`;
    row.insertCell().textContent = c.toFixed(3);
  }
  $('pairs').replaceChildren(...(pairs.length ? [list] : []));
}

async function selfCheck() {
  status('self-check…');
  const report = await state.elmo.selfCheck();
  status(report.passed
    ? `self-check passed: ${report.checks.length} layer checks, ${report.tokenizerCases} tokenizer cases, worst max abs ${report.worst.max_abs.toPrecision(2)}`
    : `self-check FAILED: ${report.failures[0]}`, report.passed ? 'ok' : 'error');
  return report;
}

$('load').addEventListener('click', load);
$('embed').addEventListener('click', embed);
$('layer').addEventListener('change', () => state.result && draw());
$('check').addEventListener('click', selfCheck);
Object.assign(state, { load, embed, selfCheck, tokenize });
if (new URLSearchParams(location.search).has('autoload')) load();
