/**
 * The QEMU row of the real-kernel bench's blackout report (docs/vm.md, "QEMU VM"): a real
 * QEMU VM (the counter guest under nested TCG) across a real kexec through luod
 * (vm/guest/qemu-update.sh, test/vm/qemu-update.ts).
 *
 * Two clocks, never mixed:
 * - the phases are host time, like the rest of the report (blackout.ts: each console line
 *   stamped as it arrived);
 * - the guest-visible pause is the guest's own: across the update, the seconds its CMOS
 *   clock counted less the time its TSC counted (src/qemu/counter-serial.ts). The nested
 *   QEMU's CMOS clock follows the bench guest's CLOCK_REALTIME, which each kernel sets at
 *   boot from the outer CMOS clock to the whole second: it steps across the kexec by up to a
 *   second. The guest job prints its wall clock a few times in each boot (LUOKIT-CLOCK); the
 *   host measures each boot's offset against its own clock (the least delayed sample) and
 *   the step is their difference. The pause is reported as the guest's clocks read it, and
 *   with that step taken out.
 */

import { logEvents } from '../../src/vm/luod-job.js';
import type { ConsoleLine, Marks, RunMarks } from './blackout.js';

export interface ClockSample {
  boot: number;
  /** The bench guest's CLOCK_REALTIME, epoch ms. */
  realtimeMs: number;
  /** Host ms since QEMU started, when the line arrived. */
  atMs: number;
}

/** `LUOKIT-CLOCK boot=N realtime=S.NNNNNNNNN` lines. */
export function clockSamples(lines: readonly ConsoleLine[]): ClockSample[] {
  const out: ClockSample[] = [];
  for (const { atMs, text } of lines) {
    const m = /LUOKIT-CLOCK boot=(\d+) realtime=(\d+)(?:\.(\d+))?/.exec(text);
    if (!m) continue;
    const fraction = Number(`0.${m[3] ?? '0'}`);
    out.push({ boot: Number(m[1]), realtimeMs: Number(m[2]) * 1000 + fraction * 1000, atMs });
  }
  return out;
}

/**
 * How far the bench guest's wall clock stepped forward across the kexec (boot 0 -> boot 1),
 * against the host's clock, in ms (negative: backwards). Each sample's line arrives after
 * its reading, so the largest `realtime - arrival` of a boot is its least delayed, best
 * offset. Null without samples in both boots.
 */
export function clockStepMs(samples: readonly ClockSample[]): number | null {
  const offset = (boot: number): number | null => {
    const of = samples.filter((s) => s.boot === boot).map((s) => s.realtimeMs - s.atMs);
    return of.length === 0 ? null : Math.max(...of);
  };
  const [a, b] = [offset(0), offset(1)];
  return a === null || b === null ? null : Math.round(b - a);
}

export interface QemuPhaseSpec {
  phase: string;
  what: string;
  /** Whether the VM is stopped for all of it (`barrier` holds the `stop`). */
  stopped: 'no' | 'partly' | 'yes';
  range: [string, string];
}

/** The phases, host clock; `qemu-*` marks are luo-qemu's log events, the others luod's. */
export const QEMU_PHASES: readonly QemuPhaseSpec[] = [
  {
    phase: 'load',
    what: 'luoctl load: kexec_file_load of the next kernel (the VM runs)',
    stopped: 'no',
    range: ['load@0', 'loaded@0'],
  },
  {
    phase: 'preserve',
    what: 'luod: open /dev/liveupdate, create the session (the VM runs)',
    stopped: 'no',
    range: ['update-start@0', 'barrier-start@0'],
  },
  {
    phase: 'barrier',
    what: 'luo-qemu: PRESERVE_FD the RAM memfd, QMP stop (the pause starts), device state saved and preserved, READY',
    stopped: 'partly',
    range: ['barrier-start@0', 'barrier-done@0'],
  },
  {
    phase: 'handover',
    what: "luod: its state into luod-internal, KEXEC to luo-qemu, up to luod's reboot call",
    stopped: 'yes',
    range: ['barrier-done@0', 'kexec@0'],
  },
  {
    phase: 'kexec',
    what: "reboot(LINUX_REBOOT_CMD_KEXEC) to the next kernel's /init",
    stopped: 'yes',
    range: ['kexec@0', 'init@1'],
  },
  {
    phase: 'luod-ready',
    what: 'luod (and luo-qemu, started beside it) from /init to luod restored and listening',
    stopped: 'yes',
    range: ['init@1', 'luod-ready@1'],
  },
  {
    phase: 'claim',
    what: 'luo-qemu CLAIMs qvm-1 (its RAM, device state and notes retrieved)',
    stopped: 'yes',
    range: ['luod-ready@1', 'qemu-claimed@1'],
  },
  {
    phase: 'continue',
    what: 'FINISH, a fresh QEMU with -incoming defer starts (nested TCG), loads the device state, cont',
    stopped: 'yes',
    range: ['qemu-claimed@1', 'qemu-continued@1'],
  },
];

/** From the start of the update to the VM going on, host clock. */
export const QEMU_TOTAL: [string, string] = ['update-start@0', 'qemu-continued@1'];

export interface QemuPhaseRow {
  phase: string;
  what: string;
  stopped: QemuPhaseSpec['stopped'];
  ms: number | null;
}

/** What luo-qemu logged about the update (its JSON log events `saved` and `continued`). */
export interface LuoQemuFigures {
  /** `stop` to READY, luo-qemu's clock (one boot). */
  saveMs?: number;
  stateBytes?: number;
  /** QEMU start to `cont` after the reboot, luo-qemu's clock (one boot). */
  loadMs?: number;
  /** `stop` (boot 0) to `cont` (boot 1) by the wall clock: as logged, across the step. */
  stopToContMs?: number;
}

export interface QemuBlackout {
  kernels: string;
  ram: string;
  clock: string;
  /** The guest's own measure of its pause, with the wall clock's step across the kexec taken out. */
  guestPauseMs: number | null;
  /** The same, as the guest's clocks read it (the step included). */
  guestPauseRawMs: number | null;
  /** The bench guest's wall clock step across the kexec (host-measured). */
  clockStepMs: number | null;
  /** How far off the guest's figure may be: one guest line at either second boundary (counter-serial.ts). */
  pauseUncertaintyMs: number | null;
  /** luo-qemu's stop -> cont, step taken out. */
  luoQemuStopToContMs: number | null;
  /** Host clock: luo-qemu's `continued` mark less (its `saved` mark less its save time). */
  hostStopToContMs: number | null;
  luoQemu: LuoQemuFigures;
  /** The counter: the last line before the update, the first after, and the RAM sum (the same). */
  counter: {
    lastBefore: number | null;
    firstAfter: number | null;
    sumBefore: string | null;
    sumAfter: string | null;
  };
  rows: QemuPhaseRow[];
  totalMs: number | null;
  missing: string[];
  substituted: string[];
}

/** luo-qemu's JSON log lines with `event` (other lines, QEMU's own, are skipped): src/vm's reader. */
export const luoQemuEvents = logEvents;

/** luo-qemu's log lines at level error (50) or above. */
export function luoQemuErrors(log: string): string[] {
  const out: string[] = [];
  for (const line of log.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const entry = JSON.parse(line) as { level?: number; msg?: string; err?: { message?: string } };
      if ((entry.level ?? 0) >= 50)
        out.push(`${entry.msg}${entry.err?.message ? `: ${entry.err.message}` : ''}`);
    } catch {
      // not a log line
    }
  }
  return out;
}

export function luoQemuFigures(boot0Log: string, boot1Log: string): LuoQemuFigures {
  const saved = luoQemuEvents(boot0Log, 'saved')[0];
  const continued = luoQemuEvents(boot1Log, 'continued')[0];
  const num = (v: unknown): number | undefined => (typeof v === 'number' ? v : undefined);
  const figures: LuoQemuFigures = {};
  const save = num(saved?.save_ms);
  const bytes = num(saved?.state_bytes) ?? num(continued?.state_bytes);
  const load = num(continued?.qemu_start_ms);
  const stopToCont = num(continued?.blackout_ms);
  if (save !== undefined) figures.saveMs = save;
  if (bytes !== undefined) figures.stateBytes = bytes;
  if (load !== undefined) figures.loadMs = load;
  if (stopToCont !== undefined) figures.stopToContMs = stopToCont;
  return figures;
}

function withKexecFallback(marks: Marks): { marks: Marks; substituted: string[] } {
  if (marks['kexec@0'] !== undefined || marks['kernel-kexec@0'] === undefined)
    return { marks, substituted: [] };
  return {
    marks: { ...marks, 'kexec@0': marks['kernel-kexec@0'] },
    substituted: ['kexec@0 <- kernel-kexec@0 (the kernel\'s "Starting new kernel" line)'],
  };
}

export function qemuBlackout(input: {
  kernels: string;
  ram: string;
  clock: string;
  run: RunMarks;
  step: number | null;
  guestPauseRawMs: number | null;
  pauseUncertaintyMs: number | null;
  luoQemu: LuoQemuFigures;
  counter: QemuBlackout['counter'];
}): QemuBlackout {
  const { marks, substituted } = withKexecFallback(input.run.marks);
  const missing = new Set<string>();
  const span = ([from, to]: [string, string]): number | null => {
    const a = marks[from];
    const b = marks[to];
    if (a === undefined) missing.add(from);
    if (b === undefined) missing.add(to);
    return a === undefined || b === undefined ? null : b - a;
  };
  const rows = QEMU_PHASES.map((p) => ({
    phase: p.phase,
    what: p.what,
    stopped: p.stopped,
    ms: span(p.range),
  }));
  const totalMs = span(QEMU_TOTAL);
  const saved = marks['qemu-saved@0'];
  const continued = marks['qemu-continued@1'];
  const hostStopToContMs =
    saved !== undefined && continued !== undefined && input.luoQemu.saveMs !== undefined
      ? continued - (saved - input.luoQemu.saveMs)
      : null;
  const less = (v: number | null | undefined): number | null =>
    v === null || v === undefined || input.step === null ? null : Math.round(v - input.step);
  return {
    kernels: input.kernels,
    ram: input.ram,
    clock: input.clock,
    guestPauseMs: less(input.guestPauseRawMs),
    guestPauseRawMs: input.guestPauseRawMs === null ? null : Math.round(input.guestPauseRawMs),
    clockStepMs: input.step,
    pauseUncertaintyMs: input.pauseUncertaintyMs,
    luoQemuStopToContMs: less(input.luoQemu.stopToContMs),
    hostStopToContMs,
    luoQemu: input.luoQemu,
    counter: input.counter,
    rows,
    totalMs,
    missing: [...missing],
    substituted,
  };
}

function ms(v: number | null | undefined): string {
  return v === null || v === undefined ? '-' : `${v}`;
}

/** The readable table of one pair (build/vm/blackout.txt, after the luod/floor tables). */
export function formatQemuBlackout(r: QemuBlackout): string {
  const width = Math.max(...r.rows.map((row) => row.phase.length), 'TOTAL (update-start -> cont)'.length);
  const mark = { no: ' (VM runs)', partly: ' (stop inside)', yes: '' };
  const out = [
    `QEMU VM across the live update, kernels ${r.kernels}: the counter guest, ${r.ram} RAM, nested TCG, luo-qemu through luod`,
    '',
    `guest-visible pause (the guest's own clocks, CMOS less TSC): ${ms(r.guestPauseMs)} ms` +
      ` (as read ${ms(r.guestPauseRawMs)} ms, less the wall clock's step of ${ms(r.clockStepMs)} ms across the kexec;` +
      ` good to ${ms(r.pauseUncertaintyMs)} ms: one guest line at a second boundary)`,
    `luo-qemu stop -> cont: ${ms(r.luoQemuStopToContMs)} ms (its clock, step taken out); host clock: ${ms(r.hostStopToContMs)} ms`,
    `luo-qemu: stop -> READY ${ms(r.luoQemu.saveMs)} ms, device state ${ms(r.luoQemu.stateBytes)} bytes, QEMU start -> cont ${ms(r.luoQemu.loadMs)} ms`,
    `counter: ${ms(r.counter.lastBefore)} before, ${ms(r.counter.firstAfter)} after; RAM sum ${r.counter.sumBefore ?? '-'} before, ${r.counter.sumAfter ?? '-'} after`,
    '',
    `${'phase'.padEnd(width)}  host ms`,
    `${'-'.repeat(width)}  -------`,
    ...r.rows.map((row) => `${row.phase.padEnd(width)}  ${ms(row.ms).padStart(7)}${mark[row.stopped]}`),
    `${'TOTAL (update-start -> cont)'.padEnd(width)}  ${ms(r.totalMs).padStart(7)}`,
  ];
  if (r.missing.length > 0) out.push(`missing marks: ${r.missing.join(', ')}`);
  if (r.substituted.length > 0) out.push(r.substituted.join('; '));
  out.push('', 'phases:');
  for (const row of r.rows) out.push(`  ${row.phase.padEnd(11)} ${row.what}`);
  return `${out.join('\n')}\n`;
}
