/**
 * `luoctl qualify --from A --to B` (docs/qualify.md): one kernel pair qualified on the real
 * kernels under QEMU, with the bench's guest (src/vm: the host's / over 9p, one QEMU
 * process across the kexec) running the standard workload (vm/guest/qualify.sh) on the
 * installed luokit, all of it across ONE kexec, luod's:
 *
 *   boot 0 on A: the kernel's selftests (liveupdate; each kexec test's stage 1, held), the
 *   scenario suite's two-stage scenarios (before-kexec stages, held), luod on the real
 *   /dev/liveupdate with one example VMM per memfd (the data pattern, a session each) and
 *   a QEMU VM through luo-qemu; `luoctl load B --force` (the gate's verdict is kept, but a
 *   qualification observes what the kernels really do), `luoctl update`;
 *   boot 1 on B: luod restores, the VMMs claim and compare every byte, the QEMU VM goes on;
 *   then each selftest's stage 2 and each scenario's after-kexec stage; the kernel's log.
 *
 * Every check is recorded with its part, its kernel and its outcome (held, failed, lost
 * with the handover, not run).
 * The outcome is read from what happened (works, cold boot, panic, files lost, or a run
 * that failed otherwise), checked against the gate's prediction from the two images, and
 * written as a qualification record (record.ts) into the records directory; the run's
 * console and outputs stay under DIR/runs/ID.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { gateVerdict, type SpokenFormats } from '../image/gate.js';
import { type KernelInfo, readKernelInfo } from '../image/kernel-info.js';
import { CodedError } from '../sys/error.js';
import { counterGuest } from '../vm/counter-guest.js';
import { BANNER, continuityProblem, guestPause, parseSerial } from '../vm/counter-serial.js';
import { buildInitramfs, PACKAGE_ROOT, runGuestJob } from '../vm/guest.js';
import { logEvents, luodErrors, readIf, restoredProblems } from '../vm/luod-job.js';
import type { QemuResult } from '../vm/qemu.js';
import {
  QUALIFICATION_SCHEMA,
  type QualificationCheck,
  type QualificationOutcome,
  type QualificationRecord,
  type QualifiedKernel,
  recordId,
  type WorkloadPart,
  writeQualification,
} from './record.js';

/** The memfds of the workload: one example VMM each (small: TCG fills and checks them). */
export const QUALIFY_MEMFDS = ['16M', '32M'];
/** The kernel's kexec selftests (tools/testing/selftests/liveupdate), as the bench runs them. */
export const KEXEC_SELFTESTS = [
  'luo_kexec_simple',
  'luo_multi_session',
  'luo_stress_sessions',
  'luo_stress_files',
];
/** The QEMU VM's RAM (the counter guest uses under 1 MiB; SeaBIOS wants a few) and the CMOS seconds it must run on each side. */
export const QUALIFY_QEMU_RAM = '32M';
const QEMU_EDGES = 3;

function describeWorkload(w: Workload): string {
  const parts = [
    ...(w.kexecTests
      ? [`the kernel's selftests (liveupdate in A; ${w.kexecTests.join(', ')}: stage 1 in A, stage 2 in B)`]
      : []),
    ...(w.scenarios
      ? ["the scenario suite's two-stage scenarios (before-kexec in A, after-kexec in B)"]
      : []),
    `luod with one example VMM per memfd (${w.memfds.join(' + ')}, the data pattern, a session each; verified byte for byte in B)`,
    ...(w.qemu ? ['a QEMU VM (the counter guest) through luo-qemu, continued in B'] : []),
  ];
  return `${parts.join('; ')}; all crossing one kexec: luoctl load --force (the gate recorded), luoctl update`;
}
const GUEST_MEMORY = '2G';
const GUEST_CPUS = 2;

export interface QualifyOptions {
  from: string;
  to: string;
  /** The records directory (the record goes here, the run's files under runs/). */
  dir: string;
  luokitVersion: string;
  timeoutScale?: number;
  memfds?: readonly string[];
  /**
   * The kernel's LUO selftests, statically linked (tools/testing/selftests/liveupdate:
   * `liveupdate` and the kexec tests): `liveupdate` and every kexec test's stage 1 in A,
   * stage 2 in B. Absent: that part is not run (say why in `omitted`).
   */
  selftests?: string;
  /** The kexec tests to run (default KEXEC_SELFTESTS). */
  kexecTests?: readonly string[];
  /** The scenario suite's guest program (one JavaScript file, LUOKIT_SCENARIO_MODE=qualify). */
  scenarios?: string;
  /** A QEMU VM (the counter guest) through luo-qemu across the update. */
  qemu?: boolean;
  /** The parts left out on purpose, recorded with why. */
  omitted?: Omitted;
  /** Progress, one line at a time (stderr in the CLI). */
  log?: (text: string) => void;
}

export interface QualifyResult {
  record: QualificationRecord;
  file: string;
}

function sha256(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

function qualified(image: string, info: KernelInfo): QualifiedKernel {
  return {
    image: path.resolve(image),
    sha256: sha256(image),
    release: info.release,
    liveupdate: info.liveupdate,
    formats: {
      ...(info.formats.kho && { kho: info.formats.kho }),
      ...(info.formats.luo && { luo: info.formats.luo }),
      files: info.formats.files,
    },
  };
}

function spoken(k: QualifiedKernel): SpokenFormats {
  return { release: k.release, ...k.formats, source: `image ${k.image}` };
}

function parseSize(text: string): number {
  const m = /^(\d+)([KMG]?)$/.exec(text);
  if (!m) throw new CodedError('EINVAL', `bad memfd size ${text} (e.g. 64M)`);
  return Number(m[1]) * 2 ** { '': 0, K: 10, M: 20, G: 30 }[m[2] as '' | 'K' | 'M' | 'G'];
}

interface VmmVerdict {
  id: string;
  verified: boolean;
  bytes?: number;
  verify?: string;
  error?: string;
  atMs: number;
}

/** The luod job's moments, host time: luod's timeline lines and the VMMs' verdicts, per boot. */
interface Moments {
  luod: Record<string, number>;
  vmms: VmmVerdict[];
}

function watch(): { moments: Moments; onLine: (line: string, atMs: number) => void } {
  const moments: Moments = { luod: {}, vmms: [] };
  let boot = 0;
  const onLine = (line: string, atMs: number): void => {
    const b = /LUOKIT-BOOT boot=(\d+)/.exec(line);
    if (b) boot = Number(b[1]);
    const json = line.indexOf('{"luod_phase":');
    if (json >= 0) {
      try {
        const phase = (JSON.parse(line.slice(json)) as { luod_phase: string }).luod_phase;
        moments.luod[`${phase}@${boot}`] ??= atMs;
      } catch {
        // a torn line: the figure is missing, never wrong
      }
    }
    const vmm = /LUOKIT-VMM boot=1 id=(\S+) result=(.*)$/.exec(line);
    if (vmm) {
      try {
        const r = JSON.parse(vmm[2]!) as Omit<VmmVerdict, 'id' | 'atMs'>;
        moments.vmms.push({
          id: vmm[1]!,
          verified: r.verified === true,
          ...(r.bytes !== undefined && { bytes: r.bytes }),
          ...(r.verify !== undefined && { verify: r.verify }),
          ...(r.error !== undefined && { error: r.error }),
          atMs,
        });
      } catch {
        moments.vmms.push({ id: vmm[1]!, verified: false, error: 'unreadable result line', atMs });
      }
    }
  };
  return { moments, onLine };
}

/** What the next kernel said of the handover (dmesg.boot1.txt): its KHO and LUO lines. */
export function handoverLog(dmesg: string): string[] {
  return dmesg
    .split('\n')
    .filter((l) => !/ommand line:/.test(l) && /\b(KHO|kho|liveupdate|luo|LUO)\b|kexec_handover|luo_/.test(l))
    .map((l) => l.trim())
    .slice(0, 20);
}

/** What the run was asked to do: the parts of the workload that ran. */
export interface Workload {
  memfds: readonly string[];
  /** The kexec selftests (stage 1 in A, stage 2 in B), with `liveupdate` in A; absent: not run. */
  kexecTests?: readonly string[];
  scenarios?: boolean;
  qemu?: boolean;
}

/** One two-stage scenario's result as the guest's program wrote it (scenarios.bootN.json). */
interface ScenarioOutcome {
  id: string;
  group: string;
  stage: string;
  status: string;
  error?: string;
}

function scenarioResults(dir: string, boot: number): ScenarioOutcome[] | undefined {
  try {
    return (
      JSON.parse(readIf(path.join(dir, `scenarios.boot${boot}.json`))) as { results: ScenarioOutcome[] }
    ).results;
  } catch {
    return undefined;
  }
}

function oneLine(text: string | undefined, max = 300): string | undefined {
  return text === undefined ? undefined : text.replace(/\s+/g, ' ').slice(0, max);
}

/** A `liveupdate` selftest output's TAP lines: `ok N name`, `not ok N name`, `# SKIP`. */
function tapSummary(text: string): { passed: number; total: number; failed: string[] } {
  let passed = 0;
  let total = 0;
  const failed: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^(not ok|ok) \d+ (.*?)(\s+#\s*(SKIP|skip).*)?$/.exec(line.trim());
    if (!m) continue;
    total++;
    if (m[1] === 'ok') passed++;
    else failed.push(m[2]!.trim());
  }
  return { passed, total, failed };
}

/**
 * Judge one guest run: every check of every part with its outcome, and the pair's outcome
 * read from what happened. Checks in A come first; those in B are listed even when B never
 * ran them (the kexec did not happen, the next kernel panicked), so the record names
 * everything the workload meant to prove.
 */
export function judgeRun(
  result: QemuResult,
  dir: string,
  moments: Moments,
  from: QualifiedKernel,
  to: QualifiedKernel,
  predicted: string,
  workload: Workload,
): { checks: QualificationCheck[]; outcome: QualificationOutcome; reason?: string } {
  type Pending = Omit<QualificationCheck, 'outcome'> & { ran: boolean };
  const pending: Pending[] = [];
  const check = (
    part: QualificationCheck['part'],
    kernel: 'from' | 'to',
    name: string,
    ok: boolean,
    detail?: string,
    ran = true,
  ): boolean => {
    pending.push({ name, ok, part, kernel, ran, ...(detail && { detail: oneLine(detail, 600)! }) });
    return ok;
  };
  const marker = (kind: string, fields: Record<string, string>) =>
    result.markers.find(
      (m) => m.kind === kind && Object.entries(fields).every(([k, v]) => m.fields[k] === v),
    );
  const boot0 = result.boots.find((b) => b.boot === 0);
  const boot1 = result.boots.find((b) => b.boot === 1);
  const guestFailures = (boot: number, part?: string) =>
    result.markers
      .filter(
        (m) =>
          (m.kind === 'QUALIFY-FAILED' || m.kind === 'UPDATE-FAILED') &&
          m.fields.boot === String(boot) &&
          (part === undefined || m.fields.part === part),
      )
      .map((m) => m.fields.reason ?? m.line);

  // --- A: everything set up before the kexec ---
  check(
    'kernel',
    'from',
    `boot 0 runs ${from.release}`,
    boot0?.release === from.release,
    boot0 ? `uname -r: ${boot0.release}` : 'no boot 0',
  );
  const tests = workload.kexecTests ?? [];
  const selftestStatus = (name: string, stage: string): number | undefined => {
    const m = marker('RESULT', { kind: 'selftest', name, stage });
    return m === undefined ? undefined : Number(m.fields.status);
  };
  if (workload.kexecTests) {
    const st = selftestStatus('liveupdate', 'single');
    const tap = tapSummary(readIf(path.join(dir, 'liveupdate.boot0.txt')));
    check(
      'selftests',
      'from',
      `the kernel's selftest liveupdate in ${from.release}: every test passes`,
      st === 0 && tap.total > 0 && tap.failed.length === 0,
      st === undefined
        ? 'never ran'
        : `exit ${st}, ${tap.passed}/${tap.total} pass${tap.failed.length ? `; failed: ${tap.failed.join(', ')}` : ''}`,
    );
    for (const t of tests) {
      const s1 = selftestStatus(t, '1');
      check(
        'selftests',
        'from',
        `selftest ${t} stage 1 (preserve, hold) in ${from.release}`,
        s1 === 0,
        s1 === undefined ? 'never ran' : s1 === 0 ? undefined : `exit ${s1} (${t}.boot0.txt)`,
      );
    }
  }
  const before = workload.scenarios ? scenarioResults(dir, 0) : undefined;
  if (workload.scenarios) {
    if (before === undefined || before.length === 0)
      check(
        'scenarios',
        'from',
        "the scenarios' before-kexec stages ran",
        false,
        guestFailures(0, 'scenarios')[0] ?? 'no scenarios.boot0.json',
      );
    for (const r of before ?? [])
      check(
        'scenarios',
        'from',
        `scenario ${r.id} in ${from.release}`,
        r.status === 'pass',
        r.status === 'pass' ? undefined : `${r.status}: ${oneLine(r.error) ?? ''}`,
      );
  }
  const subscribed = result.markers.some(
    (m) =>
      m.kind === 'PHASE' &&
      m.fields.path === 'luod' &&
      m.fields.boot === '0' &&
      m.fields.phase === 'subscribed',
  );
  // A failure that ended boot 0 before luod started (qualify.sh stops there): luod's and the
  // VM's checks never ran.
  const stoppedEarly = result.markers.some(
    (m) =>
      m.kind === 'QUALIFY-FAILED' &&
      m.fields.boot === '0' &&
      ['setup', 'selftests', 'scenarios'].includes(m.fields.part ?? ''),
  );
  check(
    'luod',
    'from',
    `luod and ${workload.memfds.length} memfd sessions (${workload.memfds.join(' + ')}, the data pattern) in boot 0`,
    subscribed,
    subscribed ? undefined : (guestFailures(0)[0] ?? result.reason),
    !stoppedEarly,
  );
  const serial0 = readIf(path.join(dir, 'serial.boot0.txt'));
  if (workload.qemu) {
    const running = marker('PHASE', { path: 'qualify', boot: '0', phase: 'qemu-running' }) !== undefined;
    check(
      'qemu',
      'from',
      `a QEMU VM through luo-qemu runs in ${from.release} (the counter guest booted, its clock ran)`,
      running && serial0.includes(BANNER),
      running
        ? serial0.includes(BANNER)
          ? undefined
          : 'no banner from the counter guest'
        : (guestFailures(0, 'qemu')[0] ?? 'never started'),
      subscribed || guestFailures(0, 'qemu').length > 0,
    );
  }
  let load: { loaded?: { gate?: { outcome?: string; sentence?: string } } } = {};
  try {
    load = JSON.parse(readIf(path.join(dir, 'load.json')));
  } catch {
    // checked below
  }
  const guestGate = load.loaded?.gate;
  const loadRan = fs.existsSync(path.join(dir, 'load.json'));
  if (subscribed) {
    check(
      'luod',
      'from',
      "luoctl load: the gate in the guest's luod agrees with kernel-info's prediction",
      guestGate?.outcome === predicted,
      guestGate
        ? `${guestGate.outcome}: ${guestGate.sentence}`
        : loadRan
          ? 'load.json has no gate'
          : 'never ran',
      loadRan,
    );
  }
  const kexecAt = moments.luod['kexec@0'];
  check(
    'luod',
    'from',
    `luod kexecs, once for everything above (luoctl update: barrier, preserve, kexec_file_load, reboot)`,
    kexecAt !== undefined,
    kexecAt === undefined ? (guestFailures(0)[0] ?? result.reason ?? 'no kexec phase from luod') : undefined,
    !stoppedEarly,
  );

  // --- B: what came back ---
  const reached = check(
    'kernel',
    'to',
    `the next kernel boots: ${to.release} reaches /init`,
    boot1?.release === to.release,
    boot1
      ? `uname -r: ${boot1.release}`
      : `${result.reason ?? 'no boot 1'}${result.panic ? ` (${result.panic})` : ''}`,
    kexecAt !== undefined || boot1 !== undefined,
  );
  const ran = reached;
  const notReached = reached ? undefined : `never ran: ${to.release} did not reach /init`;
  const restored = reached ? restoredProblems(dir) : [];
  const restoredOk = check(
    'luod',
    'to',
    'luod restores the update from luod-internal in the next kernel',
    reached && restored.length === 0,
    notReached ?? restored.join('; '),
    ran,
  );
  let memfdsOk = true;
  workload.memfds.forEach((size, i) => {
    const id = `vm-${i + 1}`;
    const v = moments.vmms.find((x) => x.id === id);
    const ok = v?.verified === true && v.verify === 'pattern' && v.bytes === parseSize(size);
    memfdsOk &&= ok;
    check(
      'luod',
      'to',
      `memfd ${id} (${size}) claimed in the next kernel and verified byte for byte`,
      ok,
      notReached ??
        (v === undefined
          ? 'no result'
          : ok
            ? undefined
            : (v.error ?? `verified ${v.verified}, ${v.bytes} bytes`)),
      ran,
    );
  });
  if (workload.qemu) {
    const serial1 = readIf(path.join(dir, 'serial.boot1.txt'));
    const lq1 = readIf(path.join(dir, 'luo-qemu.boot1.log'));
    const problems: string[] = [];
    if (reached) {
      if (logEvents(lq1, 'claimed').length !== 1) problems.push('luo-qemu claimed nothing');
      if (logEvents(lq1, 'cold-boot').length > 0) problems.push('luo-qemu cold-booted the VM');
      if (logEvents(lq1, 'continued').length !== 1) problems.push('luo-qemu did not continue the VM');
      const continuity =
        serial1 === '' ? 'nothing from the VM after the update' : continuityProblem(serial0, serial1);
      if (continuity) problems.push(continuity);
      const exit = marker('QEMU-EXIT', { boot: '1' });
      if (exit?.fields.status !== '0')
        problems.push(`luo-qemu exited ${exit?.fields.status ?? '(never)'} on SIGTERM, not 0`);
      for (const b of [0, 1])
        for (const e of luodErrors(readIf(path.join(dir, `luo-qemu.boot${b}.log`))))
          problems.push(`luo-qemu error in boot ${b}: ${e}`);
    }
    check(
      'qemu',
      'to',
      'the QEMU VM goes on in the next kernel: luo-qemu claims it, the counter continues where it stopped, no guest reboot, RAM sum unchanged',
      reached && problems.length === 0,
      notReached ?? problems.join('; '),
      ran,
    );
  }
  if (workload.kexecTests) {
    for (const t of tests) {
      const s2 = selftestStatus(t, '2');
      check(
        'selftests',
        'to',
        `selftest ${t} stage 2 (retrieve, verify, finish) in ${to.release}`,
        s2 === 0,
        notReached ?? (s2 === undefined ? 'never ran' : s2 === 0 ? undefined : `exit ${s2} (${t}.boot1.txt)`),
        ran,
      );
    }
  }
  if (workload.scenarios) {
    const after = reached ? (scenarioResults(dir, 1) ?? []) : [];
    // Every two-stage group A started has its after-kexec stage in B.
    for (const b of before ?? []) {
      const r = after.find((x) => x.group === b.group && x.stage === 'after-kexec');
      const id = r?.id ?? b.id.replace(/\/before$/, '/after');
      check(
        'scenarios',
        'to',
        `scenario ${id} in ${to.release}`,
        r?.status === 'pass',
        notReached ??
          (r === undefined
            ? (guestFailures(1, 'scenarios')[0] ?? 'no result')
            : r.status === 'pass'
              ? undefined
              : `${r.status}: ${oneLine(r.error) ?? ''}`),
        ran,
      );
    }
  }
  const errors = [0, 1].flatMap((b) =>
    luodErrors(readIf(path.join(dir, `luod.boot${b}.log`))).map((e) => `boot ${b}: ${e}`),
  );
  check(
    'luod',
    'to',
    'luod logged no error in either boot',
    reached && errors.length === 0,
    notReached ?? errors.join('; '),
    ran,
  );

  // --- the outcome, in the gate's terms ---
  const aHeld = pending.filter((c) => c.kernel === 'from').every((c) => c.ok);
  const bHeld = pending.filter((c) => c.kernel === 'to').every((c) => c.ok);
  const luodLog1 = readIf(path.join(dir, 'luod.boot1.log'));
  let outcome: QualificationOutcome;
  if (!reached) {
    // A panic counts as the next kernel's only after the kexec (panic=-1 ends QEMU there).
    outcome = kexecAt !== undefined && result.panic !== undefined ? 'panic' : 'failed';
  } else if (aHeld && bHeld) outcome = 'works';
  else if (/no live update in progress/.test(luodLog1)) outcome = 'cold-boot';
  else if (!memfdsOk && (restoredOk || /EIO/.test(JSON.stringify(moments.vmms)))) outcome = 'files-lost';
  else outcome = 'failed';
  const lost = outcome === 'cold-boot' || outcome === 'panic' || outcome === 'files-lost';
  const checks: QualificationCheck[] = pending.map(({ ran: r, ...c }) => ({
    ...c,
    outcome: c.ok ? 'held' : !r ? (lost ? 'lost' : 'not-run') : lost && c.kernel === 'to' ? 'lost' : 'failed',
  }));
  const firstFailed = checks.find((c) => !c.ok);
  const reason = firstFailed ? `${firstFailed.name}: ${firstFailed.detail ?? 'failed'}` : undefined;
  return { checks, outcome, ...(reason && { reason }) };
}

/**
 * The guest could not run the workload (QEMU missing, A never reached /init, no 9p, no
 * /dev/liveupdate): what is missing is the reason, and every check is listed as not run,
 * none as failed. Never a verdict on the pair.
 */
export function cannotBoot(
  checks: QualificationCheck[],
  reason: string | undefined,
): { checks: QualificationCheck[]; outcome: QualificationOutcome; reason: string } {
  const why = reason ?? 'the guest could not run';
  return {
    checks: checks.map((c) => ({ ...c, ok: false, outcome: 'not-run', detail: `not run: ${why}` })),
    outcome: 'cannot-boot',
    reason: why,
  };
}

function blackoutOf(
  result: QemuResult,
  moments: Moments,
  dir: string,
  qemu: boolean,
): Record<string, number> {
  const out: Record<string, number> = {};
  const span = (name: string, a: number | undefined, b: number | undefined) => {
    if (a !== undefined && b !== undefined && b >= a) out[name] = b - a;
  };
  const init1 = result.boots.find((b) => b.boot === 1)?.initAtMs;
  const lastVerified = moments.vmms.length ? Math.max(...moments.vmms.map((v) => v.atMs)) : undefined;
  span('load_ms', moments.luod['load@0'], moments.luod['loaded@0']);
  span('kexec_to_init_ms', moments.luod['kexec@0'], init1);
  span('luod_ready_ms', init1, moments.luod['luod-ready@1']);
  span('all_claimed_ms', moments.luod['luod-ready@1'], moments.luod['all-claimed@1']);
  span('total_ms', moments.luod['update-start@0'], lastVerified);
  if (qemu) {
    // The QEMU VM's own account: the pause its clocks saw (CMOS time on, TSC stopped).
    const before = parseSerial(readIf(path.join(dir, 'serial.boot0.txt')));
    const after = parseSerial(readIf(path.join(dir, 'serial.boot1.txt')));
    const pause = after.length > 0 ? guestPause([...before, ...after], before.length) : null;
    if (pause) {
      out.qemu_guest_pause_ms = Math.round(pause.pauseMs);
      out.qemu_guest_pause_uncertainty_ms = pause.uncertaintyMs;
    }
    const continued = logEvents(readIf(path.join(dir, 'luo-qemu.boot1.log')), 'continued')[0];
    if (typeof continued?.blackout_ms === 'number') out.qemu_stop_to_cont_ms = continued.blackout_ms;
  }
  return out;
}

/** The parts of the workload left out, and why: each must be asked for (the CLI's --without). */
export type Omitted = { part: WorkloadPart; why: string }[];

/** Qualify one pair: boot, the whole workload, one kexec, verify, record. */
export async function qualifyPair(options: QualifyOptions): Promise<QualifyResult> {
  const log = options.log ?? (() => {});
  const memfds = options.memfds ?? QUALIFY_MEMFDS;
  for (const size of memfds) parseSize(size);
  const omitted: Omitted = [...(options.omitted ?? [])];
  const kexecTests = options.selftests === undefined ? undefined : (options.kexecTests ?? KEXEC_SELFTESTS);
  if (options.selftests !== undefined) {
    for (const name of ['liveupdate', ...kexecTests!]) {
      if (!fs.existsSync(path.join(options.selftests, name)))
        throw new CodedError(
          'ENOENT',
          `${path.join(options.selftests, name)}: no such selftest binary (build the kernel's tools/testing/selftests/liveupdate statically, e.g. scripts/build-selftests.sh --static)`,
        );
    }
  }
  if (options.scenarios !== undefined && !fs.existsSync(options.scenarios))
    throw new CodedError('ENOENT', `${options.scenarios}: no such scenario program`);
  // The counter guest, where the guest sees it (the host's /tmp is not the guest's).
  const counter = options.qemu ? path.join(options.dir, 'runs', 'counter.img') : undefined;
  if (counter !== undefined) {
    fs.mkdirSync(path.dirname(counter), { recursive: true });
    fs.copyFileSync(counterGuest(), counter);
  }
  const workload: Workload = {
    memfds,
    ...(kexecTests && { kexecTests }),
    scenarios: options.scenarios !== undefined,
    qemu: counter !== undefined,
  };
  const started = new Date();
  const [fromInfo, toInfo] = [await readKernelInfo(options.from), await readKernelInfo(options.to)];
  const from = qualified(options.from, fromInfo);
  const to = qualified(options.to, toInfo);
  const gate = gateVerdict(spoken(from), spoken(to));
  log(`${from.release} -> ${to.release}: the gate predicts ${gate.outcome} (${gate.sentence})`);
  const id = recordId(from.release, to.release, started);
  const dir = path.join(options.dir, 'runs', id);
  fs.mkdirSync(path.join(options.dir, 'runs'), { recursive: true });
  const initramfs = buildInitramfs(path.join(options.dir, 'runs', 'initramfs.cpio.gz'));
  const { moments, onLine } = watch();
  log(`booting ${from.release} under QEMU (TCG; console: ${path.join(dir, 'console.log')})`);
  const result = await runGuestJob({
    dir,
    kernels: [path.resolve(options.from), path.resolve(options.to)],
    command: `exec sh ${PACKAGE_ROOT}/vm/guest/qualify.sh`,
    cwd: PACKAGE_ROOT,
    env: {
      LUOKIT_GUEST_BIN: path.join(PACKAGE_ROOT, 'dist'),
      LUOKIT_SIZES: memfds.join(','),
      ...(options.selftests !== undefined && {
        LUOKIT_SELFTESTS: path.resolve(options.selftests),
        LUOKIT_KEXEC_TESTS: kexecTests!.join(' '),
      }),
      ...(options.scenarios !== undefined && { LUOKIT_SCENARIOS: path.resolve(options.scenarios) }),
      ...(counter !== undefined && {
        LUOKIT_COUNTER_IMAGE: counter,
        LUOKIT_QEMU_RAM: QUALIFY_QEMU_RAM,
        LUOKIT_QEMU_EDGES: String(QEMU_EDGES),
        LUOKIT_QEMU_WAIT: String(Math.round(240 * (options.timeoutScale ?? 1))),
      }),
    },
    initramfs,
    timeoutMs: 600_000 * (options.timeoutScale ?? 1),
    memory: GUEST_MEMORY,
    onLine: (line, atMs) => {
      onLine(line, atMs);
      if (/LUOKIT-(BOOT|EXIT|INFRA|QUALIFY-FAILED)|LUOKIT-PHASE path=qualify|Kernel panic/.test(line))
        log(line.trim());
    },
  });
  let judged = judgeRun(result, dir, moments, from, to, gate.outcome, workload);
  if (result.outcome === 'infra') judged = cannotBoot(judged.checks, result.reason);
  const dmesg = readIf(path.join(dir, 'dmesg.boot1.txt'));
  if (dmesg) fs.writeFileSync(path.join(dir, 'handover.boot1.txt'), `${handoverLog(dmesg).join('\n')}\n`);
  const finished = new Date();
  const record: QualificationRecord = {
    schema: QUALIFICATION_SCHEMA,
    id,
    result:
      judged.outcome === 'cannot-boot'
        ? 'not-run'
        : judged.outcome === 'works' && judged.checks.every((c) => c.ok)
          ? 'pass'
          : 'fail',
    outcome: judged.outcome,
    ...(judged.reason && { reason: judged.reason }),
    from,
    to,
    gate: { outcome: gate.outcome, sentence: gate.sentence },
    agrees_with_gate: judged.outcome === 'cannot-boot' ? null : judged.outcome === gate.outcome,
    checks: judged.checks,
    workload: {
      description: describeWorkload(workload),
      memfds: [...memfds],
      parts: (['kernel', 'selftests', 'scenarios', 'luod', 'qemu'] as const).filter(
        (p) =>
          (p !== 'selftests' || workload.kexecTests) &&
          (p !== 'scenarios' || workload.scenarios) &&
          (p !== 'qemu' || workload.qemu),
      ),
      ...(omitted.length > 0 && { omitted }),
      ...(options.selftests !== undefined && {
        selftests: { dir: path.resolve(options.selftests), kexec_tests: [...kexecTests!] },
      }),
      ...(options.scenarios !== undefined && {
        scenarios: {
          program: path.resolve(options.scenarios),
          count: (scenarioResults(dir, 0) ?? []).length + (scenarioResults(dir, 1) ?? []).length,
        },
      }),
      ...(workload.qemu && { qemu: { vms: 1, ram: QUALIFY_QEMU_RAM } }),
    },
    guest: {
      qemu: result.command,
      memory: GUEST_MEMORY,
      cpus: GUEST_CPUS,
      initramfs_sha256: sha256(initramfs),
    },
    blackout: blackoutOf(result, moments, dir, workload.qemu === true),
    started: started.toISOString(),
    finished: finished.toISOString(),
    luokit: options.luokitVersion,
    run_dir: dir,
  };
  fs.writeFileSync(path.join(dir, 'qemu-result.json'), `${JSON.stringify(result, null, 1)}\n`);
  const file = writeQualification(options.dir, record);
  log(`${from.release} -> ${to.release}: ${record.result} (${record.outcome}); record ${file}`);
  return { record, file };
}
