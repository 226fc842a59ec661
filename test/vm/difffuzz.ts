/**
 * The differential fuzzer part of the real-kernel bench (`--only difffuzz`; docs/vm.md):
 * test/differential/luofuzz.c, statically linked, runs its fixed seeds on the real
 * /dev/liveupdate (stage 1, a real kexec, stage 2: vm/guest/difffuzz.sh); the same seeds run
 * on luokit's emulated kernel on the host (under the preload shim, across an emulated kexec);
 * the two traces must be identical. A difference fails and is printed as the first differing
 * line. The real trace of the default seeds is also compared with the committed one `npm test`
 * checks the emulator against (test/differential/expected.txt), so that file cannot go stale.
 *
 * Writes build/vm/difffuzz-<kernels>/{real,emulator}.txt.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  buildFuzzer,
  buildProgram,
  coverage,
  DEFAULT_RUN,
  EXPECTED_FILE,
  firstDifference,
  joinTraces,
  OPS,
  PARITY_SCENARIOS,
  PARITY_SOURCE,
  parityOnEmulator,
  runOnEmulator,
  SEEDS,
} from '../differential/fuzz.js';
import type { BenchContext } from './update.js';

export async function difffuzz(
  ctx: BenchContext,
  kernels: readonly string[],
  label: string,
  runLabel: string,
  image: string,
): Promise<void> {
  let binary: string;
  let parity: string;
  try {
    binary = buildFuzzer('static');
    parity = buildProgram(PARITY_SOURCE, 'emu-parity', 'static');
  } catch (err) {
    throw ctx.infra(`cc -static failed (Debian: libc6-dev): ${(err as Error).message}`);
  }
  const seeds = SEEDS.join(' ');
  const g = await ctx.guest(
    `difffuzz-${runLabel}`,
    kernels,
    'exec sh vm/guest/difffuzz.sh',
    {
      LUOFUZZ: binary,
      LUOFUZZ_ARGS: `--ops ${OPS}`,
      LUOFUZZ_SEEDS: seeds,
      LUOKIT_PARITY: parity,
      LUOKIT_PARITY_SCENARIOS: PARITY_SCENARIOS.join(' '),
    },
    900_000 * ctx.timeoutScale,
    image,
  );
  await compareParity(ctx, g.dir, label);
  const stageFile = (n: number): string => path.join(g.dir, `fuzz.stage${n}.txt`);
  const missing = [1, 2].filter((n) => !fs.existsSync(stageFile(n)));
  const status = (n: number): string | undefined =>
    g.result.markers.find(
      (m) => m.kind === 'RESULT' && m.fields.kind === 'difffuzz' && m.fields.stage === String(n),
    )?.fields.status;
  if (missing.length > 0 || status(1) !== '0' || status(2) !== '0') {
    ctx.check(
      `difffuzz: seeds ${SEEDS[0]}-${SEEDS.at(-1)} ran on the real kernel, stage 1 -> kexec -> stage 2 (${label})`,
      'fail',
      `stage 1 exit ${status(1) ?? 'missing'}, stage 2 exit ${status(2) ?? 'missing'} (${g.result.reason ?? 'see console.log'})`,
    );
    return;
  }
  const real = joinTraces({
    stage1: fs.readFileSync(stageFile(1), 'latin1'),
    stage2: fs.readFileSync(stageFile(2), 'latin1'),
  });
  const started = performance.now();
  const emulated = joinTraces(await runOnEmulator(SEEDS));
  ctx.timings[`difffuzz (${label}): emulator on the host, s`] =
    Math.round((performance.now() - started) / 100) / 10;
  const out = path.join(ctx.out, `difffuzz-${runLabel}`);
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, 'real.txt'), real, 'latin1');
  fs.writeFileSync(path.join(out, 'emulator.txt'), emulated, 'latin1');
  const lines = real.split('\n').length - 1;
  const pairs = coverage(real);
  ctx.timings[`difffuzz (${label}): trace lines, (operation, outcome) pairs`] = `${lines}, ${pairs.size}`;
  fs.writeFileSync(
    path.join(out, 'coverage.txt'),
    [...pairs]
      .sort((a, b) => a[0].localeCompare(b[0]))
      .map(([k, v]) => `${k} ${v}\n`)
      .join(''),
  );
  const diff = firstDifference(real, emulated);
  ctx.check(
    `difffuzz: seeds ${SEEDS[0]}-${SEEDS.at(-1)}, the emulator's trace is the real kernel's line by line (${label}, ${lines} lines)`,
    diff === undefined ? 'pass' : 'fail',
    diff && `line ${diff.line}: real '${diff.expected}' | emulator '${diff.actual}'`,
  );
  if (DEFAULT_RUN) {
    const file = EXPECTED_FILE;
    const committed = fs.existsSync(file) ? fs.readFileSync(file, 'latin1') : '';
    const d = firstDifference(real, committed);
    ctx.check(
      `difffuzz: ${path.relative(ctx.root, file)} is the real kernel's trace (${label})`,
      d === undefined ? 'pass' : 'fail',
      d &&
        `line ${d.line}: real '${d.expected}' | committed '${d.actual}' (copy ${path.relative(ctx.root, path.join(out, 'real.txt'))} there)`,
    );
  }
}

/**
 * test/emu-parity/parity.c's directed scenarios: each one's lines on the real kernel and on the
 * emulator must be the same; where test/emu-parity/SCENARIO.expected exists (writes,
 * fuzz-found: what test/emu-parity.test.ts checks the emulator against), the real lines must
 * be that file.
 */
async function compareParity(ctx: BenchContext, dir: string, label: string): Promise<void> {
  const emulated = await parityOnEmulator(PARITY_SCENARIOS);
  for (const scenario of PARITY_SCENARIOS) {
    const file = path.join(dir, `parity.${scenario}.txt`);
    const real = fs.existsSync(file) ? fs.readFileSync(file, 'latin1') : '';
    const emu = emulated.get(scenario) ?? '';
    const diff = real.includes(`done ${scenario}`)
      ? firstDifference(real, emu)
      : { line: 0, expected: real.trim().split('\n').at(-1) ?? '(nothing)', actual: '' };
    ctx.check(
      `difffuzz: parity scenario ${scenario}, the emulator's lines are the real kernel's (${label})`,
      diff === undefined ? 'pass' : 'fail',
      diff &&
        (diff.line === 0
          ? `did not finish on the real kernel: ${diff.expected}`
          : `line ${diff.line}: real '${diff.expected}' | emulator '${diff.actual}'`),
    );
    const expectedFile = path.join(ctx.root, 'test/emu-parity', `${scenario}.expected`);
    if (fs.existsSync(expectedFile) && real !== '') {
      const d = firstDifference(real, fs.readFileSync(expectedFile, 'latin1'));
      ctx.check(
        `difffuzz: test/emu-parity/${scenario}.expected is the real kernel's output (${label})`,
        d === undefined ? 'pass' : 'fail',
        d && `line ${d.line}: real '${d.expected}' | ${scenario}.expected '${d.actual}'`,
      );
    }
  }
}
