/**
 * The hostile-client fuzzer (test/hostile/fuzz.ts) for a fixed budget in
 * `npm test`: a fixed seed, so a failure here fails every run until it is
 * fixed. `npm run fuzz:luod` runs it longer, with new seeds.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { closeAllVms } from './crash/vms.js';
import { fuzzLuod } from './hostile/fuzz.js';

after(closeAllVms);

const SEED = 20261206;
const RUNS = 3;
const MAX_STEPS = 14;

test(`${RUNS} seeded hostile sequences against luod --emulate: alive, bounded, never the only holder, no VM lost`, async () => {
  const stats = await fuzzLuod({ seed: SEED, runs: RUNS, maxSteps: MAX_STEPS });
  const steps = stats.reduce((n, s) => n + s.steps, 0);
  const updates = stats.reduce((n, s) => n + s.updates.rebooted + s.updates.aborted, 0);
  assert.equal(stats.length, RUNS);
  assert.ok(steps >= RUNS, `${steps} steps ran`);
  console.log(`# hostile fuzz: ${RUNS} runs, ${steps} steps, ${updates} updates, ${JSON.stringify(stats)}`);
});
