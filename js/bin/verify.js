#!/usr/bin/env node
// node bin/verify.js PACKAGE [--json] [--threads N]
// Runs this client on the package's conformance vectors; exit 0 when every check passes, 1 otherwise,
// one line per failure naming the sentence (or case), state and layer.

import { Elmo } from '../src/node.js';

async function main(args) {
  const json = args.includes('--json');
  const t = args.indexOf('--threads');
  const threads = t >= 0 ? Number(args[t + 1]) : undefined;
  const dir = args.find((a, i) => !a.startsWith('--') && (t < 0 || i !== t + 1));
  if (!dir) {
    process.stderr.write('usage: node bin/verify.js PACKAGE [--json] [--threads N]\n');
    return 2;
  }
  let report;
  try {
    const elmo = await Elmo.load(dir, { threads });
    report = await elmo.selfCheck();
    await elmo.release();
  } catch (e) {
    report = { passed: false, failures: [`package: ${e.message}`], checks: [] };
  }
  if (json) {
    process.stdout.write(`${JSON.stringify(report, null, 1)}\n`);
  } else if (report.passed) {
    process.stdout.write(`${dir}: conformance passed (${report.precision}, JavaScript): ${report.checks.length} layer checks, `
      + `${report.tokenizerCases} tokenizer cases; worst max abs ${report.worst.max_abs.toPrecision(3)}, min cosine ${report.worst.min_cosine.toFixed(6)}\n`);
  } else {
    process.stderr.write(`${dir}: conformance FAILED (${report.failures.length} failures)\n`);
    for (const line of report.failures) process.stderr.write(`  ${line}\n`);
  }
  return report.passed ? 0 : 1;
}

main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
