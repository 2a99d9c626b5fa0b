// Test and benchmark driver: node js/test/browser.mjs < request.json
// Opens the page in Debian's headless chromium (puppeteer-core: no browser download), loads the
// package, and in the page: embeds `sentences` (float32 bytes back in base64), runs the
// self-check, optionally times loads and sentences, and takes a screenshot.
// request: {url, userDataDir, screenshot?, threads?, packageUrl?, folder?, sentences?, selfCheck?, damaged?, bench?}
import puppeteer from 'puppeteer-core';

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const request = JSON.parse(Buffer.concat(chunks).toString('utf8'));

const browser = await puppeteer.launch({
  executablePath: request.executablePath || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', `--user-data-dir=${request.userDataDir}`],
});
const out = { console: [] };
try {
  const page = await browser.newPage();
  page.on('console', (m) => out.console.push(m.text()));
  page.on('pageerror', (e) => out.console.push(`pageerror: ${e.message}`));
  await page.setViewport({ width: 1200, height: 900 });
  await page.goto(request.url, { waitUntil: 'load' });
  await page.waitForFunction(() => window.elmoPage && window.elmoPage.load, { timeout: 60000 });
  if (request.offline) {  // the package's files must go through the worker to be cached
    await page.evaluate(async () => {
      await navigator.serviceWorker.ready;
      if (!navigator.serviceWorker.controller) await new Promise((r) => navigator.serviceWorker.addEventListener('controllerchange', r, { once: true }));
    });
  }
  out.crossOriginIsolated = await page.evaluate(() => globalThis.crossOriginIsolated);
  if (request.damaged) {
    // Load a (damaged) package through the library: the error message, and that nothing loaded.
    out.damaged = await page.evaluate(async (url) => {
      const { Elmo } = await import('/src/web.js');
      try { await Elmo.load(url, { wasmPaths: '/ort/' }); return { loaded: true }; } catch (e) { return { loaded: false, error: e.message }; }
    }, request.damaged);
  }
  if (request.threads) await page.select('#threads', String(request.threads));
  if (request.packageUrl) {
    await page.select('#package', 'url');
    await page.type('#package-url', request.packageUrl);
  }
  if (request.folder) {  // "a folder on this computer": picked in the browser's file chooser, as a user does
    await page.select('#package', 'folder');
    const [chooser] = await Promise.all([page.waitForFileChooser(), page.click('#package-folder')]);
    await chooser.accept([request.folder]);
    out.picked = await page.$eval('#package-folder', (e) => [...e.files].map((f) => f.webkitRelativePath));
  }
  const started = Date.now();
  await page.click('#load');
  await page.waitForFunction(() => document.getElementById('status').className !== '', { timeout: 120000 });
  out.status = await page.$eval('#status', (e) => e.textContent);
  out.loadWallMs = Date.now() - started;
  out.loadMs = await page.evaluate(() => window.elmoPage.loadMs);
  out.threads = await page.evaluate(async () => (await import('/src/web.js')).Elmo.threads);
  if (request.sentences) {
    out.embedded = await page.evaluate(async (sentences, options) => {
      const results = await window.elmoPage.elmo.embed(sentences, options);
      const b64 = (data) => { let s = ''; const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength); for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000)); return btoa(s); };
      return results.map((r) => ({ dims: r.dims, tokens: r.tokens, float32_base64: b64(r.data) }));
    }, request.sentences, request.options || {});
  }
  if (request.selfCheck) {
    out.selfCheck = await page.evaluate(async () => {
      const r = await window.elmoPage.selfCheck();
      return { passed: r.passed, failures: r.failures, checks: r.checks.length, tokenizerCases: r.tokenizerCases, worst: r.worst };
    });
  }
  if (request.bench) {
    out.bench = await page.evaluate(async (sentences, repeats) => {
      const elmo = window.elmoPage.elmo;
      await elmo.embed([sentences[0]]);  // warm-up
      const times = [];
      for (let r = 0; r < repeats; r++) for (const s of sentences) { const t = performance.now(); await elmo.embed([s]); times.push(performance.now() - t); }
      return times;
    }, request.bench.sentences, request.bench.repeats);
  }
  if (request.offline) {
    // The service worker has cached the page and the package: offline, a reload loads it again.
    await page.evaluate(async () => { await navigator.serviceWorker.ready; });
    await page.setOfflineMode(true);
    await page.reload({ waitUntil: 'load' });
    await page.waitForFunction(() => window.elmoPage && window.elmoPage.load, { timeout: 60000 });
    if (request.packageUrl) {
      await page.select('#package', 'url');
      await page.type('#package-url', request.packageUrl);
    }
    await page.click('#load');
    await page.waitForFunction(() => document.getElementById('status').className !== '', { timeout: 120000 });
    out.offlineStatus = await page.$eval('#status', (e) => e.textContent);
    await page.setOfflineMode(false);
  }
  if (request.screenshot) {
    await page.click('#embed');
    await page.waitForSelector('#heatmap table', { timeout: 60000 });
    await page.screenshot({ path: request.screenshot, fullPage: true });
  }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out));
