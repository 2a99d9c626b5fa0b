// Benchmark helper: node js/test/bench.mjs < {package, threads, sentences, repeats}
// prints {loadMs, times: [ms per sentence]} (one warm-up sentence first, not timed).
import { Elmo } from '../src/node.js';

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const { package: dir, threads, sentences, repeats } = JSON.parse(Buffer.concat(chunks).toString('utf8'));
let t = performance.now();
const elmo = await Elmo.load(dir, { threads });
const loadMs = performance.now() - t;
await elmo.embed([sentences[0]]);
const times = [];
for (let r = 0; r < repeats; r++) {
  for (const s of sentences) {
    t = performance.now();
    await elmo.embed([s]);
    times.push(performance.now() - t);
  }
}
process.stdout.write(JSON.stringify({ loadMs, times }));
