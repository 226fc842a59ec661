/**
 * `npm run fuzz:emu -- [--seeds 1-200] [--ops N] [--against REAL-TRACE] [--out FILE]`: the
 * differential fuzzer's seeds on the emulated kernel (stage 1, emulated kexec, stage 2). With
 * --against (a real kernel's trace of the same seeds and ops, e.g. from
 * `node --import tsx test/vm/run.ts --only difffuzz` with LUOFUZZ_SEEDS/LUOFUZZ_OPS set), prints
 * the first differing line and exits 1 on a difference. Always prints the (operation, outcome)
 * pairs the run covered.
 */
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import { coverage, firstDifference, joinTraces, OPS, parseSeeds, runOnEmulator, SEEDS } from './fuzz.js';

const { values } = parseArgs({
  options: {
    seeds: { type: 'string' },
    ops: { type: 'string' },
    against: { type: 'string' },
    out: { type: 'string' },
  },
});
const seeds = values.seeds ? parseSeeds(values.seeds) : SEEDS;
const ops = values.ops ? Number(values.ops) : OPS;
const trace = joinTraces(await runOnEmulator(seeds, { ops, timeoutMs: 3_600_000 }));
if (values.out) fs.writeFileSync(values.out, trace, 'latin1');
const pairs = [...coverage(trace)].sort((a, b) => a[0].localeCompare(b[0]));
console.log(`${seeds.length} seeds, ${ops} operations each per stage, ${trace.split('\n').length - 1} lines`);
console.log(pairs.map(([k, v]) => `  ${k} ${v}`).join('\n'));
if (values.against) {
  const diff = firstDifference(fs.readFileSync(values.against, 'latin1'), trace);
  if (diff) {
    console.log(
      `first difference at line ${diff.line}:\n  real:     ${diff.expected}\n  emulator: ${diff.actual}`,
    );
    process.exitCode = 1;
  } else {
    console.log('identical to the real trace');
  }
}
