/**
 * The blackout report of the real-kernel bench (docs/vm.md): how long VMs are
 * stopped by a live update through luod, against the kernel-only floor
 * (test/vm/floor/luo_floor.c) on the same kernels, phase by phase.
 *
 * Clock: the guest's clocks restart with each kernel, so every time here is
 * the host's, stamped on each serial-console line as it arrived
 * (test/vm/qemu.ts writes `[+SSSS.mmms] line` to console.log). A line is
 * stamped when it has fully arrived: at 115200 baud a 100-character line
 * takes about 9 ms, so each mark is late by its own length, a few ms.
 *
 * Marks come from five kinds of console lines:
 *   LUOKIT-BOOT boot=N ...                   `init` (the boot's /init started)
 *   LUOKIT-PHASE path=P boot=N phase=NAME    the floor's steps, the luod job's steps
 *   {"luod_phase":"NAME",...}                luod's own timeline (luod --timeline)
 *   {"vmm_phase":"NAME","id":ID,...}         a VMM's own timeline (vmm --timeline):
 *                                            `paused:ID` and `resumed:ID`
 *   LUOKIT-VMM boot=N id=ID result=JSON      a VMM verified (or not) its memory
 * plus the kernel's "Starting new kernel" (`kernel-kexec`), a fallback for a
 * `kexec` mark lost with the old kernel's console buffer.
 *
 * Blackout is luokit's one definition (src/record/format.ts): from a VM paused to
 * the same VM resumed. On the luod path, from the first VMM's pause to the last
 * VMM's resume; on the floor, which has no VM, from the start of its preservation
 * to its files retrieved in the next kernel. Verification of every byte comes
 * after, on both paths, as its own phase.
 */

import { joinConsoleLines } from '../../src/vm/console-lines.js';
import type { QemuBlackout } from './qemu-blackout.js';

export type UpdatePath = 'luod' | 'floor';

export interface ConsoleLine {
  atMs: number;
  text: string;
}

/** One moment of a run: `name@boot` -> host ms since QEMU started. */
export type Marks = Record<string, number>;

export interface VmmVerdict {
  id: string;
  verified: boolean;
  bytes?: number;
  verify_ms?: number;
  /** How the VMM checked its RAM (`pattern`: as the floor does). */
  verify?: string;
  error?: string;
  atMs: number;
}

export interface FloorVerdict {
  name: string;
  verified: boolean;
  bytes: number;
  error?: string;
}

export interface RunMarks {
  marks: Marks;
  vmms: VmmVerdict[];
  floor: FloorVerdict[];
  /** Console lines that claimed to be marks but could not be read. */
  unreadable: string[];
}

/** `[+   12.345s] text` (console.log) -> { atMs: 12345, text }; other lines (the command) are skipped. */
export function parseConsoleLog(text: string): ConsoleLine[] {
  const lines: ConsoleLine[] = [];
  for (const raw of text.split('\n')) {
    const m = /^\[\+\s*(\d+(?:\.\d+)?)s\] ?(.*)$/.exec(raw);
    if (m) lines.push({ atMs: Math.round(Number(m[1]) * 1000), text: m[2]! });
  }
  // A mark a printk split in two, whole again (src/vm/console-lines.ts).
  return joinConsoleLines(lines);
}

/** `KEY=value` fields of a LUOKIT- line (a value runs to the next ` key=`). */
function fields(text: string, kind: string): Record<string, string> | undefined {
  const at = text.indexOf(`LUOKIT-${kind} `);
  if (at < 0) return undefined;
  const rest = text.slice(at + kind.length + 8);
  const out: Record<string, string> = {};
  const re = /(?:^|\s)([a-z][a-z0-9_.-]*)=/g;
  const keys: { key: string; start: number; end: number }[] = [];
  for (let m = re.exec(rest); m !== null; m = re.exec(rest)) {
    keys.push({ key: m[1]!, start: m.index, end: m.index + m[0].length });
  }
  keys.forEach((k, i) => {
    out[k.key] = rest.slice(k.end, keys[i + 1]?.start ?? rest.length).trim();
  });
  return out;
}

/**
 * Every mark of one QEMU run, first occurrence wins (a mark is a moment; a
 * repeat is a later, different event), but for `load`: the last before
 * `loaded` (a refused LOAD comes first). `all-verified@N` is the last VMM
 * verdict of boot N.
 */
export function collectMarks(lines: readonly ConsoleLine[]): RunMarks {
  const marks: Marks = {};
  const vmms: VmmVerdict[] = [];
  const floor: FloorVerdict[] = [];
  const unreadable: string[] = [];
  let boot = 0;
  const mark = (name: string, b: number, atMs: number) => {
    const key = `${name}@${b}`;
    if (marks[key] === undefined) marks[key] = atMs;
  };
  for (const { atMs, text } of lines) {
    const bootFields = fields(text, 'BOOT');
    if (bootFields) {
      boot = Number(bootFields.boot);
      mark('init', boot, atMs);
      continue;
    }
    const phase = fields(text, 'PHASE');
    if (phase) {
      if (phase.phase) mark(phase.phase, Number(phase.boot ?? boot), atMs);
      else unreadable.push(text);
      continue;
    }
    const vmm = fields(text, 'VMM');
    if (vmm) {
      const b = Number(vmm.boot ?? boot);
      try {
        const result = JSON.parse(vmm.result ?? '') as Omit<VmmVerdict, 'atMs'>;
        vmms.push({
          id: vmm.id ?? result.id,
          verified: result.verified === true,
          ...(result.bytes !== undefined && { bytes: result.bytes }),
          ...(result.verify_ms !== undefined && { verify_ms: result.verify_ms }),
          ...(result.verify !== undefined && { verify: result.verify }),
          ...(result.error !== undefined && { error: result.error }),
          atMs,
        });
        marks[`all-verified@${b}`] = atMs;
      } catch {
        unreadable.push(text);
      }
      continue;
    }
    const result = fields(text, 'RESULT');
    if (result && result.kind === 'floor') {
      floor.push({
        name: result.name ?? '?',
        verified: result.verified === '1',
        bytes: Number(result.bytes),
        ...(result.error !== undefined && { error: result.error }),
      });
      continue;
    }
    const vmmPhase = text.indexOf('{"vmm_phase":');
    if (vmmPhase >= 0) {
      try {
        const m = JSON.parse(text.slice(vmmPhase)) as { vmm_phase: string; id: string };
        mark(`${m.vmm_phase}:${m.id}`, boot, atMs);
      } catch {
        unreadable.push(text);
      }
      continue;
    }
    const json = text.indexOf('{"luod_phase":');
    if (json >= 0) {
      try {
        const m = JSON.parse(text.slice(json)) as { luod_phase: string };
        // A LOAD the gate refused (the job's first, of a kernel without KHO) never reaches
        // `loaded`: the load phase is the last `load` before `loaded`, not the first.
        if (m.luod_phase === 'load' && marks[`loaded@${boot}`] === undefined) marks[`load@${boot}`] = atMs;
        else mark(m.luod_phase, boot, atMs);
      } catch {
        unreadable.push(text);
      }
      continue;
    }
    if (/kexec_core: Starting new kernel|\] Starting new kernel/.test(text)) mark('kernel-kexec', boot, atMs);
  }
  return { marks, vmms, floor, unreadable };
}

/** When a phase happens: before the VMs stop, during the blackout, or after they run again. */
export type PhaseWhen = 'before' | 'blackout' | 'after';

/** One row of the report: the same step on both paths, between two marks of each. */
export interface PhaseSpec {
  phase: string;
  what: string;
  when: PhaseWhen;
  luod?: [string, string];
  floor?: [string, string];
}

/**
 * The phases, in order. The names are luod's own timeline marks
 * (src/daemon/luod.ts, PhaseMark) where luod has them; `first-paused` and
 * `last-resumed` are the VMMs' own (derived in blackoutReport from every VMM's).
 */
export const PHASES: readonly PhaseSpec[] = [
  {
    phase: 'load',
    what: 'kexec load (kexec_file_load of the next kernel and initramfs; before the VMs stop)',
    when: 'before',
    luod: ['load@0', 'loaded@0'],
    floor: ['load@0', 'loaded@0'],
  },
  {
    phase: 'preserve',
    what: 'luod: open /dev/liveupdate, create the sessions (the VMs run)',
    when: 'before',
    luod: ['update-start@0', 'barrier-start@0'],
  },
  {
    phase: 'pause',
    what: 'START_PRESERVATION to every VMM; the first preserves its RAM while its guest runs, then pauses it',
    when: 'before',
    luod: ['barrier-start@0', 'first-paused@0'],
  },
  {
    phase: 'barrier',
    what: 'luod: from the first VM paused to every READY (each VMM preserves its RAM, pauses, preserves its device state); floor: create the sessions, PRESERVE_FD',
    when: 'blackout',
    luod: ['first-paused@0', 'barrier-done@0'],
    floor: ['preserve@0', 'preserved@0'],
  },
  {
    phase: 'handover',
    what: 'luod: its state into luod-internal, KEXEC to the VMMs; floor: nothing (up to the reboot call)',
    when: 'blackout',
    luod: ['barrier-done@0', 'kexec@0'],
    floor: ['preserved@0', 'kexec@0'],
  },
  {
    phase: 'kexec',
    what: "reboot(LINUX_REBOOT_CMD_KEXEC) to the next kernel's /init (LUO serialises, the kernel boots)",
    when: 'blackout',
    luod: ['kexec@0', 'init@1'],
    floor: ['kexec@0', 'init@1'],
  },
  {
    phase: 'luod-ready',
    what: 'luod: /init to luod restored from luod-internal; floor: /init to the program started',
    when: 'blackout',
    luod: ['init@1', 'luod-ready@1'],
    floor: ['init@1', 'start@1'],
  },
  {
    phase: 'all-claimed',
    what: 'luod: every VMM started again and CLAIMed its session; floor: RETRIEVE_SESSION and RETRIEVE_FD',
    when: 'blackout',
    luod: ['luod-ready@1', 'all-claimed@1'],
    floor: ['start@1', 'retrieved@1'],
  },
  {
    phase: 'resume',
    what: 'the last VMM to claim retrieves its RAM and device state, FINISHes, and resumes its guest',
    when: 'blackout',
    luod: ['all-claimed@1', 'last-resumed@1'],
  },
  {
    phase: 'verify',
    what: 'after the blackout: every byte compared with the data pattern (VMMs: --verify pattern, while their guests run; floor: memcmp)',
    when: 'after',
    luod: ['last-resumed@1', 'all-verified@1'],
    floor: ['retrieved@1', 'verified@1'],
  },
];

/** Where the blackout starts and ends on each path: VMs paused to VMs running again. */
export const TOTAL: Record<UpdatePath, [string, string]> = {
  luod: ['first-paused@0', 'last-resumed@1'],
  floor: ['preserve@0', 'retrieved@1'],
};

/** Verification, after the blackout, on each path: from the memory back to every byte checked. */
export const VERIFICATION: Record<UpdatePath, [string, string]> = {
  luod: ['last-resumed@1', 'all-verified@1'],
  floor: ['retrieved@1', 'verified@1'],
};

export interface PhaseRow {
  phase: string;
  what: string;
  when: PhaseWhen;
  luodMs: number | null;
  floorMs: number | null;
}

export interface PathReport {
  /** The blackout: TOTAL's span. */
  totalMs: number | null;
  /** Verification after it: VERIFICATION's span. */
  verifyMs: number | null;
  /** Marks a phase needed and the run did not print (a phase is then null). */
  missing: string[];
  /** Marks replaced by a fallback (`kexec@0` by the kernel's own line). */
  substituted: string[];
  marks: Marks;
}

export interface BlackoutReport {
  kernels: string;
  clock: string;
  sizes: string[];
  /** The guests' shmem THP policy (shmem_enabled) for guest RAM; null: the kernel default. */
  shmemThp: string | null;
  /** The VMM program of the luod path (`example VMM`, `C VMM`); null: the example VMM. */
  vmm: string | null;
  rows: PhaseRow[];
  luod: PathReport;
  floor: PathReport;
  /** luod's blackout over the floor's (pause to resume); null when either is missing. */
  ratio: number | null;
  /**
   * Node's own start (`node -e 1`) in the floor's next boot, after its blackout
   * (vm/guest/node-probe.sh): cold, the page cache as the kexec left it, as luod
   * finds it; then warm. null when the floor run has no probe.
   */
  nodeStart: { coldMs: number; warmMs: number } | null;
  /**
   * luod's blackout over the floor's plus Node's cold start: what a luod written in
   * Node adds beyond starting Node at all. null without the probe.
   */
  ratioBeyondNode: number | null;
  vmms: VmmVerdict[];
  /** Each VM's own blackout on the host clock (its `paused` to its `resumed` mark); null when one is missing. */
  vmBlackouts: { id: string; ms: number | null }[];
  floorFiles: FloorVerdict[];
}

export const CLOCK =
  'host time (ms since QEMU started) at which each serial-console line arrived; the guest clocks restart with each kernel';

/** `kexec@0` lost with the old kernel's console: the kernel's own "Starting new kernel" line stands in. */
function withFallbacks(marks: Marks): { marks: Marks; substituted: string[] } {
  const out = { ...marks };
  const substituted: string[] = [];
  if (out['kexec@0'] === undefined && out['kernel-kexec@0'] !== undefined) {
    out['kexec@0'] = out['kernel-kexec@0'];
    substituted.push('kexec@0 <- kernel-kexec@0 (the kernel\'s "Starting new kernel" line)');
  }
  return { marks: out, substituted };
}

function span(marks: Marks, range: [string, string] | undefined, missing: Set<string>): number | null {
  if (range === undefined) return null;
  const [from, to] = range;
  const a = marks[from];
  const b = marks[to];
  if (a === undefined) missing.add(from);
  if (b === undefined) missing.add(to);
  return a === undefined || b === undefined ? null : b - a;
}

/**
 * `first-paused@0` and `last-resumed@1`: the first of the VMMs' `paused` marks in boot 0
 * and the last of their `resumed` marks in boot 1, only when every VMM printed its own
 * (a lost one would move the blackout's ends unseen; it is named as missing instead).
 */
function withVmmMarks(marks: Marks, ids: readonly string[], missing: Set<string>): Marks {
  const out = { ...marks };
  const of = (phase: string, boot: number) => {
    const times = ids.map((id) => marks[`${phase}:${id}@${boot}`]);
    ids.forEach((id, i) => {
      if (times[i] === undefined) missing.add(`${phase}:${id}@${boot}`);
    });
    return times.every((t) => t !== undefined) && times.length > 0 ? (times as number[]) : null;
  };
  const paused = of('paused', 0);
  const resumed = of('resumed', 1);
  if (paused) out['first-paused@0'] = Math.min(...paused);
  if (resumed) out['last-resumed@1'] = Math.max(...resumed);
  return out;
}

/** The VMMs of the luod path, one per size: vm-1, vm-2, ... (vm/guest/luod-update.sh). */
export function vmmIds(sizes: readonly string[]): string[] {
  return sizes.map((_, i) => `vm-${i + 1}`);
}

export function blackoutReport(input: {
  kernels: string;
  sizes: string[];
  shmemThp?: string;
  vmm?: string;
  luod: RunMarks;
  floor: RunMarks;
}): BlackoutReport {
  const missing = { luod: new Set<string>(), floor: new Set<string>() };
  const ids = vmmIds(input.sizes);
  const luodMarks = withFallbacks(input.luod.marks);
  const paths = {
    luod: { ...luodMarks, marks: withVmmMarks(luodMarks.marks, ids, missing.luod) },
    floor: withFallbacks(input.floor.marks),
  };
  const rows = PHASES.map((p) => ({
    phase: p.phase,
    what: p.what,
    when: p.when,
    luodMs: span(paths.luod.marks, p.luod, missing.luod),
    floorMs: span(paths.floor.marks, p.floor, missing.floor),
  }));
  const path = (which: UpdatePath): PathReport => ({
    totalMs: span(paths[which].marks, TOTAL[which], missing[which]),
    verifyMs: span(paths[which].marks, VERIFICATION[which], missing[which]),
    missing: [...missing[which]],
    substituted: paths[which].substituted,
    marks: paths[which].marks,
  });
  const luod = path('luod');
  const floor = path('floor');
  const probe = paths.floor.marks;
  const cold = probe['node-probe@1'] !== undefined && probe['node-cold@1'] !== undefined;
  const nodeStart =
    cold && probe['node-warm@1'] !== undefined
      ? {
          coldMs: probe['node-cold@1']! - probe['node-probe@1']!,
          warmMs: probe['node-warm@1']! - probe['node-cold@1']!,
        }
      : null;
  const ratioOf = (a: number | null, b: number | null) =>
    a !== null && b !== null && b > 0 ? Math.round((a / b) * 100) / 100 : null;
  return {
    kernels: input.kernels,
    clock: CLOCK,
    sizes: input.sizes,
    shmemThp: input.shmemThp ?? null,
    vmm: input.vmm ?? null,
    rows,
    luod,
    floor,
    ratio: ratioOf(luod.totalMs, floor.totalMs),
    nodeStart,
    ratioBeyondNode: ratioOf(
      luod.totalMs,
      floor.totalMs !== null && nodeStart ? floor.totalMs + nodeStart.coldMs : null,
    ),
    vmms: input.luod.vmms,
    vmBlackouts: ids.map((id) => {
      const a = input.luod.marks[`paused:${id}@0`];
      const b = input.luod.marks[`resumed:${id}@1`];
      return { id, ms: a === undefined || b === undefined ? null : b - a };
    }),
    floorFiles: input.floor.floor,
  };
}

function ms(value: number | null): string {
  return value === null ? '-' : `${value}`;
}

/** The readable table (build/vm/blackout.txt, and the run's summary). */
export function formatBlackout(r: BlackoutReport): string {
  const header = ['phase', 'luod ms', 'floor ms', 'luod - floor'];
  const body = r.rows.map((row) => [
    `${row.phase}${row.when === 'blackout' ? '' : ` (${row.when})`}`,
    ms(row.luodMs),
    ms(row.floorMs),
    row.luodMs !== null && row.floorMs !== null ? `${row.luodMs - row.floorMs}` : '',
  ]);
  const diff = (a: number | null, b: number | null) => (a !== null && b !== null ? `${a - b}` : '');
  body.push([
    'BLACKOUT (pause to resume)',
    ms(r.luod.totalMs),
    ms(r.floor.totalMs),
    diff(r.luod.totalMs, r.floor.totalMs),
  ]);
  body.push([
    'verification (after)',
    ms(r.luod.verifyMs),
    ms(r.floor.verifyMs),
    diff(r.luod.verifyMs, r.floor.verifyMs),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  const out = [
    `Blackout, kernels ${r.kernels}, memfds ${r.sizes.join(' + ')} (luod: one ${r.vmm ?? 'example VMM'} each)${r.shmemThp ? `, shmem THP ${r.shmemThp}` : ''}`,
    `clock: ${r.clock}`,
    '',
    line(header),
    line(widths.map((w) => '-'.repeat(w))),
    ...body.map(line),
    '',
    `ratio luod / floor (blackout, pause to resume): ${r.ratio === null ? 'n/a' : `${r.ratio.toFixed(2)}x`}`,
    'blackout: from the VMs paused to the VMs resumed in the next kernel (luod: the first VMM pausing its',
    'guest to the last VMM resuming its guest, their own marks; floor: the start of its preservation to its',
    'files retrieved). "(before)": done while the VMs run; "(after)": verification of every byte, once the',
    'VMs run again: not part of the blackout.',
  ];
  if (r.nodeStart) {
    out.push(
      `Node's own start in the next kernel (node -e 1, in the floor's boot after its blackout): ${r.nodeStart.coldMs} ms cold page cache, ${r.nodeStart.warmMs} ms warm`,
      `ratio luod / (floor + Node's cold start): ${r.ratioBeyondNode === null ? 'n/a' : `${r.ratioBeyondNode.toFixed(2)}x`} (what luod adds beyond starting Node at all)`,
    );
  }
  const perVm = r.vmBlackouts.map((v) => `${v.id} ${ms(v.ms)}`);
  if (perVm.length > 0) out.push(`each VM's own blackout (its pause to its resume), ms: ${perVm.join(', ')}`);
  for (const which of ['luod', 'floor'] as const) {
    const p = r[which];
    if (p.missing.length > 0) out.push(`${which}: missing marks: ${p.missing.join(', ')}`);
    if (p.substituted.length > 0) out.push(`${which}: ${p.substituted.join('; ')}`);
  }
  if (r.vmms.length > 0) {
    const each = r.vmms.map((v) => `${v.id} ${v.verify_ms ?? '?'} ms (${v.verify ?? '?'})`);
    out.push(`VMMs' own verification time (after the resume): ${each.join(', ')}`);
  }
  out.push('', 'phases:');
  for (const row of r.rows) out.push(`  ${row.phase.padEnd(12)} ${row.what}`);
  return `${out.join('\n')}\n`;
}

/** build/vm/blackout.txt: one table per kernel pair, in the order they ran. */
export function formatBlackouts(reports: readonly BlackoutReport[]): string {
  return reports.map(formatBlackout).join('\n');
}

/** build/vm/blackout.json: every pair's report. */
export interface BlackoutFile {
  clock: string;
  pairs: BlackoutReport[];
  /** The QEMU part's section (qemu-blackout.ts; written by blackout-file.ts). */
  qemu?: QemuBlackout[];
}

export function blackoutFile(reports: readonly BlackoutReport[]): BlackoutFile {
  return { clock: CLOCK, pairs: [...reports] };
}
