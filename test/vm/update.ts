/**
 * The live update part of the real-kernel bench (`test/vm/run.ts --only update`; docs/vm.md):
 *
 *   1. luod on the real kernel: luod and one example VMM per size in boot 0, `luoctl load`
 *      and `luoctl update` (luod's barrier, kexec_file_load'ed kernel, reboot), then in the
 *      next kernel luod recovers from `luod-internal` and every VMM, started again with the
 *      same id, claims its session, resumes its guest and verifies every byte
 *      (vm/guest/luod-update.sh; each VMM's pause and resume on the console, --timeline);
 *   2. the floor: the same memfds through /dev/liveupdate by a minimal C program, which
 *      kexecs itself and verifies in the next kernel (test/vm/floor/luo_floor.c,
 *      vm/guest/floor.sh);
 *   3. the blackout report of both on the same kernels (blackout.ts).
 *
 * Each path is its own QEMU run (one process across the kexec). `liveUpdates` does this for
 * every kernel pair it is given (by default 7.2 -> 7.2 and 7.2 -> 7.3, one after the other,
 * never two QEMU runs at once: they would slow each other's blackout) and writes one report
 * holding every pair: build/vm/blackout.{json,txt}.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { luodErrors, readIf, restoredProblems } from '../../src/vm/luod-job.js';
import type { QemuResult } from '../../src/vm/qemu.js';
import {
  type BlackoutReport,
  blackoutReport,
  collectMarks,
  parseConsoleLog,
  type RunMarks,
} from './blackout.js';
import { writeBlackoutFiles } from './blackout-file.js';

/** The memfds of both paths: one example VMM per size (64-256 MiB, as a small VM's RAM). */
export const UPDATE_SIZES = ['64M', '128M', '256M'];
/**
 * Guest RAM in shmem transparent huge pages on both paths, as production hosts back
 * guest memory: in 4 KiB folios, the next kernel's KHO restore cost grows with how
 * scattered they are, which the Node processes of the luod path make worse than the
 * floor's single C program (docs/vm.md, the kexec phase).
 */
export const UPDATE_SHMEM_THP = process.env.LUOKIT_VM_SHMEM_THP ?? 'within_size';

type CheckStatus = 'pass' | 'fail' | 'infra' | 'skip';

/**
 * QEMU's translated-code buffer for both paths' runs, in MiB (QEMU's default here is 512).
 * TCG keeps translations across a kexec; in the next kernel every write to a page that held
 * code boot 0's processes ran invalidates them first (QEMU's self-modifying-code path). With
 * 512 MiB nothing is flushed in boot 0, so the luod path's boot 1 (Node starts: luod, the
 * holder) ran through hundreds of thousands of such invalidations, and took 3 to 8 times its
 * boot-0 start; the floor, a small C program, barely any. A 64 MiB buffer is flushed every
 * few seconds, so few stale translations reach the next kernel (docs/vm.md, "Results").
 * The same for both paths; LUOKIT_VM_TB_SIZE overrides it. KVM has none of this.
 */
export const UPDATE_TB_SIZE_MB = 64;

/** What run.ts lends this part: its guest runner, its checks and timings. */
export interface BenchContext {
  root: string;
  out: string;
  timeoutScale: number;
  guest(
    name: string,
    kernels: readonly string[],
    command: string,
    env: Record<string, string>,
    timeoutMs: number,
    image: string,
    extra?: { tbSizeMb?: number },
  ): Promise<{ name: string; dir: string; result: QemuResult }>;
  check(name: string, status: CheckStatus, detail?: string): void;
  timings: Record<string, number | string>;
  log(text: string): void;
  run(
    command: string,
    args: readonly string[],
    options?: { prefix?: string; quiet?: boolean },
  ): Promise<{ status: number | null; stdout: string; stderr: string; error?: Error }>;
  /** An infrastructure error (the bench could not test). */
  infra(message: string): Error;
}

/** gcc -static one of the bench's C programs into build/vm/guest/ (a missing gcc is infrastructure). */
async function buildStatic(ctx: BenchContext, source: string, name: string): Promise<string> {
  const binary = path.join(ctx.out, 'guest', name);
  fs.mkdirSync(path.dirname(binary), { recursive: true });
  const r = await ctx.run('gcc', ['-static', '-O2', '-Wall', '-Wextra', '-Werror', '-o', binary, source], {
    prefix: '[gcc] ',
  });
  if (r.error)
    throw ctx.infra(`cannot run gcc for ${source}: ${r.error.message} (apt-get install gcc libc6-dev)`);
  if (r.status !== 0) throw new Error(`gcc failed on ${source} (exit ${r.status}): ${r.stderr.trim()}`);
  return binary;
}

/** The floor program (test/vm/floor/luo_floor.c). */
function buildFloor(ctx: BenchContext): Promise<string> {
  return buildStatic(ctx, 'test/vm/floor/luo_floor.c', 'luo_floor');
}

/**
 * The VMMs of the luod path: the C VMM (test/vm/vmm/luo_vmm.c), a native program as real VMMs
 * are, unless LUOKIT_VM_NODE_VMM=1 asks for the example VMM (Node), for comparison. Returns
 * the binary, or undefined for the example VMM.
 */
async function buildVmm(ctx: BenchContext): Promise<string | undefined> {
  if (process.env.LUOKIT_VM_NODE_VMM === '1') return undefined;
  return buildStatic(ctx, 'test/vm/vmm/luo_vmm.c', 'luo_vmm');
}

/** What the luod path's VMMs are, in the report. */
export function vmmName(binary: string | undefined): string {
  return binary === undefined ? 'example VMM (Node)' : 'C VMM (luo_vmm)';
}

/**
 * luod's fd holder started by the guest job beside luod in the next boot (LUOKIT_EARLY_HOLDER),
 * unless LUOKIT_VM_EARLY_HOLDER=0: luod then starts it itself once its restore finds an update.
 */
const EARLY_HOLDER = process.env.LUOKIT_VM_EARLY_HOLDER !== '0';

/**
 * luod, luoctl, the example VMM and luo-qemu as the guest runs them: the project's own
 * bins in dist/ (`npm run build`), which run one bundle each with its V8 code cache
 * (scripts/bundle.mjs, src/sys/bundle-runner.cts). In the next kernel their start is
 * blackout (docs/vm.md, "luod-ready"), and the guest runs exactly what a host installs.
 * Built again when any source is newer than the bundles, so a run never tests stale code.
 * Returns dist/.
 */
export function guestPrograms(ctx: BenchContext): Promise<string> {
  building ??= buildIfStale(ctx);
  return building;
}

/** Checked once per bench run: the update and qemu parts share the build. */
let building: Promise<string> | undefined;

/** What `npm run build` reads: a change to any of these makes dist/bundle stale. */
const BUILD_INPUTS = [
  'src',
  'scripts/bundle.mjs',
  'scripts/build-native.sh',
  'native',
  'package.json',
  'tsconfig.json',
];
/** The bundles the guest jobs run (their code caches are written last, by scripts/bundle.mjs). */
const GUEST_BUNDLES = ['luod', 'luoctl', 'holder', 'vmm', 'luo-qemu'];

async function buildIfStale(ctx: BenchContext): Promise<string> {
  const dist = path.join(ctx.root, 'dist');
  const built = Math.min(
    ...GUEST_BUNDLES.map((name) => mtimeOr(path.join(dist, 'bundle', `${name}.cache`), 0)),
  );
  const newest = Math.max(...BUILD_INPUTS.map((input) => newestMtime(path.join(ctx.root, input))));
  if (built === 0 || newest > built) {
    const r = await ctx.run('npm', ['--prefix', ctx.root, 'run', '--silent', 'build'], {
      prefix: '[build] ',
    });
    if (r.status !== 0) throw new Error(`npm run build failed (exit ${r.status}): ${r.stderr.trim()}`);
  }
  for (const name of GUEST_BUNDLES) {
    ctx.timings[`guest bundle ${name}.cjs, bytes`] = fs.statSync(
      path.join(dist, 'bundle', `${name}.cjs`),
    ).size;
  }
  return dist;
}

function mtimeOr(file: string, fallback: number): number {
  try {
    return fs.statSync(file).mtimeMs;
  } catch {
    return fallback;
  }
}

/** The newest modification time of a file, or of anything under a directory. */
function newestMtime(file: string): number {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    return 0;
  }
  if (!st.isDirectory()) return st.mtimeMs;
  let newest = st.mtimeMs;
  for (const entry of fs.readdirSync(file)) newest = Math.max(newest, newestMtime(path.join(file, entry)));
  return newest;
}

function marksOf(dir: string): RunMarks {
  return collectMarks(parseConsoleLog(readIf(path.join(dir, 'console.log'))));
}

/** Markers that say a guest job gave up (the reason is in their fields). */
function failures(result: QemuResult, kind: string): string[] {
  return result.markers.filter((m) => m.kind === kind).map((m) => m.line.trim());
}

async function luodPath(
  ctx: BenchContext,
  kernels: readonly string[],
  label: string,
  runLabel: string,
  image: string,
  bin: string,
  vmm: string | undefined,
): Promise<RunMarks> {
  // The gate's refusal on the real kernel: Debian's stock kernel (no KHO), read in the guest.
  const gateCheck = `the gate refuses Debian's stock kernel (no KHO) on the real kernel (${label})`;
  const stock = await ctx.run('sh', ['scripts/fetch-debian-kernel.sh', 'amd64'], { quiet: true });
  const refuse = stock.status === 0 ? stock.stdout.trim().split('\n').at(-1)! : '';
  if (!refuse) ctx.check(gateCheck, 'infra', `scripts/fetch-debian-kernel.sh amd64: ${stock.stderr.trim()}`);
  const g = await ctx.guest(
    `update-${runLabel}`,
    kernels,
    'exec sh vm/guest/luod-update.sh',
    {
      LUOKIT_GUEST_BIN: bin,
      LUOKIT_SIZES: UPDATE_SIZES.join(','),
      LUOKIT_SHMEM_THP: UPDATE_SHMEM_THP,
      ...(vmm !== undefined && { LUOKIT_NATIVE_VMM: vmm }),
      ...(EARLY_HOLDER && { LUOKIT_EARLY_HOLDER: '1' }),
      ...(process.env.LUOKIT_VM_CPU_PROF === '1' && { LUOKIT_CPU_PROF: '1' }),
      // Investigations: node's own flags for luod and the holder in boot 1 (e.g. --jitless).
      ...(process.env.LUOKIT_VM_LUOD_NODE_FLAGS && {
        LUOD_NODE_FLAGS: process.env.LUOKIT_VM_LUOD_NODE_FLAGS,
      }),
      ...(process.env.LUOKIT_VM_VMM_NICE !== undefined && {
        LUOKIT_VMM_NICE: process.env.LUOKIT_VM_VMM_NICE,
      }),
      ...(refuse && { LUOKIT_GATE_REFUSE: refuse }),
    },
    600_000 * ctx.timeoutScale,
    image,
    { tbSizeMb: UPDATE_TB_SIZE_MB },
  );
  if (refuse) {
    const refused = readIf(path.join(g.dir, 'gate-refused.json'));
    let verdict: { ok?: boolean; error?: { code?: string; message?: string } } = {};
    try {
      verdict = JSON.parse(refused);
    } catch {
      // Checked below: no JSON is a failure.
    }
    const sentence = /has no KHO; this kernel writes kho-v\d+: the next kernel would boot cold/;
    ctx.check(
      gateCheck,
      verdict.ok === false && verdict.error?.code === 'EPROTO' && sentence.test(verdict.error.message ?? '')
        ? 'pass'
        : 'fail',
      refused.trim() || 'no gate-refused.json',
    );
  }
  const run = marksOf(g.dir);
  const problems = [
    ...failures(g.result, 'UPDATE-FAILED'),
    ...failures(g.result, 'KEXEC-FAILED'),
    ...(g.result.outcome === 'failed' ? [g.result.reason ?? 'the guest run failed'] : []),
  ];
  if (g.result.boots.length < 2 && problems.length === 0) problems.push('the guest never reached boot 1');
  for (const boot of [0, 1]) {
    const errors = luodErrors(readIf(path.join(g.dir, `luod.boot${boot}.log`)));
    for (const e of errors) problems.push(`luod error in boot ${boot}: ${e}`);
  }
  if (g.result.boots.length >= 2) problems.push(...restoredProblems(g.dir));
  UPDATE_SIZES.forEach((size, i) => {
    const id = `vm-${i + 1}`;
    const v = run.vmms.find((x) => x.id === id);
    const name = `live update through luod: ${id} (${size}) claimed and verified byte for byte (${label})`;
    if (!v)
      ctx.check(name, 'fail', `no result from ${id} in boot 1${problems[0] ? ` (${problems[0]})` : ''}`);
    else if (!v.verified) ctx.check(name, 'fail', v.error ?? 'not verified');
    // The ratio compares like with like only if the VMMs checked their RAM as the floor does.
    else if (v.verify !== 'pattern')
      ctx.check(name, 'fail', `verified by ${v.verify ?? 'an unnamed method'}, not against the pattern`);
    else if (v.bytes !== parseSize(size))
      ctx.check(name, 'fail', `${v.bytes} bytes came back, expected ${parseSize(size)}`);
    else ctx.check(name, 'pass');
  });
  ctx.check(
    `live update through luod: luod, kexec, recovery (${label})`,
    problems.length ? 'fail' : 'pass',
    problems.join('; '),
  );
  return run;
}

async function floorPath(
  ctx: BenchContext,
  kernels: readonly string[],
  label: string,
  runLabel: string,
  image: string,
  floor: string,
): Promise<RunMarks> {
  const g = await ctx.guest(
    `floor-${runLabel}`,
    kernels,
    'exec sh vm/guest/floor.sh',
    { LUOKIT_FLOOR: floor, LUOKIT_SIZES: UPDATE_SIZES.join(','), LUOKIT_SHMEM_THP: UPDATE_SHMEM_THP },
    300_000 * ctx.timeoutScale,
    image,
    { tbSizeMb: UPDATE_TB_SIZE_MB },
  );
  const run = marksOf(g.dir);
  const problems = [
    ...failures(g.result, 'FLOOR-ERROR'),
    ...failures(g.result, 'KEXEC-FAILED'),
    ...(g.result.outcome === 'failed' ? [g.result.reason ?? 'the guest run failed'] : []),
  ];
  if (g.result.outcome === 'ok' && g.result.exitStatus !== 0)
    problems.push(`luo_floor restore exited ${g.result.exitStatus}`);
  UPDATE_SIZES.forEach((size, i) => {
    const name = `floor-${i + 1}`;
    const v = run.floor.find((x) => x.name === name);
    const check = `blackout floor (C, /dev/liveupdate directly): ${name} (${size}) verified after kexec (${label})`;
    if (!v) ctx.check(check, 'fail', `no result${problems[0] ? ` (${problems[0]})` : ''}`);
    else ctx.check(check, v.verified && v.bytes === parseSize(size) ? 'pass' : 'fail', v.error);
  });
  if (problems.length > 0) ctx.check(`blackout floor guest run (${label})`, 'fail', problems.join('; '));
  return run;
}

function parseSize(text: string): number {
  const m = /^(\d+)([KMG]?)$/.exec(text);
  if (!m) throw new Error(`bad size ${text}`);
  return Number(m[1]) * 2 ** { '': 0, K: 10, M: 20, G: 30 }[m[2] as '' | 'K' | 'M' | 'G'];
}

/** `7.2,7.2;7.2,7.3` -> [['7.2', '7.2'], ['7.2', '7.3']] (a pair: the kernel of each boot). */
export function parseUpdatePairs(text: string): string[][] {
  return text
    .split(';')
    .map((pair) =>
      pair
        .split(',')
        .map((v) => v.trim())
        .filter((v) => v !== ''),
    )
    .filter((pair) => pair.length > 0);
}

/** One kernel pair of the live update part: the bzImage of each boot and its names. */
export interface UpdatePair {
  kernels: readonly string[];
  /** For check names: `7.2->7.3`. */
  label: string;
  /** For run directories: `7.2-7.3`. */
  runLabel: string;
}

/**
 * Both paths on every pair, one pair after the other, then the report of all of them
 * (build/vm/blackout.json: `{clock, pairs: [report, ...]}`; blackout.txt: a table per pair).
 */
export async function liveUpdates(
  ctx: BenchContext,
  pairs: readonly UpdatePair[],
  image: string,
): Promise<BlackoutReport[]> {
  const [floor, vmm, bin] = [await buildFloor(ctx), await buildVmm(ctx), await guestPrograms(ctx)];
  ctx.timings['live update part: VMMs'] = vmmName(vmm);
  ctx.timings["live update part: QEMU's translated-code buffer, MiB"] =
    Number(process.env.LUOKIT_VM_TB_SIZE ?? 0) || UPDATE_TB_SIZE_MB;
  ctx.timings['live update part: fd holder started by'] = EARLY_HOLDER
    ? 'the guest job, beside luod'
    : 'luod, after its restore found an update';
  const reports: BlackoutReport[] = [];
  for (const pair of pairs) reports.push(await liveUpdate(ctx, pair, image, floor, bin, vmm));
  console.log(writeBlackoutFiles(ctx.out, { pairs: reports }));
  return reports;
}

/** Both paths on one pair of kernels, and its report's checks. */
async function liveUpdate(
  ctx: BenchContext,
  { kernels, label, runLabel }: UpdatePair,
  image: string,
  floor: string,
  bin: string,
  vmm: string | undefined,
): Promise<BlackoutReport> {
  const luod = await luodPath(ctx, kernels, label, runLabel, image, bin, vmm);
  const floorRun = await floorPath(ctx, kernels, label, runLabel, image, floor);
  const report = blackoutReport({
    kernels: label,
    sizes: UPDATE_SIZES,
    shmemThp: UPDATE_SHMEM_THP,
    vmm: vmmName(vmm),
    luod,
    floor: floorRun,
  });
  const missing = [
    ...report.luod.missing.map((m) => `luod ${m}`),
    ...report.floor.missing.map((m) => `floor ${m}`),
  ];
  ctx.check(
    `blackout report, both paths measured (${label})`,
    report.ratio !== null && missing.length === 0 ? 'pass' : 'fail',
    missing.length ? `missing marks: ${missing.join(', ')}` : undefined,
  );
  ctx.timings[`blackout (pause to resume) luod (${label}), ms`] = report.luod.totalMs ?? 'n/a';
  ctx.timings[`blackout (pause to resume) floor (${label}), ms`] = report.floor.totalMs ?? 'n/a';
  ctx.timings[`blackout ratio luod/floor (${label})`] = report.ratio ?? 'n/a';
  ctx.timings[`Node's own start in the next kernel, cold page cache (${label}), ms`] =
    report.nodeStart?.coldMs ?? 'n/a';
  ctx.timings[`blackout ratio luod/(floor + Node's cold start) (${label})`] = report.ratioBeyondNode ?? 'n/a';
  ctx.timings[`verification after the blackout, luod (${label}), ms`] = report.luod.verifyMs ?? 'n/a';
  ctx.timings[`verification after the blackout, floor (${label}), ms`] = report.floor.verifyMs ?? 'n/a';
  return report;
}
