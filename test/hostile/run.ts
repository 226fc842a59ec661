/**
 * `npm run fuzz:luod [-- --runs N] [--seed S] [--max-steps M]`: the hostile-client
 * fuzzer for longer than `npm test` gives it. A new seed each time unless one
 * is given; a failure prints the seed and the steps that led to it.
 */
import { parseArgs } from 'node:util';
import { closeAllVms } from '../crash/vms.js';
import { fuzzLuod } from './fuzz.js';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '20' },
    seed: { type: 'string' },
    'max-steps': { type: 'string', default: '30' },
  },
});
const seed = values.seed !== undefined ? Number(values.seed) : Date.now() % 2 ** 31;
const runs = Number(values.runs);
const maxSteps = Number(values['max-steps']);
process.stdout.write(`hostile fuzz: seed ${seed}, ${runs} runs of at most ${maxSteps} steps\n`);
const started = Date.now();
try {
  const stats = await fuzzLuod({ seed, runs, maxSteps });
  const total = (pick: (s: (typeof stats)[number]) => number) => stats.reduce((n, s) => n + pick(s), 0);
  process.stdout.write(
    `passed: ${runs} runs, ${total((s) => s.steps)} steps, ${total((s) => s.checks)} invariant checks, ` +
      `${total((s) => s.updates.rebooted)} updates completed, ${total((s) => s.updates.aborted)} aborted, ` +
      `${total((s) => s.kills)} luod kills, in ${Math.round((Date.now() - started) / 1000)} s\n`,
  );
} catch (err) {
  const cause = (err as { cause?: unknown }).cause;
  process.stdout.write(
    `FAILED (seed ${seed}):\n${(err as Error).message}\n${cause instanceof Error ? cause.message : ''}\n`,
  );
  process.exitCode = 1;
} finally {
  closeAllVms();
}
