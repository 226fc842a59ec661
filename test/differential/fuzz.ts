/**
 * The differential fuzzer's host side (docs/emulator.md, "The differential fuzzer"): builds
 * test/differential/luofuzz.c, runs its seeds on luokit's emulated kernel under the preload
 * shim (stage 1, an emulated kexec, stage 2) and compares traces line by line. The real
 * kernel's side runs in the QEMU bench (test/vm/difffuzz.ts, vm/guest/difffuzz.sh).
 */
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startEmulator } from '../../src/kernel/emu/index.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const SOURCE = path.join(ROOT, 'test/differential/luofuzz.c');
export const SHIM = path.join(ROOT, 'build/native/libluoemu.so');
/**
 * The real kernel's trace of the default SEEDS and OPS (7.2.13 and 7.3-rc7 give the same bytes),
 * written by the bench (`--only difffuzz`), which checks it against a real kernel at every run.
 */
export const EXPECTED_FILE = path.join(ROOT, 'test/differential/expected.txt');
/** SEEDS and OPS are the defaults, so EXPECTED_FILE is their trace. */
export const DEFAULT_RUN = process.env.LUOFUZZ_SEEDS === undefined && process.env.LUOFUZZ_OPS === undefined;

/** `1-24` or `3,7,9-12`. */
export function parseSeeds(text: string): number[] {
  const out: number[] = [];
  for (const part of text.split(',')) {
    const [a, b] = part.split('-').map(Number);
    if (!Number.isSafeInteger(a) || (b !== undefined && !Number.isSafeInteger(b)))
      throw new Error(`bad seeds '${text}'`);
    for (let s = a!; s <= (b ?? a!); s++) out.push(s);
  }
  return out;
}

/**
 * The seeds `npm test` and `npm run test:vm` run (the bench compares them with the real kernel);
 * $LUOFUZZ_SEEDS and $LUOFUZZ_OPS change them for a longer bench run.
 */
export const SEEDS: readonly number[] = parseSeeds(process.env.LUOFUZZ_SEEDS ?? '1-24');
/** Operations per seed and stage. */
export const OPS = Number(process.env.LUOFUZZ_OPS ?? 60);

export interface Traces {
  stage1: string;
  stage2: string;
}

/** test/emu-parity/parity.c: directed scenarios whose lines must be the real kernel's too. */
export const PARITY_SOURCE = path.join(ROOT, 'test/emu-parity/parity.c');
/** The parity scenarios the bench runs on both kernels (close-unpins takes ~30 s on a real one). */
export const PARITY_SCENARIOS: readonly string[] = [
  'writes',
  'fuzz-found',
  'future-write',
  'close-unpins',
  'exit-unpins',
  'close-range-unpins',
  'kill-unpins',
];

/**
 * Compile a C program into build/difffuzz/ (static for the bench's guest, which has no C
 * library of its own; dynamic for the shim). Rebuilds when the source, or the uAPI header it
 * includes, is newer.
 */
export function buildProgram(source: string, name: string, link: 'static' | 'dynamic'): string {
  const out = path.join(ROOT, 'build/difffuzz', link === 'static' ? `${name}-static` : name);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  const inputs = [source, path.join(ROOT, 'native/include/luokit/liveupdate.h')];
  const newest = Math.max(...inputs.map((file) => fs.statSync(file).mtimeMs));
  const fresh = fs.existsSync(out) && fs.statSync(out).mtimeMs >= newest;
  if (!fresh) {
    const tmp = `${out}.tmp-${process.pid}`;
    execFileSync(
      process.env.CC ?? 'cc',
      ['-O2', '-Wall', '-Wextra', '-Werror', ...(link === 'static' ? ['-static'] : []), '-o', tmp, source],
      { stdio: ['ignore', 'ignore', 'inherit'] },
    );
    fs.renameSync(tmp, out);
  }
  return out;
}

/** luofuzz, built. */
export function buildFuzzer(link: 'static' | 'dynamic'): string {
  return buildProgram(SOURCE, 'luofuzz', link);
}

/** The parity scenarios' output on a fresh emulated kernel, one text per scenario. */
export async function parityOnEmulator(scenarios: readonly string[]): Promise<Map<string, string>> {
  const program = buildProgram(PARITY_SOURCE, 'emu-parity', 'dynamic');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-difffuzz-parity-'));
  const emu = await startEmulator({ stateDir: dir });
  const env = { ...process.env, LD_PRELOAD: SHIM, LUOKIT_EMU_STATE: dir };
  const out = new Map<string, string>();
  try {
    for (const scenario of scenarios) out.set(scenario, await runProgram(program, [scenario], env, 300_000));
    return out;
  } finally {
    await emu.stop().catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Run `program args` and resolve with its stdout once it exits (status 0 required). */
function runProgram(
  program: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  timeoutMs: number,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString('latin1');
    });
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      if (status !== 0)
        reject(
          new Error(
            `${path.basename(program)} ${args.join(' ')}: ${signal ?? status}\n${err}${out.slice(-2000)}`,
          ),
        );
      else resolve(out);
    });
  });
}

/**
 * The seeds on a fresh emulated kernel: stage 1 under the shim, its holder keeping the sessions
 * while the emulated kexec runs, then stage 2 in the next emulated kernel.
 */
export async function runOnEmulator(
  seeds: readonly number[],
  options: { ops?: number; timeoutMs?: number } = {},
): Promise<Traces> {
  const program = buildFuzzer('dynamic');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-difffuzz-'));
  const emu = await startEmulator({ stateDir: dir });
  const holderFile = path.join(dir, 'holder.pid');
  const env = { ...process.env, LD_PRELOAD: SHIM, LUOKIT_EMU_STATE: dir, LUOFUZZ_HOLDER_FILE: holderFile };
  const args = ['--ops', String(options.ops ?? OPS)];
  const seedArgs = seeds.map(String);
  const timeoutMs = options.timeoutMs ?? 240_000;
  let holder: number | undefined;
  try {
    const stage1 = await runProgram(program, [...args, 'stage1', ...seedArgs], env, timeoutMs);
    holder = Number(fs.readFileSync(holderFile, 'utf8').trim());
    await emu.kexec();
    // Its fds died with the emulated kernel, as the holder itself would on a real host.
    process.kill(holder, 'SIGKILL');
    holder = undefined;
    const stage2 = await runProgram(program, [...args, 'stage2', ...seedArgs], env, timeoutMs);
    return { stage1, stage2 };
  } finally {
    if (holder !== undefined) {
      try {
        process.kill(holder, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await emu.stop().catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Both stages as one text, as the expected files hold them. */
export function joinTraces(t: Traces): string {
  return `${t.stage1}${t.stage2}`;
}

/** The first line where two traces differ, with its number and both sides; undefined when equal. */
export function firstDifference(
  expected: string,
  actual: string,
): { line: number; expected: string; actual: string } | undefined {
  const a = expected.split('\n');
  const b = actual.split('\n');
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if (a[i] !== b[i]) return { line: i + 1, expected: a[i] ?? '(end)', actual: b[i] ?? '(end)' };
  }
  return undefined;
}

/** `(operation, outcome)` pairs with their counts: what a trace covered. */
export function coverage(trace: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const line of trace.split('\n')) {
    const m = /^\d+\.\d+ #\d+ (\S+).*? = (ok|E[A-Z0-9]+)/.exec(line);
    if (!m) continue;
    const key = `${m[1]} ${m[2]}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}
