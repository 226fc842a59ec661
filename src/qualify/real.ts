/**
 * `luoctl qualify --from A --to B` (docs/qualify.md): one kernel pair qualified on the real
 * kernels under QEMU, with the bench's guest (src/vm: the host's / over 9p, one QEMU
 * process across the kexec) and its luod job (vm/guest/luod-update.sh) run on the
 * installed luokit:
 *
 *   boot 0 on A: luod on the real /dev/liveupdate, one example VMM per memfd (its guest
 *   RAM filled with luokit's data pattern, preserved in a session of its own), `luoctl
 *   load B --force` (the gate's verdict is kept, but a qualification observes what the
 *   kernels really do), `luoctl update`: luod's barrier, kexec_file_load, reboot;
 *   boot 1 on B: luod restores from luod-internal, every VMM claims its session and
 *   compares every byte with the pattern; the kernel's log is kept.
 *
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
import { buildInitramfs, PACKAGE_ROOT, runGuestJob } from '../vm/guest.js';
import { luodErrors, readIf, restoredProblems } from '../vm/luod-job.js';
import type { QemuResult } from '../vm/qemu.js';
import {
  QUALIFICATION_SCHEMA,
  type QualificationCheck,
  type QualificationOutcome,
  type QualificationRecord,
  type QualifiedKernel,
  recordId,
  writeQualification,
} from './record.js';

/** The memfds of the workload: one example VMM each (small: TCG fills and checks them). */
export const QUALIFY_MEMFDS = ['16M', '64M'];
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

/** Judge one guest run: its checks, and the outcome read from what happened. */
export function judgeRun(
  result: QemuResult,
  dir: string,
  moments: Moments,
  from: QualifiedKernel,
  to: QualifiedKernel,
  predicted: string,
  memfds: readonly string[],
): { checks: QualificationCheck[]; outcome: QualificationOutcome; reason?: string } {
  const checks: QualificationCheck[] = [];
  const check = (name: string, ok: boolean, detail?: string): boolean => {
    checks.push({ name, ok, ...(detail && { detail }) });
    return ok;
  };
  const boot0 = result.boots.find((b) => b.boot === 0);
  const boot1 = result.boots.find((b) => b.boot === 1);
  const guestFailures = result.markers
    .filter((m) => m.kind === 'UPDATE-FAILED')
    .map((m) => m.line.replace(/^.*LUOKIT-UPDATE-FAILED /, '').trim());
  check(
    `boot 0 runs ${from.release}`,
    boot0?.release === from.release,
    boot0 ? `uname -r: ${boot0.release}` : 'no boot 0',
  );
  const subscribed = result.markers.some(
    (m) => m.kind === 'PHASE' && m.fields.boot === '0' && m.fields.phase === 'subscribed',
  );
  check(
    `luod and ${memfds.length} memfd sessions (${memfds.join(' + ')}, the data pattern) in boot 0`,
    subscribed,
    subscribed ? undefined : (guestFailures[0] ?? result.reason),
  );
  let load: { loaded?: { gate?: { outcome?: string; sentence?: string } } } = {};
  try {
    load = JSON.parse(readIf(path.join(dir, 'load.json')));
  } catch {
    // checked below
  }
  const guestGate = load.loaded?.gate;
  if (subscribed) {
    check(
      "luoctl load: the gate in the guest's luod agrees with kernel-info's prediction",
      guestGate?.outcome === predicted,
      guestGate ? `${guestGate.outcome}: ${guestGate.sentence}` : 'no load.json',
    );
  }
  const kexecAt = moments.luod['kexec@0'];
  check(
    'luod kexecs (luoctl update: barrier, preserve, kexec_file_load, reboot)',
    kexecAt !== undefined,
    kexecAt === undefined ? (guestFailures[0] ?? result.reason ?? 'no kexec phase from luod') : undefined,
  );
  const reached = check(
    `the next kernel boots: ${to.release} reaches /init`,
    boot1?.release === to.release,
    boot1
      ? `uname -r: ${boot1.release}`
      : `${result.reason ?? 'no boot 1'}${result.panic ? ` (${result.panic})` : ''}`,
  );
  let outcome: QualificationOutcome;
  if (!reached) {
    // A panic counts as the next kernel's only after the kexec (panic=-1 ends QEMU there).
    outcome = kexecAt !== undefined && result.panic !== undefined ? 'panic' : 'failed';
  } else {
    const restored = restoredProblems(dir);
    const restoredOk = check(
      'luod restores the update from luod-internal in the next kernel',
      restored.length === 0,
      restored.join('; '),
    );
    let allVerified = true;
    memfds.forEach((size, i) => {
      const id = `vm-${i + 1}`;
      const v = moments.vmms.find((x) => x.id === id);
      const ok = v?.verified === true && v.verify === 'pattern' && v.bytes === parseSize(size);
      allVerified &&= ok;
      check(
        `memfd ${id} (${size}) claimed in the next kernel and verified byte for byte`,
        ok,
        v === undefined
          ? 'no result'
          : ok
            ? undefined
            : (v.error ?? `verified ${v.verified}, ${v.bytes} bytes`),
      );
    });
    const luodLog1 = readIf(path.join(dir, 'luod.boot1.log'));
    const noHandover = /no live update in progress/.test(luodLog1);
    if (restoredOk && allVerified) outcome = 'works';
    else if (noHandover) outcome = 'cold-boot';
    else if (restoredOk || /EIO/.test(JSON.stringify(moments.vmms))) outcome = 'files-lost';
    else outcome = 'failed';
  }
  const errors = [0, 1].flatMap((b) =>
    luodErrors(readIf(path.join(dir, `luod.boot${b}.log`))).map((e) => `boot ${b}: ${e}`),
  );
  if (outcome === 'works')
    check('luod logged no error in either boot', errors.length === 0, errors.join('; '));
  const firstFailed = checks.find((c) => !c.ok);
  const reason = firstFailed ? `${firstFailed.name}: ${firstFailed.detail ?? 'failed'}` : undefined;
  return { checks, outcome, ...(reason && { reason }) };
}

function blackoutOf(result: QemuResult, moments: Moments): Record<string, number> {
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
  return out;
}

/** Qualify one pair: boot, live update, kexec, verify, record. */
export async function qualifyPair(options: QualifyOptions): Promise<QualifyResult> {
  const log = options.log ?? (() => {});
  const memfds = options.memfds ?? QUALIFY_MEMFDS;
  for (const size of memfds) parseSize(size);
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
    command: `exec sh ${PACKAGE_ROOT}/vm/guest/luod-update.sh`,
    cwd: PACKAGE_ROOT,
    env: {
      LUOKIT_GUEST_BIN: path.join(PACKAGE_ROOT, 'dist'),
      LUOKIT_SIZES: memfds.join(','),
      LUOKIT_LOAD_FORCE: '1',
    },
    initramfs,
    timeoutMs: 600_000 * (options.timeoutScale ?? 1),
    memory: GUEST_MEMORY,
    onLine: (line, atMs) => {
      onLine(line, atMs);
      if (/LUOKIT-(BOOT|EXIT|INFRA|UPDATE-FAILED)|Kernel panic/.test(line)) log(line.trim());
    },
  });
  let judged: ReturnType<typeof judgeRun>;
  if (result.outcome === 'infra') {
    judged = { checks: [], outcome: 'cannot-boot', reason: result.reason ?? 'the guest could not run' };
  } else {
    judged = judgeRun(result, dir, moments, from, to, gate.outcome, memfds);
  }
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
      description:
        'luod on /dev/liveupdate; one example VMM per memfd, its RAM filled with the data pattern and preserved in its own session; luoctl load --force (the gate recorded), luoctl update; in the next kernel luod restores, every VMM claims and compares every byte',
      memfds: [...memfds],
    },
    guest: {
      qemu: result.command,
      memory: GUEST_MEMORY,
      cpus: GUEST_CPUS,
      initramfs_sha256: sha256(initramfs),
    },
    blackout: blackoutOf(result, moments),
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
