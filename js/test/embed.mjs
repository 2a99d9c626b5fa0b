// Test helper: node js/test/embed.mjs < request.json
// request: {package, sentences, options?, stream?: [[...batch], ...]}; prints each result's
// dims and its float32 bytes in base64 (exact), or the one-line error.
import { Elmo } from '../src/node.js';

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const request = JSON.parse(Buffer.concat(chunks).toString('utf8'));
const encode = (r) => ({ dims: r.dims, tokens: r.tokens, float32_base64: Buffer.from(r.data.buffer, r.data.byteOffset, r.data.byteLength).toString('base64') });
try {
  const elmo = await Elmo.load(request.package, request.load || {});
  let out;
  if (request.stream) {
    const stream = elmo.stream(request.options?.state);
    out = [];
    for (const batch of request.stream) out.push((await stream.embed(batch)).map(encode));
  } else {
    out = (await elmo.embed(request.sentences, request.options || {})).map(encode);
  }
  process.stdout.write(JSON.stringify(out));
} catch (e) {
  process.stderr.write(`${e.constructor.name}: ${e.message}\n`);
  process.exitCode = 1;
}
