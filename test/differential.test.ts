/**
 * The differential fuzzer on the emulated kernel (issue 12; docs/emulator.md): the fixed seeds
 * of test/differential/fuzz.ts, an unmodified C program under the preload shim, stage 1, an
 * emulated kexec, stage 2. Its trace must be, line by line, the real 7.2 kernel's trace of
 * the same seeds: test/differential/expected.txt (the same on 7.3), which the real-kernel bench
 * (`npm run test:vm`, part difffuzz) checks against a real kernel at every run.
 *
 * Needs a C compiler (scripts/build-native.sh builds the shim).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { before, test } from 'node:test';
import {
  EXPECTED_FILE,
  firstDifference,
  joinTraces,
  ROOT,
  runOnEmulator,
  SEEDS,
} from './differential/fuzz.js';

before(() => {
  execFileSync(path.join(ROOT, 'scripts/build-native.sh'), { stdio: ['ignore', 'ignore', 'inherit'] });
});

test('the fuzzer is deterministic: the same seed gives the same trace twice', async () => {
  const a = joinTraces(await runOnEmulator([3, 7]));
  const b = joinTraces(await runOnEmulator([3, 7]));
  assert.ok(a.split('\n').length > 100, 'a trace of some length');
  assert.equal(firstDifference(a, b), undefined);
});

test(`seeds ${SEEDS[0]}-${SEEDS.at(-1)} on the emulated kernel trace exactly as on the real 7.2 and 7.3 kernels`, async () => {
  const expected = fs.readFileSync(EXPECTED_FILE, 'latin1');
  const actual = joinTraces(await runOnEmulator(SEEDS));
  const diff = firstDifference(expected, actual);
  assert.equal(
    diff,
    undefined,
    diff &&
      `first difference at line ${diff.line}:\n  real:     ${diff.expected}\n  emulator: ${diff.actual}`,
  );
});
