/**
 * The real-kernel bench (`npm run test:vm`; docs/vm.md): builds or reuses a LUO kernel from
 * Debian's source, builds the guest's initramfs, and in QEMU guests on that kernel runs
 *
 *   0. kernel-info: `luoctl kernel-info`'s reader on each bench kernel (bzImage and vmlinux), and
 *      the gate's verdict on every pair of them (test/vm/kernel-info.ts), on the host;
 *   1. the kernel's own LUO selftests: `liveupdate` (15 tests) and the kexec tests, stage 1,
 *      a real kexec, stage 2;
 *   2. the LUO scenario suite (test/scenarios/) on the real /dev/liveupdate, across two real
 *      kexecs (the same QEMU process throughout);
 *   3. the same suite on luokit's emulated kernel, on the host, and the parity report: both
 *      runs compared step by step (build/vm/parity.{json,txt});
 *   4. a full live update through luod with example VMMs, and the same memory through a
 *      minimal C program (the floor), each across a real kexec; the blackout report of both
 *      (test/vm/update.ts; build/vm/blackout.{json,txt});
 *   5. the capture: a known set of sessions preserved, a real kexec, the next kernel's memory
 *      dumped through QMP and debugfs kho/in copied, then `luoctl inspect --json --check` on
 *      them must report exactly what was preserved (test/vm/capture.ts);
 *   6. a real QEMU VM (the counter guest under nested TCG, luo-qemu) across a real kexec
 *      through luod, on the same kernel pairs as the live update part: the counter goes on,
 *      the guest measures its own pause (test/vm/qemu-update.ts; the QEMU section of
 *      build/vm/blackout.{json,txt});
 *   7. the differential fuzzer: the same seeded LUO + memfd sequences on the real kernel (across
 *      a real kexec) and on the emulated kernel, traces compared line by line (test/vm/difffuzz.ts);
 *      on 7.2 and on 7.3 unless --kernels (or $LUOKIT_VM_KERNELS) says which;
 *   8. qualification: the real `luoctl qualify --from A --to B` on 7.2 -> 7.2, 7.2 -> 7.3 and
 *      7.3 -> 7.2 (or the --update-kernels pairs) with the standard workload (the kexec
 *      selftests, the two-stage scenarios, luod with VMMs, a QEMU VM through luo-qemu, all
 *      across one kexec), its records and pages checked (test/vm/qualify.ts).
 *
 * Prints a summary whose last line is `N passed, N failed`. Exit status: 0 all passed;
 * 1 something failed; 3 infrastructure (a package, QEMU or the kernel build missing or
 * broken, a guest that did not boot) and nothing failed; 2 bad usage.
 *
 *   node --import tsx test/vm/run.ts [--kernels 7.2[,7.3]] [--only kernel-info,selftests,scenarios,parity,update,capture,qemu,difffuzz,qualify]
 *                                    [--update-kernels '7.2,7.2;7.2,7.3'] [--scenarios ID,...]
 *                                    [--exec 'SHELL COMMAND'] [--timeout-scale N]
 *
 * --kernels: the kernel of each boot (boot N runs the Nth; the last repeats): `7.2,7.3` runs
 * the first stage on 7.2 and kexecs into 7.3. An entry may also be a bzImage's path (used as
 * it is, nothing is built). --update-kernels: the live update part's pairs, `;` between
 * them, also the QEMU part's; default both 7.2 -> 7.2 and 7.2 -> 7.3 (the issue's deliverable), or the --kernels
 * given (or $LUOKIT_VM_KERNELS) when there are. --exec boots once and runs a command in the
 * guest (chrooted into the host's /, in the project directory), for debugging.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { HandoverReport } from '../../src/inspect/report.js';
import { QmpClient } from '../../src/qemu/qmp.js';
import { runGuestJob, shellQuote } from '../../src/vm/guest.js';
import type { QemuOptions, QemuResult } from '../../src/vm/qemu.js';
import type { ScenarioResult } from '../scenarios/types.js';
import {
  type CaptureExpectation,
  compareCapture,
  DUMP_DONE_FILE,
  DUMP_FILE,
  describeDebugfsLuo,
  EXPECTED_FILE,
  KHO_IN_DIR,
} from './capture.js';
import { difffuzz } from './difffuzz.js';
import { buildGuestDisk, guestDiskContent, MKE2FS } from './guest-disk.js';
import type { BootResults } from './guest-scenarios.js';
import { jitSampler } from './jit-stats.js';
import { kernelInfoChecks } from './kernel-info.js';
import { compareResults, formatParity, type ParityReport } from './parity.js';
import { qemuUpdates } from './qemu-update.js';
import { QUALIFY_PAIRS, type QualifyPair, qualifications } from './qualify.js';
import { KEXEC_SELFTESTS, tapResults } from './selftests.js';
import {
  type BenchContext,
  guestPrograms,
  liveUpdates,
  parseUpdatePairs,
  type UpdatePair,
} from './update.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const OUT = path.join(ROOT, 'build/vm');
const EXIT_FAILED = 1;
const EXIT_USAGE = 2;
const EXIT_INFRA = 3;
/** The live update part proves both version pairs unless told otherwise. */
const DEFAULT_UPDATE_KERNELS = '7.2,7.2;7.2,7.3';
/** The bench's parts, in the order they run; `--only` chooses among them (default all). */
const PARTS = [
  'kernel-info',
  'selftests',
  'scenarios',
  'parity',
  'update',
  'capture',
  'qemu',
  'difffuzz',
  'qualify',
];
/** The difffuzz part proves both kernel series unless told otherwise. */
const DIFFFUZZ_KERNELS = [['7.2'], ['7.3']];

type CheckStatus = 'pass' | 'fail' | 'infra' | 'skip';

interface Check {
  name: string;
  status: CheckStatus;
  detail?: string;
}

/** The bench could not test: never a pass, never a test failure. */
class InfraError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InfraError';
  }
}

const checks: Check[] = [];
const timings: Record<string, number | string> = {};

function check(name: string, status: CheckStatus, detail?: string): void {
  checks.push({ name, status, ...(detail !== undefined ? { detail } : {}) });
  const mark = { pass: 'ok  ', fail: 'FAIL', infra: 'INFR', skip: 'skip' }[status];
  console.log(`${mark} ${name}${detail && status !== 'pass' ? `  (${detail})` : ''}`);
}

function log(text: string): void {
  console.log(`[vm] ${text}`);
}

function seconds(ms: number): number {
  return Math.round(ms / 100) / 10;
}

/** Run a program, stream its stderr with a prefix, return stdout and the exit status. */
function run(
  command: string,
  args: readonly string[],
  options: { env?: NodeJS.ProcessEnv; prefix?: string; quiet?: boolean } = {},
): Promise<{ status: number | null; stdout: string; stderr: string; error?: Error }> {
  return new Promise((resolve) => {
    const child = spawn(command, args, {
      cwd: ROOT,
      env: options.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (!options.quiet) {
        for (const line of d.toString().trimEnd().split('\n')) console.log(`${options.prefix ?? ''}${line}`);
      }
    });
    child.once('error', (error) => resolve({ status: null, stdout, stderr, error }));
    child.once('close', (status) => resolve({ status, stdout, stderr }));
  });
}

function which(program: string): boolean {
  const dirs = (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin']);
  return dirs.some((d) => d !== '' && fs.existsSync(path.join(d, program)));
}

/** What the host must have before anything is built; missing pieces are infrastructure. */
function preflight(): void {
  const missing: string[] = [];
  if (!which('qemu-system-x86_64')) missing.push('qemu-system-x86_64 (apt-get install qemu-system-x86)');
  if (!fs.existsSync('/bin/busybox')) missing.push('/bin/busybox (apt-get install busybox-static)');
  if (!which('kexec'))
    missing.push('kexec (apt-get install kexec-tools; then LOAD_KEXEC=false in /etc/default/kexec)');
  if (!which('cpio')) missing.push('cpio (apt-get install cpio)');
  if (missing.length > 0) throw new InfraError(`missing on the host: ${missing.join('; ')}`);
}

const kernelCache = new Map<string, string>();

/** vm/build-kernel.sh VERSION: the cached bzImage (exit 3 there is infrastructure, and so is any build failure). */
async function kernel(version: string): Promise<string> {
  const cached = kernelCache.get(version);
  if (cached) return cached;
  // A path instead of a version: that bzImage as it is (no build).
  if (version.includes('/')) {
    if (!fs.existsSync(version)) throw new InfraError(`kernel image ${version} does not exist`);
    return version;
  }
  const started = performance.now();
  const r = await run('sh', [path.join(ROOT, 'vm/build-kernel.sh'), version], {
    prefix: `[kernel ${version}] `,
  });
  timings[`kernel ${version} (build or reuse), s`] = seconds(performance.now() - started);
  const image = r.stdout.trim().split('\n').at(-1) ?? '';
  if (r.status !== 0 || !fs.existsSync(image)) {
    throw new InfraError(
      `kernel ${version}: vm/build-kernel.sh exited ${r.status ?? r.error?.message}: ${r.stderr.trim().split('\n').at(-1) ?? ''}`,
    );
  }
  const info = path.join(path.dirname(image), 'info');
  if (fs.existsSync(info)) {
    const release = /^release=(.*)$/m.exec(fs.readFileSync(info, 'utf8'))?.[1];
    timings[`kernel ${version} image`] = `${image} (${release}, ${fs.statSync(image).size} bytes)`;
  }
  kernelCache.set(version, image);
  return image;
}

async function initramfs(): Promise<string> {
  const file = path.join(OUT, 'initramfs.cpio.gz');
  const r = await run('sh', [path.join(ROOT, 'vm/build-initramfs.sh'), file], { prefix: '[initramfs] ' });
  if (r.status !== 0) throw new InfraError(`vm/build-initramfs.sh exited ${r.status}: ${r.stderr.trim()}`);
  timings['initramfs bytes'] = fs.statSync(file).size;
  return file;
}

/** scripts/build-selftests.sh --static VERSION: the kernel's selftests, from the same source as the kernel. */
async function selftestBinaries(version: string): Promise<string> {
  const r = await run('sh', [path.join(ROOT, 'scripts/build-selftests.sh'), '--static', version], {
    prefix: '[selftests] ',
  });
  const dir = r.stdout.trim().split('\n').at(-1) ?? '';
  if (r.status !== 0 || !fs.existsSync(path.join(dir, 'liveupdate'))) {
    throw new InfraError(
      `scripts/build-selftests.sh --static ${version} exited ${r.status}: ${r.stderr.trim()}`,
    );
  }
  return dir;
}

interface GuestRun {
  name: string;
  dir: string;
  result: QemuResult;
}

/** Boot the guest on `kernels[0]` and run `command` (kexecs go to the next kernels). */
async function guest(
  name: string,
  kernels: readonly string[],
  command: string,
  env: Record<string, string>,
  timeoutMs: number,
  image: string,
  extra: Pick<QemuOptions, 'memory' | 'qmpSocket' | 'onLine' | 'tbSizeMb'> & { append?: string } = {},
): Promise<GuestRun> {
  const dir = path.join(OUT, 'runs', name);
  log(
    `${name}: booting ${path.basename(path.dirname(kernels[0]!))} (console: ${path.relative(ROOT, dir)}/console.log)`,
  );
  // LUOKIT_VM_JIT_STATS=MS: QEMU's TB statistics every MS ms in the console log (docs/vm.md).
  const jitSampleMs = Number(process.env.LUOKIT_VM_JIT_STATS ?? 0);
  const jit =
    jitSampleMs > 0 && extra.qmpSocket === undefined
      ? {
          qmpSocket: path.join(dir, 'jit-qmp.sock'),
          sampler: jitSampler(path.join(dir, 'jit-qmp.sock'), jitSampleMs),
        }
      : {};
  // LUOKIT_VM_TB_SIZE=MIB: QEMU's translated-code buffer for every run (docs/vm.md, "Results");
  // else the part's own choice (the update part's), else QEMU's default here (512).
  const tbSizeMb = Number(process.env.LUOKIT_VM_TB_SIZE ?? extra.tbSizeMb ?? 0);
  const result = await runGuestJob({
    ...jit,
    ...(tbSizeMb > 0 && { tbSizeMb }),
    ...(guestDisk !== undefined && { disk: guestDisk }),
    dir,
    kernels,
    command,
    env,
    cwd: ROOT,
    initramfs: image,
    timeoutMs,
    ...(extra.append !== undefined && { append: extra.append }),
    ...(extra.memory !== undefined && { memory: extra.memory }),
    ...(extra.qmpSocket !== undefined && { qmpSocket: extra.qmpSocket }),
    onLine: (line, atMs) => {
      if (/LUOKIT-(BOOT|KEXEC|EXIT|INFRA|SCENARIOS|CAPTURE|RESULT kind=difffuzz)|Kernel panic/.test(line))
        log(`${name}: ${line.trim()}`);
      extra.onLine?.(line, atMs);
    },
  });
  fs.writeFileSync(path.join(dir, 'qemu-result.json'), `${JSON.stringify(result, null, 1)}\n`);
  for (const b of result.boots) {
    timings[`${name}: boot ${b.boot} (${b.release}) kernel start -> /init, s`] =
      b.kernelAtMs === undefined ? 'n/a' : seconds(b.initAtMs - b.kernelAtMs);
  }
  if (result.boots[0]) timings[`${name}: QEMU start -> first /init, s`] = seconds(result.boots[0].initAtMs);
  for (const k of result.kexecs) {
    timings[`${name}: kexec ${k.from} -> ${k.to} blackout (kexec -e -> next /init), s`] =
      k.blackoutMs === undefined ? 'never' : seconds(k.blackoutMs);
  }
  timings[`${name}: whole QEMU run, s`] = seconds(result.durationMs);
  log(
    `${name}: ${result.outcome}${result.reason ? ` (${result.reason})` : ''} in ${seconds(result.durationMs)} s`,
  );
  if (result.outcome === 'infra') throw new InfraError(`${name}: ${result.reason}`);
  return { name, dir, result };
}

// ---------------------------------------------------------------------------------------------

/** A run directory's name for these kernels: versions as they are, a bzImage by its cache directory. */
function runLabel(versions: readonly string[]): string {
  return versions.map((v) => (v.includes('/') ? path.basename(path.dirname(v)) : v)).join('-');
}

/** The kernels of a run for check names: `7.2`, `7.2->7.3`, a bzImage by its cache directory. */
function kernelLabel(versions: readonly string[]): string {
  return versions.map((v) => (v.includes('/') ? path.basename(path.dirname(v)) : v)).join('->');
}

async function selftests(
  kernels: readonly string[],
  versions: readonly string[],
  image: string,
): Promise<void> {
  // The selftests of the first kernel's source (a bzImage path: 7.2's).
  const binaries = await selftestBinaries(versions[0]!.includes('/') ? '7.2' : versions[0]!);
  const label = kernelLabel(versions);
  const g = await guest(
    `selftests-${runLabel(versions)}`,
    kernels,
    'exec sh vm/guest/selftests.sh',
    { LUOKIT_SELFTESTS: binaries, LUOKIT_KEXEC_TESTS: KEXEC_SELFTESTS.join(' ') },
    600_000 * timeoutScale,
    image,
  );
  const results = g.result.markers.filter((m) => m.kind === 'RESULT' && m.fields.kind === 'selftest');
  const status = (name: string, stage: string): number | undefined => {
    const m = results.find((r) => r.fields.name === name && r.fields.stage === stage);
    return m === undefined ? undefined : Number(m.fields.status);
  };
  // liveupdate: one check per TAP test case.
  const tapFile = path.join(g.dir, 'liveupdate.boot0.txt');
  const tap = fs.existsSync(tapFile) ? tapResults(fs.readFileSync(tapFile, 'utf8')) : [];
  if (tap.length === 0) {
    check(
      `selftest liveupdate (${label})`,
      'fail',
      `no TAP results (exit status ${status('liveupdate', 'single')})`,
    );
  }
  for (const t of tap) {
    check(`selftest liveupdate/${t.name} (${label})`, t.skip ? 'skip' : t.ok ? 'pass' : 'fail');
  }
  const passed = tap.filter((t) => t.ok && !t.skip).length;
  timings[`selftest liveupdate (${label})`] = `${passed}/${tap.length}`;
  for (const name of KEXEC_SELFTESTS) {
    const s1 = status(name, '1');
    const s2 = status(name, '2');
    const ok = s1 === 0 && s2 === 0;
    const detail =
      s1 !== 0
        ? `stage 1 exit status ${s1 ?? 'missing'}`
        : s2 === undefined
          ? `stage 2 never ran (${g.result.reason ?? 'after the kexec'})`
          : `stage 2 exit status ${s2}`;
    check(
      `selftest ${name} stage 1 -> kexec -> stage 2 (${label})`,
      ok ? 'pass' : 'fail',
      ok ? undefined : detail,
    );
  }
  if (g.result.outcome === 'failed') check(`selftests guest run (${label})`, 'fail', g.result.reason);
}

/**
 * The guest's scenario program as one JavaScript file (koffi stays external: a native module,
 * found in the project's node_modules). Plain Node starts in about 2 s in the guest, where tsx
 * takes about 30 s (esbuild under TCG, every file over 9p, its cache gone at each boot).
 * Falls back to tsx when esbuild is not there.
 */
async function guestProgram(entry = 'test/vm/guest-scenarios.ts', bundle = 'scenarios.mjs'): Promise<string> {
  const outfile = await bundleGuestProgram(entry, bundle);
  return outfile === undefined ? `exec node --import tsx ${entry}` : `exec node ${shellQuote(outfile)}`;
}

/** The guest program bundled into build/vm/guest/BUNDLE, or undefined when esbuild is not there or failed. */
async function bundleGuestProgram(entry: string, bundle: string): Promise<string | undefined> {
  const esbuild = path.join(ROOT, 'node_modules/.bin/esbuild');
  const outfile = path.join(OUT, 'guest', bundle);
  if (!fs.existsSync(esbuild)) return undefined;
  const r = await run(
    esbuild,
    [
      entry,
      '--bundle',
      '--platform=node',
      '--format=esm',
      '--target=node20',
      '--external:koffi',
      '--log-level=warning',
      `--outfile=${outfile}`,
      // Bundled ESM has no require(); some dependencies (pino) still call it.
      "--banner:js=import { createRequire as __luokitRequire } from 'node:module'; const require = __luokitRequire(import.meta.url);",
    ],
    { prefix: '[esbuild] ' },
  );
  if (r.status !== 0 || !fs.existsSync(outfile)) {
    log(`esbuild failed (exit ${r.status}); the guest runs the TypeScript through tsx instead (slower)`);
    return undefined;
  }
  return outfile;
}

async function realScenarios(
  kernels: readonly string[],
  versions: readonly string[],
  image: string,
  ids: string | undefined,
): Promise<ScenarioResult[]> {
  const label = kernelLabel(versions);
  const g = await guest(
    `scenarios-${runLabel(versions)}`,
    kernels,
    await guestProgram(),
    { LUOKIT_ROOT: ROOT, ...(ids ? { LUOKIT_SCENARIO_IDS: ids } : {}) },
    900_000 * timeoutScale,
    image,
  );
  const results: ScenarioResult[] = [];
  for (let boot = 0; boot <= 2; boot++) {
    const file = path.join(g.dir, `scenarios.boot${boot}.json`);
    if (!fs.existsSync(file)) continue;
    const record = JSON.parse(fs.readFileSync(file, 'utf8')) as BootResults;
    results.push(...record.results);
    const m = g.result.markers.find((x) => x.kind === 'SCENARIOS' && x.fields.boot === String(boot));
    if (m) timings[`${g.name}: scenarios in boot ${boot} (${record.release}), s`] = Number(m.fields.seconds);
  }
  if (results.length === 0) {
    throw new InfraError(
      `${g.name}: the guest wrote no scenario results (${g.result.reason ?? `exit ${g.result.exitStatus}`})`,
    );
  }
  for (const r of results) {
    const status: CheckStatus = r.status === 'pass' ? 'pass' : r.status === 'fail' ? 'fail' : 'skip';
    check(`scenario ${r.id} on the real kernel (${label})`, status, r.error?.split('\n')[0]);
  }
  if (g.result.outcome === 'failed') check(`scenarios guest run (${label})`, 'fail', g.result.reason);
  else if (g.result.exitStatus !== 0) {
    check(`scenarios guest run (${label})`, 'fail', `the guest runner exited ${g.result.exitStatus}`);
  }
  fs.writeFileSync(
    path.join(OUT, 'real-results.json'),
    `${JSON.stringify({ backend: 'real', kernels: versions, results }, null, 2)}\n`,
  );
  return results;
}

/**
 * The capture part (docs/vm.md, test/vm/capture.ts): boot 0 preserves a known set of sessions
 * and kexecs; the host takes a memory dump through QMP as soon as the next kernel starts
 * (its early console's banner: before that kernel's KHO and LUO early init free the radix
 * tree and luo_ser); boot 1 copies debugfs kho/in, signals, and waits for the host's go
 * before it opens /dev/liveupdate. Then the host runs the real `luoctl inspect --fdt
 * kho-in/fdt --memory DUMP --json --check` and compares its report with what boot 0
 * preserved. The dump (the guest's whole memory, CAPTURE_MEMORY) is deleted afterwards
 * unless a check failed.
 */
async function capture(
  kernels: readonly string[],
  versions: readonly string[],
  image: string,
): Promise<void> {
  const label = kernelLabel(versions);
  const name = `capture-${runLabel(versions)}`;
  const dir = path.join(OUT, 'runs', name);
  const program = (await guestProgram('test/vm/guest-capture.ts', 'capture.mjs')).replace(/^exec /, '');
  // A short path: unix socket paths are limited to 108 bytes.
  const socketDir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-qmp-'));
  const qmpSocket = path.join(socketDir, 'qmp.sock');
  const dumpFile = path.join(dir, DUMP_FILE);
  let dumpError: string | undefined;
  let dumping: Promise<void> | undefined;
  let kexecSeen = false;
  /** Stops the guest, dumps its memory, lets it go on; one QMP connection for the three. */
  const takeDump = async (): Promise<void> => {
    const started = performance.now();
    try {
      const qmp = await QmpClient.connect(qmpSocket, { timeoutMs: 10_000 });
      try {
        await qmp.execute('stop');
        timings[`${name}: guest stopped for the dump, ms after the banner`] = Math.round(
          performance.now() - started,
        );
        // paging false: physical memory as it is, one PT_LOAD per RAM range (what inspect reads).
        await qmp.execute(
          'dump-guest-memory',
          { paging: false, protocol: `file:${dumpFile}` },
          600_000 * timeoutScale,
        );
        await qmp.execute('cont');
      } finally {
        qmp.close();
      }
      timings[`${name}: stop + dump-guest-memory + cont, s`] = seconds(performance.now() - started);
      timings[`${name}: dump bytes`] = fs.statSync(dumpFile).size;
    } catch (err) {
      dumpError = (err as Error).message;
    }
  };
  /** Boot 1 waits for this file before it opens /dev/liveupdate. */
  const release = async (): Promise<void> => {
    await dumping;
    const status =
      dumping === undefined ? 'failed: no dump was started' : dumpError ? `failed: ${dumpError}` : 'ok';
    fs.writeFileSync(path.join(dir, DUMP_DONE_FILE), `${status}\n`);
  };
  let g: GuestRun;
  try {
    g = await guest(
      name,
      kernels,
      'exec sh vm/guest/capture.sh',
      { LUOKIT_ROOT: ROOT, LUOKIT_CAPTURE_PROGRAM: program, LUOKIT_CAPTURE_WAIT: String(300 * timeoutScale) },
      600_000 * timeoutScale,
      image,
      {
        memory: CAPTURE_MEMORY,
        qmpSocket,
        // The banner comes out at setup_arch() (parse_early_param), ahead of kho_memory_init().
        append: 'earlyprintk=serial,ttyS0,115200',
        onLine: (line) => {
          if (/LUOKIT-KEXEC boot=0/.test(line)) kexecSeen = true;
          else if (kexecSeen && dumping === undefined && /Linux version \d/.test(line)) dumping = takeDump();
          else if (/LUOKIT-CAPTURE boot=1/.test(line)) void release();
        },
      },
    );
    await dumping;
  } finally {
    fs.rmSync(socketDir, { recursive: true, force: true });
  }
  const failed: string[] = [];
  const record = (what: string, problems: string[]): void => {
    check(`capture: ${what} (${label})`, problems.length === 0 ? 'pass' : 'fail', problems.join('; '));
    if (problems.length > 0) failed.push(what);
  };
  const expectedFile = path.join(dir, EXPECTED_FILE);
  const fdtFile = path.join(dir, KHO_IN_DIR, 'fdt');
  const guestProblems = g.result.markers
    .filter((m) => m.kind === 'CAPTURE-PROBLEM')
    .map((m) => m.line.replace(/^.*LUOKIT-CAPTURE-PROBLEM boot=\d+ /, '').trim());
  if (!fs.existsSync(expectedFile)) {
    record('boot 0 preserved the sessions', [
      guestProblems[0] ?? g.result.reason ?? 'no capture-expected.json',
    ]);
    return;
  }
  if (!fs.existsSync(fdtFile) || dumpError !== undefined || !fs.existsSync(dumpFile)) {
    record('boot 1 captured kho/in and a memory dump', [
      dumpError ?? guestProblems[0] ?? g.result.reason ?? `no ${path.relative(dir, fdtFile)}`,
    ]);
    return;
  }
  const expected = JSON.parse(fs.readFileSync(expectedFile, 'utf8')) as CaptureExpectation;
  const inspected = await run(
    process.execPath,
    [
      '--import',
      'tsx',
      'src/cli/luoctl.ts',
      'inspect',
      '--fdt',
      fdtFile,
      '--memory',
      dumpFile,
      '--json',
      '--check',
    ],
    { quiet: true },
  );
  fs.writeFileSync(path.join(dir, 'inspect.json'), inspected.stdout);
  let report: HandoverReport | undefined;
  try {
    report = JSON.parse(inspected.stdout) as HandoverReport;
  } catch {
    // reported below
  }
  record(
    'luoctl inspect --fdt --memory --json --check passes',
    inspected.status === 0
      ? []
      : [`exit ${inspected.status}: ${(inspected.stderr.trim() || inspected.stdout.trim()).slice(0, 500)}`],
  );
  if (report?.schema === undefined) {
    record('inspect reports what boot 0 preserved', [`no JSON report: ${inspected.stdout.slice(0, 200)}`]);
  } else {
    const luoBlob = path.join(dir, KHO_IN_DIR, 'sub_fdts', 'LUO');
    if (fs.existsSync(luoBlob)) {
      timings[`${name}: debugfs kho/in/sub_fdts/LUO at boot 1`] = describeDebugfsLuo(
        fs.readFileSync(luoBlob),
        report.luo,
      );
    }
    const problems = compareCapture(expected, report);
    record(
      'inspect reports exactly the sessions, tokens, sizes, seals, positions and folios boot 0 preserved',
      problems,
    );
  }
  const verified = g.result.markers.find((m) => m.kind === 'CAPTURE-VERIFIED');
  record(
    'boot 1 retrieves the same files (content, size, position, seals) after the dump',
    verified?.fields.problems === '0'
      ? []
      : guestProblems.length > 0
        ? guestProblems
        : [g.result.reason ?? 'no LUOKIT-CAPTURE-VERIFIED'],
  );
  if (failed.length === 0) fs.rmSync(dumpFile, { force: true });
  else log(`${name}: keeping ${path.relative(ROOT, dumpFile)} for the failed check(s)`);
}

/** The same suite on the emulated kernel, on the host (test/scenarios.test.ts writes the JSON). */
async function emulatorScenarios(): Promise<ScenarioResult[]> {
  const file = path.join(OUT, 'emulator-results.json');
  fs.rmSync(file, { force: true });
  const started = performance.now();
  log('emulator: node --test test/scenarios.test.ts (LUOKIT_SCENARIO_RESULTS)');
  const r = await run(
    process.execPath,
    ['--import', 'tsx', '--test', '--test-concurrency=1', '--test-reporter=dot', 'test/scenarios.test.ts'],
    { env: { ...process.env, LUOKIT_SCENARIO_RESULTS: file }, quiet: true },
  );
  timings['emulator scenarios on the host, s'] = seconds(performance.now() - started);
  if (!fs.existsSync(file)) {
    throw new InfraError(
      `the emulator run wrote no results (exit ${r.status}): ${r.stderr.trim().slice(-500)}`,
    );
  }
  if (r.status !== 0) log(`emulator: node --test exited ${r.status} (failures are in the parity report)`);
  return (JSON.parse(fs.readFileSync(file, 'utf8')) as { results: ScenarioResult[] }).results;
}

function parity(emulator: ScenarioResult[], real: ScenarioResult[], ids: string | undefined): ParityReport {
  // With --scenarios, compare only what the guest ran.
  const wanted = new Set(real.map((r) => r.id));
  const report = compareResults(ids ? emulator.filter((r) => wanted.has(r.id)) : emulator, real);
  fs.writeFileSync(path.join(OUT, 'parity.json'), `${JSON.stringify(report, null, 2)}\n`);
  const table = formatParity(report);
  fs.writeFileSync(path.join(OUT, 'parity.txt'), table);
  console.log(table);
  for (const row of report.rows) {
    if (row.verdict === 'same') check(`parity ${row.id}`, 'pass');
    else if (row.verdict === 'not-compared') check(`parity ${row.id}`, 'skip', row.reason);
    else check(`parity ${row.id}`, 'fail', row.reason);
  }
  return report;
}

// ---------------------------------------------------------------------------------------------

let timeoutScale = 1;
/** The capture guest's memory: small, as the dump is all of it (Node in the guest needs about 300 MiB). */
const CAPTURE_MEMORY = '512M';

/**
 * Every guest gets the same local disk: node, luokit's current build and koffi
 * (test/vm/guest-disk.ts), unless LUOKIT_VM_DISK=0 (then all of it comes over 9p, as
 * before: for comparing the two).
 */
let guestDisk: string | undefined;

async function makeGuestDisk(): Promise<string | undefined> {
  if (process.env.LUOKIT_VM_DISK === '0') {
    log('guest disk: off (LUOKIT_VM_DISK=0): node and the bundles come over 9p');
    return undefined;
  }
  if (!fs.existsSync(MKE2FS)) throw new InfraError(`${MKE2FS} is missing (apt-get install e2fsprogs)`);
  await guestPrograms(benchContext());
  const file = path.join(OUT, 'guest-disk.img');
  const bytes = await buildGuestDisk(file, guestDiskContent(ROOT), (command, args, options) =>
    run(command, args, options),
  );
  timings['guest disk (node, dist, koffi), bytes'] = bytes;
  return file;
}

/** What the live update part (update.ts) borrows from this runner. */
function benchContext(): BenchContext {
  return {
    root: ROOT,
    out: OUT,
    timeoutScale,
    guest,
    check,
    timings,
    log,
    run: (command, args, options) => run(command, args, options),
    infra: (message) => new InfraError(message),
  };
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      kernels: { type: 'string' },
      'update-kernels': { type: 'string' },
      only: { type: 'string', default: PARTS.join(',') },
      scenarios: { type: 'string' },
      exec: { type: 'string' },
      'timeout-scale': { type: 'string', default: '1' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(fs.readFileSync(fileURLToPath(import.meta.url), 'utf8').split('*/')[0]);
    return 0;
  }
  timeoutScale = Number(values['timeout-scale']);
  const kernelsGiven = values.kernels ?? process.env.LUOKIT_VM_KERNELS;
  const versions = (kernelsGiven ?? '7.2').split(',').filter((v) => v !== '');
  const updatePairs = parseUpdatePairs(values['update-kernels'] ?? kernelsGiven ?? DEFAULT_UPDATE_KERNELS);
  if (versions.length === 0 || updatePairs.length === 0) {
    console.error('--kernels and --update-kernels need at least one kernel');
    return EXIT_USAGE;
  }
  const only = new Set(values.only.split(','));
  for (const part of only) {
    if (!PARTS.includes(part)) {
      console.error(`unknown --only part '${part}'`);
      return EXIT_USAGE;
    }
  }
  fs.mkdirSync(OUT, { recursive: true });
  const started = performance.now();
  try {
    preflight();
    const kernels: string[] = [];
    for (const v of versions) kernels.push(await kernel(v));
    const image = await initramfs();
    guestDisk = await makeGuestDisk();
    if (values.exec !== undefined) {
      const g = await guest('exec', kernels, values.exec, {}, 300_000 * timeoutScale, image);
      check('exec', g.result.exitStatus === 0 ? 'pass' : 'fail', `exit status ${g.result.exitStatus}`);
    } else {
      if (only.has('kernel-info')) {
        // The bench's kernels read by luoctl kernel-info's reader, and the gate on every pair.
        const images = [];
        for (const v of new Set([...versions, ...updatePairs.flat()]))
          images.push({ version: v, bzImage: await kernel(v) });
        for (const c of await kernelInfoChecks(images)) check(c.name, c.ok ? 'pass' : 'fail', c.detail);
      }
      if (only.has('selftests')) await selftests(kernels, versions, image);
      if (only.has('scenarios') || only.has('parity')) {
        const real = await realScenarios(kernels, versions, image, values.scenarios);
        if (only.has('parity')) parity(await emulatorScenarios(), real, values.scenarios);
      }
      const pairs: UpdatePair[] = [];
      if (only.has('update') || only.has('qemu')) {
        for (const pair of updatePairs) {
          const images: string[] = [];
          for (const v of pair) images.push(await kernel(v));
          pairs.push({ kernels: images, label: kernelLabel(pair), runLabel: runLabel(pair) });
        }
      }
      if (only.has('update')) await liveUpdates(benchContext(), pairs, image);
      if (only.has('capture')) await capture(kernels, versions, image);
      if (only.has('qemu')) await qemuUpdates(benchContext(), pairs, image);
      // The fuzzer on both kernel series unless told which (each one boots once).
      for (const set of only.has('difffuzz') ? (kernelsGiven ? [versions] : DIFFFUZZ_KERNELS) : []) {
        const images: string[] = [];
        for (const v of set) images.push(await kernel(v));
        await difffuzz(benchContext(), images, kernelLabel(set), runLabel(set), image);
      }
      // luoctl qualify on the upgrade, the same version and the downgrade, unless told which pairs.
      if (only.has('qualify')) {
        const qualifyPairs: QualifyPair[] = [];
        for (const pair of parseUpdatePairs(values['update-kernels'] ?? kernelsGiven ?? QUALIFY_PAIRS)) {
          const images: string[] = [];
          for (const v of pair) images.push(await kernel(v));
          // The selftests of the first kernel's source (its userspace runs both stages).
          const selftests = await selftestBinaries(pair[0]!.includes('/') ? '7.2' : pair[0]!);
          qualifyPairs.push({
            kernels: images,
            label: kernelLabel(pair),
            runLabel: runLabel(pair),
            selftests,
          });
        }
        // The scenario suite's guest program (luoctl qualify --scenarios): plain Node in the guest.
        const scenarios = await bundleGuestProgram('test/vm/guest-scenarios.ts', 'scenarios.mjs');
        if (scenarios === undefined) throw new InfraError('the scenario program did not bundle (esbuild)');
        await qualifications(benchContext(), qualifyPairs, scenarios);
      }
    }
  } catch (err) {
    if (!(err instanceof InfraError)) throw err;
    check('infrastructure', 'infra', err.message);
  }
  timings['total, s'] = seconds(performance.now() - started);

  const count = (s: CheckStatus): number => checks.filter((c) => c.status === s).length;
  fs.writeFileSync(
    path.join(OUT, 'summary.json'),
    `${JSON.stringify({ kernels: versions, timings, checks }, null, 2)}\n`,
  );
  console.log('');
  console.log('Timings:');
  for (const [k, v] of Object.entries(timings)) console.log(`  ${k}: ${v}`);
  const infra = checks.filter((c) => c.status === 'infra');
  const failed = checks.filter((c) => c.status === 'fail');
  console.log('');
  if (failed.length > 0) {
    console.log('Failed:');
    for (const c of failed) console.log(`  ${c.name}${c.detail ? `: ${c.detail}` : ''}`);
  }
  if (infra.length > 0) {
    console.log('INFRASTRUCTURE problems (the bench could not test; not a pass, not a kernel failure):');
    for (const c of infra) console.log(`  ${c.detail}`);
  }
  console.log(
    `${count('skip')} skipped (a kernel host lacks what the scenario needs), ${infra.length} infrastructure`,
  );
  console.log(`${count('pass')} passed, ${failed.length} failed`);
  if (failed.length > 0) return EXIT_FAILED;
  if (infra.length > 0) return EXIT_INFRA;
  return 0;
}

main().then(
  (status) => {
    process.exitCode = status;
  },
  (err: unknown) => {
    console.error(err);
    console.log('0 passed, 1 failed');
    process.exitCode = EXIT_FAILED;
  },
);
