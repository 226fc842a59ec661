/**
 * The live update and QEMU parts of the real-kernel bench without QEMU: console marks,
 * the blackout computation and table, luod's error lines, and the floor
 * program's data pattern against luokit's (the same bytes, or the floor
 * verifies something else than the VMMs preserved).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { Pattern } from '../../src/example-vmm/pattern.js';
import { memfdCreate, pread } from '../../src/sys/index.js';
import { luodErrors } from '../../src/vm/luod-job.js';
import {
  blackoutFile,
  blackoutReport,
  collectMarks,
  formatBlackout,
  formatBlackouts,
  parseConsoleLog,
} from './blackout.js';
import { formatBlackoutFile, mergeBlackoutFile } from './blackout-file.js';
import {
  clockSamples,
  clockStepMs,
  formatQemuBlackout,
  luoQemuErrors,
  luoQemuEvents,
  luoQemuFigures,
  qemuBlackout,
} from './qemu-blackout.js';
import { parseUpdatePairs } from './update.js';

const ROOT = path.resolve(import.meta.dirname, '../..');

/** A luod run's console as qemu.ts writes it (times in seconds since QEMU started). */
const LUOD_CONSOLE = `# qemu-system-x86_64 -kernel ...
[+   5.598s] LUOKIT-BOOT boot=0 release=7.2.13 uptime=3.80
[+  20.000s] LUOKIT-PHASE path=luod boot=0 phase=subscribed
[+  21.000s] {"luod_phase":"load","at":1}
[+  22.500s] {"luod_phase":"loaded","at":2}
[+  30.000s] {"luod_phase":"update-start","update":"u-1","at":3}
[+  30.100s] {"luod_phase":"barrier-start","update":"u-1","at":4}
[+  30.400s] {"vmm_phase":"paused","id":"vm-1","update":"u-1","at":4}
[+  30.600s] {"vmm_phase":"paused","id":"vm-2","update":"u-1","at":4}
[+  30.700s] {"luod_phase":"ready","update":"u-1","client":"vm-1","at":5}
[+  30.900s] {"luod_phase":"barrier-done","update":"u-1","at":6}
[+  31.000s] {"luod_phase":"kexec","update":"u-1","at":7}
[+  31.050s] [  169.304702] kexec_core: Starting new kernel
[+  36.000s] LUOKIT-BOOT boot=1 release=7.3.0-rc7 uptime=5.00
[+  40.000s] {"luod_phase":"luod-ready","update":"u-1","at":8}
[+  41.000s] {"luod_phase":"claim","update":"u-1","client":"vm-1","at":9}
[+  41.100s] {"vmm_phase":"resumed","id":"vm-1","update":"u-1","at":9}
[+  41.200s] {"luod_phase":"all-claimed","update":"u-1","at":10}
[+  41.400s] {"vmm_phase":"resumed","id":"vm-2","update":"u-1","at":10}
[+  45.000s] LUOKIT-VMM boot=1 id=vm-1 result={"id":"vm-1","verified":true,"bytes":67108864,"verify_ms":3000,"verify":"pattern"}
[+  47.500s] LUOKIT-VMM boot=1 id=vm-2 result={"id":"vm-2","verified":false,"bytes":0,"error":"ENOENT: no sessions"}
[+  48.000s] LUOKIT-VMM boot=1 id=vm-3 result={"id":"vm-3", truncated by the kexec
[+  50.000s] LUOKIT-EXIT boot=1 status=0
`;

const FLOOR_CONSOLE = `[+   4.000s] LUOKIT-BOOT boot=0 release=7.2.13 uptime=3.31
[+  10.500s] LUOKIT-PHASE path=floor boot=0 phase=load
[+  11.500s] LUOKIT-PHASE path=floor boot=0 phase=loaded
[+  11.525s] LUOKIT-PHASE path=floor boot=0 phase=preserve
[+  11.700s] LUOKIT-PHASE path=floor boot=0 phase=preserved
[+  11.702s] [   11.131069] kexec_core: Starting new kernel
[+  17.000s] LUOKIT-BOOT boot=1 release=7.2.13 uptime=3.84
[+  18.000s] LUOKIT-PHASE path=floor boot=1 phase=start
[+  19.000s] LUOKIT-PHASE path=floor boot=1 phase=retrieved
[+  25.000s] LUOKIT-PHASE path=floor boot=1 phase=verified
[+  25.100s] LUOKIT-RESULT kind=floor name=floor-1 bytes=67108864 verified=1
[+  25.200s] LUOKIT-RESULT kind=floor name=floor-2 bytes=134217728 verified=0 error=first difference at byte 4100
`;

test('console lines: host ms and text; the QEMU command line is not a line of the guest', () => {
  const lines = parseConsoleLog(LUOD_CONSOLE);
  assert.equal(lines[0]!.atMs, 5598);
  assert.equal(lines[0]!.text, 'LUOKIT-BOOT boot=0 release=7.2.13 uptime=3.80');
  assert.ok(!lines.some((l) => l.text.includes('qemu-system')));
});

test('marks: boots, luod and VMM timeline lines, job phases, VMM verdicts, the kernel kexec line', () => {
  const run = collectMarks(parseConsoleLog(LUOD_CONSOLE));
  assert.equal(run.marks['paused:vm-1@0'], 30400, "a VMM's pause, in the boot it happened in");
  assert.equal(run.marks['resumed:vm-2@1'], 41400);
  assert.equal(run.marks['init@0'], 5598);
  assert.equal(run.marks['init@1'], 36000);
  assert.equal(run.marks['update-start@0'], 30000);
  assert.equal(run.marks['kexec@0'], 31000);
  assert.equal(run.marks['kernel-kexec@0'], 31050);
  assert.equal(run.marks['luod-ready@1'], 40000, 'a luod line belongs to the boot it is printed in');
  assert.equal(run.marks['subscribed@0'], 20000);
  assert.equal(run.marks['all-verified@1'], 47500, 'the last readable VMM verdict');
  assert.deepEqual(
    run.vmms.map((v) => [v.id, v.verified, v.error, v.verify]),
    [
      ['vm-1', true, undefined, 'pattern'],
      ['vm-2', false, 'ENOENT: no sessions', undefined],
    ],
  );
  assert.equal(run.unreadable.length, 1, 'the truncated verdict is reported, not guessed');
  const floor = collectMarks(parseConsoleLog(FLOOR_CONSOLE));
  assert.deepEqual(
    floor.floor.map((f) => [f.name, f.verified, f.bytes, f.error]),
    [
      ['floor-1', true, 67108864, undefined],
      ['floor-2', false, 134217728, 'first difference at byte 4100'],
    ],
  );
});

test('a repeated mark keeps its first moment; a LOAD the gate refused is not the load', () => {
  const run = collectMarks(
    parseConsoleLog(
      `[+   1.000s] {"luod_phase":"all-claimed","at":1}\n[+   2.000s] {"luod_phase":"all-claimed","at":2}\n`,
    ),
  );
  assert.equal(run.marks['all-claimed@0'], 1000);
  const gated = collectMarks(
    parseConsoleLog(
      [
        '[+  38.000s] {"luod_phase":"load","at":1}',
        '[+ 139.000s] {"luod_phase":"load","at":2}',
        '[+ 143.000s] {"luod_phase":"loaded","at":3}',
        '[+ 150.000s] {"luod_phase":"load","at":4}',
      ].join('\n'),
    ),
  );
  assert.equal(gated.marks['load@0'], 139000, 'the LOAD that loaded');
  assert.equal(gated.marks['loaded@0'], 143000);
});

test('the load phase is the LOAD that loaded: a refused one before it (the gate test) is not counted', () => {
  const run = collectMarks(
    parseConsoleLog(
      [
        '[+   8.210s] {"luod_phase":"load","at":1}',
        '[+  12.713s] LUOKIT-PHASE path=luod boot=0 phase=gate-refused',
        '[+  23.580s] {"luod_phase":"load","at":2}',
        '[+  24.311s] {"luod_phase":"loaded","at":3}',
        '[+  30.000s] {"luod_phase":"load","at":4}',
      ].join('\n'),
    ),
  );
  assert.equal(run.marks['load@0'], 23580);
  assert.equal(run.marks['loaded@0'], 24311);
});

test('blackout: pause to resume (the VMMs own marks; the floor: preserve to retrieved), verification after it, the ratio', () => {
  const report = blackoutReport({
    kernels: '7.2->7.3',
    sizes: ['64M', '128M'],
    luod: collectMarks(parseConsoleLog(LUOD_CONSOLE)),
    floor: collectMarks(parseConsoleLog(FLOOR_CONSOLE)),
  });
  const row = (phase: string) => report.rows.find((r) => r.phase === phase)!;
  const cells = (phase: string) => [row(phase).luodMs, row(phase).floorMs, row(phase).when];
  assert.deepEqual(cells('load'), [1500, 1000, 'before']);
  assert.deepEqual(cells('preserve'), [100, null, 'before']);
  assert.deepEqual(cells('pause'), [300, null, 'before'], 'until the first VMM paused its guest');
  assert.deepEqual(cells('barrier'), [500, 175, 'blackout']);
  assert.deepEqual([row('handover').luodMs, row('kexec').luodMs], [100, 5000]);
  assert.deepEqual([row('luod-ready').luodMs, row('luod-ready').floorMs], [4000, 1000]);
  assert.deepEqual([row('all-claimed').luodMs, row('all-claimed').floorMs], [1200, 1000]);
  assert.deepEqual(cells('resume'), [200, null, 'blackout'], 'to the last VMM resumed');
  assert.deepEqual(cells('verify'), [6100, 6000, 'after']);
  // The blackout: the first VM paused to the last resumed; the floor: preserve to retrieved.
  assert.equal(report.luod.totalMs, 41400 - 30400);
  assert.equal(report.floor.totalMs, 19000 - 11525);
  // The rows of the blackout add up to it (no gap, no overlap).
  const sum = (which: 'luodMs' | 'floorMs') =>
    report.rows.filter((r) => r.when === 'blackout').reduce((a, r) => a + (r[which] ?? 0), 0);
  assert.equal(sum('luodMs'), report.luod.totalMs);
  // The floor printed no kexec mark here: the kernel's own line stands in, and says so.
  assert.equal(row('kexec').floorMs, 17000 - 11702);
  assert.equal(report.floor.substituted.length, 1);
  assert.equal(sum('floorMs'), report.floor.totalMs);
  // Verification is its own figure on both paths, outside the blackout.
  assert.deepEqual([report.luod.verifyMs, report.floor.verifyMs], [47500 - 41400, 25000 - 19000]);
  assert.equal(report.ratio, Math.round((11000 / 7475) * 100) / 100);
  assert.deepEqual(report.vmBlackouts, [
    { id: 'vm-1', ms: 41100 - 30400 },
    { id: 'vm-2', ms: 41400 - 30600 },
  ]);
  assert.deepEqual(report.luod.missing, []);
  const table = formatBlackout(report);
  assert.match(table, /BLACKOUT \(pause to resume\)\s+11000\s+7475\s+3525/);
  assert.match(table, /verification \(after\)\s+6100\s+6000\s+100/);
  assert.match(table, /ratio luod \/ floor \(blackout, pause to resume\): 1\.47x/);
  assert.equal(report.nodeStart, null, 'no Node probe in this floor run');
  assert.equal(report.ratioBeyondNode, null);
  assert.doesNotMatch(table, /Node's own start/);
  assert.match(table, /load \(before\)/);
  assert.match(table, /verify \(after\)/);
  assert.match(table, /floor: kexec@0 <- kernel-kexec@0/);
  assert.match(table, /each VM's own blackout \(its pause to its resume\), ms: vm-1 10700, vm-2 10800/);
  assert.match(
    table,
    /VMMs' own verification time \(after the resume\): vm-1 3000 ms \(pattern\), vm-2 \? ms \(\?\)/,
  );
});

test("a VMM's lost pause or resume mark is named, and the blackout is not guessed from the others", () => {
  const lost = LUOD_CONSOLE.split('\n')
    .filter((l) => !l.includes('"vmm_phase":"resumed","id":"vm-2"'))
    .join('\n');
  const report = blackoutReport({
    kernels: '7.2->7.3',
    sizes: ['64M', '128M'],
    luod: collectMarks(parseConsoleLog(lost)),
    floor: collectMarks(parseConsoleLog(FLOOR_CONSOLE)),
  });
  assert.equal(report.luod.totalMs, null);
  assert.equal(report.luod.verifyMs, null);
  assert.equal(report.ratio, null);
  assert.ok(report.luod.missing.includes('resumed:vm-2@1'), report.luod.missing.join(', '));
  assert.deepEqual(report.vmBlackouts[1], { id: 'vm-2', ms: null });
  assert.match(formatBlackout(report), /luod: missing marks: .*resumed:vm-2@1/);
});

test('the report of several pairs: one table each, in order, and one JSON holding them all', () => {
  const luod = collectMarks(parseConsoleLog(LUOD_CONSOLE));
  const floor = collectMarks(parseConsoleLog(FLOOR_CONSOLE));
  const reports = ['7.2->7.2', '7.2->7.3'].map((kernels) =>
    blackoutReport({ kernels, sizes: ['64M'], shmemThp: 'within_size', luod, floor }),
  );
  const text = formatBlackouts(reports);
  const titles = [...text.matchAll(/^Blackout, kernels (\S+),/gm)].map((m) => m[1]);
  assert.deepEqual(titles, ['7.2->7.2', '7.2->7.3']);
  // The guests' huge page policy for guest RAM is named: it changes the kexec phase.
  assert.equal(text.match(/one example VMM each\), shmem THP within_size$/gm)?.length, 2);
  assert.equal(reports[0]!.shmemThp, 'within_size');
  assert.equal(blackoutReport({ kernels: 'x', sizes: [], luod, floor }).shmemThp, null);
  // Which VMM program the luod path ran is named too (the C VMM or the example VMM).
  const native = blackoutReport({ kernels: 'x', sizes: ['64M'], vmm: 'C VMM (luo_vmm)', luod, floor });
  assert.equal(native.vmm, 'C VMM (luo_vmm)');
  assert.match(formatBlackouts([native]), /\(luod: one C VMM \(luo_vmm\) each\)/);
  assert.equal(text.match(/BLACKOUT \(pause to resume\)/g)?.length, 2);
  const file = JSON.parse(JSON.stringify(blackoutFile(reports)));
  assert.deepEqual(
    file.pairs.map((p: { kernels: string; ratio: number }) => [p.kernels, p.ratio]),
    [
      ['7.2->7.2', reports[0]!.ratio],
      ['7.2->7.3', reports[1]!.ratio],
    ],
  );
  assert.match(file.clock, /host time/);
});

test('update pairs: `;` between pairs, `,` between boots; empty entries dropped', () => {
  assert.deepEqual(parseUpdatePairs('7.2,7.2;7.2,7.3'), [
    ['7.2', '7.2'],
    ['7.2', '7.3'],
  ]);
  assert.deepEqual(parseUpdatePairs('7.2'), [['7.2']]);
  assert.deepEqual(parseUpdatePairs(' 7.2 , 7.3 ;;'), [['7.2', '7.3']]);
  assert.deepEqual(parseUpdatePairs(';'), []);
});

test('a run that never reached the next kernel: null phases, named missing marks, no ratio', () => {
  const cut = LUOD_CONSOLE.split('\n').slice(0, 10).join('\n');
  const report = blackoutReport({
    kernels: '7.2',
    sizes: ['64M'],
    luod: collectMarks(parseConsoleLog(cut)),
    floor: collectMarks(parseConsoleLog(FLOOR_CONSOLE)),
  });
  assert.equal(report.luod.totalMs, null);
  assert.equal(report.ratio, null);
  assert.ok(report.luod.missing.includes('init@1'));
  assert.ok(report.luod.missing.includes('all-verified@1'));
  assert.equal(report.rows.find((r) => r.phase === 'preserve')!.luodMs, 100);
  assert.match(formatBlackout(report), /luod: missing marks: .*init@1/);
  assert.match(formatBlackout(report), /ratio luod \/ floor \(blackout, pause to resume\): n\/a/);
});

test("luod's error and fatal log lines are found; info, warnings and non-JSON are not", () => {
  const log = [
    '{"level":30,"msg":"luod ready"}',
    '{"level":40,"msg":"finish failed"}',
    '{"level":50,"msg":"a session of this client did not come back","err":{"message":"ENOENT"}}',
    'not json',
    '{"level":60,"msg":"fatal"}',
  ].join('\n');
  assert.deepEqual(luodErrors(log), ['a session of this client did not come back: ENOENT', 'fatal']);
});

test('the floor program writes the same pattern as pattern.ts (two chunks and a part)', (t) => {
  try {
    execFileSync('gcc', ['--version'], { stdio: 'ignore' });
  } catch {
    t.skip('no gcc');
    return;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luo-floor-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const binary = path.join(dir, 'luo_floor');
  execFileSync('gcc', [
    '-O2',
    '-Wall',
    '-Wextra',
    '-Werror',
    '-o',
    binary,
    path.join(ROOT, 'test/vm/floor/luo_floor.c'),
  ]);
  const size = 2 * (64 << 20) + 5 * 4096;
  const bytes = execFileSync(binary, ['pattern', '--sizes', `${size / 1024}K`], { maxBuffer: size + 1 });
  assert.equal(bytes.length, size);
  using fd = memfdCreate('pattern');
  new Pattern().writeTo(fd.fd, size);
  for (const offset of [0, 4096, (64 << 20) - 4096, 64 << 20, size - 4096]) {
    assert.ok(
      bytes.subarray(offset, offset + 4096).equals(pread(fd, 4096, offset)),
      `page at ${offset} differs between luo_floor.c and pattern.ts`,
    );
  }
  // A size that is not whole pages is refused (exit 2), not rounded.
  assert.throws(
    () => execFileSync(binary, ['pattern', '--sizes', '1000'], { stdio: 'pipe' }),
    (err: { status?: number }) => err.status === 2,
  );
});

/** A QEMU run's console (vm/guest/qemu-update.sh): luod's timeline, luo-qemu's events, clock samples. */
const QEMU_CONSOLE = `[+   5.000s] LUOKIT-BOOT boot=0 release=7.2.13 uptime=3.00
[+  30.000s] LUOKIT-PHASE path=qemu boot=0 phase=qemu-subscribed
[+  40.000s] LUOKIT-CLOCK boot=0 realtime=1000.000000000
[+  40.050s] LUOKIT-CLOCK boot=0 realtime=1000.030000000
[+  41.000s] {"luod_phase":"load","at":1}
[+  42.000s] {"luod_phase":"loaded","at":2}
[+  50.000s] {"luod_phase":"update-start","update":"u-1","at":3}
[+  50.100s] {"luod_phase":"barrier-start","update":"u-1","at":4}
[+  50.300s] LUOKIT-PHASE path=qemu boot=0 phase=qemu-saved
[+  50.400s] {"luod_phase":"barrier-done","update":"u-1","at":6}
[+  50.600s] {"luod_phase":"kexec","update":"u-1","at":7}
[+  55.000s] LUOKIT-BOOT boot=1 release=7.3.0-rc7 uptime=3.00
[+  60.000s] {"luod_phase":"luod-ready","update":"u-1","at":8}
[+  61.000s] LUOKIT-PHASE path=qemu boot=1 phase=qemu-claimed
[+  64.000s] LUOKIT-PHASE path=qemu boot=1 phase=qemu-continued
[+  70.000s] LUOKIT-CLOCK boot=1 realtime=1030.400000000
[+  70.100s] LUOKIT-CLOCK boot=1 realtime=1030.420000000
`;

test('qemu: the wall clock step across the kexec, from the least delayed sample of each boot', () => {
  const samples = clockSamples(parseConsoleLog(QEMU_CONSOLE));
  assert.deepEqual(
    samples.map((s) => [s.boot, s.realtimeMs, s.atMs]),
    [
      [0, 1_000_000, 40_000],
      [0, 1_000_030, 40_050],
      [1, 1_030_400, 70_000],
      [1, 1_030_420, 70_100],
    ],
  );
  // Offsets: boot 0 max(960000, 959980) = 960000; boot 1 max(960400, 960320) = 960400.
  assert.equal(clockStepMs(samples), 400);
  assert.equal(clockStepMs(samples.filter((s) => s.boot === 0)), null, 'one boot alone measures no step');
});

test('qemu: phases by the host clock, the pause by the guest less the clock step, stop -> cont three ways', () => {
  const report = qemuBlackout({
    kernels: '7.2->7.3',
    ram: '32M',
    clock: 'host',
    run: collectMarks(parseConsoleLog(QEMU_CONSOLE)),
    step: 400,
    guestPauseRawMs: 14_250,
    pauseUncertaintyMs: 180,
    luoQemu: { saveMs: 50, stateBytes: 318_000, loadMs: 2500, stopToContMs: 14_100 },
    counter: { lastBefore: 10, firstAfter: 11, sumBefore: 'aa', sumAfter: 'aa' },
  });
  const row = (phase: string) => report.rows.find((r) => r.phase === phase)!.ms;
  assert.deepEqual(
    ['load', 'preserve', 'barrier', 'handover', 'kexec', 'luod-ready', 'claim', 'continue'].map(row),
    [1000, 100, 300, 200, 4400, 5000, 1000, 3000],
  );
  assert.equal(report.totalMs, 14_000);
  assert.equal(report.guestPauseMs, 13_850);
  assert.equal(report.guestPauseRawMs, 14_250);
  assert.equal(report.luoQemuStopToContMs, 13_700);
  assert.equal(report.hostStopToContMs, 64_000 - (50_300 - 50));
  assert.deepEqual(report.missing, []);
  const text = formatQemuBlackout(report);
  assert.match(
    text,
    /guest-visible pause \(the guest's own clocks, CMOS less TSC\): 13850 ms \(as read 14250 ms/,
  );
  assert.match(text, /step of 400 ms/);
  assert.match(text, /barrier\s+300 \(stop inside\)/);
  assert.match(text, /TOTAL \(update-start -> cont\)\s+14000/);
});

test('qemu: a run that never continued names what is missing, and no pause without the step', () => {
  const cut = QEMU_CONSOLE.split('\n').slice(0, 13).join('\n');
  const report = qemuBlackout({
    kernels: '7.2->7.2',
    ram: '32M',
    clock: 'host',
    run: collectMarks(parseConsoleLog(cut)),
    step: null,
    guestPauseRawMs: 900,
    pauseUncertaintyMs: null,
    luoQemu: {},
    counter: { lastBefore: 10, firstAfter: null, sumBefore: 'aa', sumAfter: null },
  });
  assert.ok(report.missing.includes('qemu-continued@1'));
  assert.equal(report.totalMs, null);
  assert.equal(report.guestPauseMs, null, 'the raw figure is not passed off as the pause');
  assert.equal(report.guestPauseRawMs, 900);
  assert.match(formatQemuBlackout(report), /missing marks: .*qemu-continued@1/);
});

test("qemu: luo-qemu's log events and errors; QEMU's own lines in it are skipped", () => {
  const boot0 = [
    'qemu-system-x86_64: warning: something',
    '{"level":30,"event":"saved","state_bytes":318000,"save_ms":61}',
    '{"level":30,"event":"kexec"}',
  ].join('\n');
  const boot1 = [
    '{"level":30,"event":"claimed","sessions":1}',
    '{"level":40,"msg":"QEMU arguments differ from before the update"}',
    '{"level":30,"event":"continued","blackout_ms":15000,"qemu_start_ms":2600,"state_bytes":318000}',
    '{"level":50,"msg":"the VM could not be resumed","err":{"message":"gone"}}',
  ].join('\n');
  assert.deepEqual(luoQemuFigures(boot0, boot1), {
    saveMs: 61,
    stateBytes: 318000,
    loadMs: 2600,
    stopToContMs: 15000,
  });
  assert.equal(luoQemuEvents(boot1, 'claimed').length, 1);
  assert.deepEqual(luoQemuErrors(boot0), []);
  assert.deepEqual(luoQemuErrors(boot1), ['the VM could not be resumed: gone']);
});

test('blackout file: each part writes its own section and keeps the other', () => {
  const luod = collectMarks(parseConsoleLog(LUOD_CONSOLE));
  const floor = collectMarks(parseConsoleLog(FLOOR_CONSOLE));
  const pairs = [blackoutReport({ kernels: '7.2->7.2', sizes: ['64M'], luod, floor })];
  const qemu = [
    qemuBlackout({
      kernels: '7.2->7.2',
      ram: '32M',
      clock: 'host',
      run: collectMarks(parseConsoleLog(QEMU_CONSOLE)),
      step: 0,
      guestPauseRawMs: 1,
      pauseUncertaintyMs: 1,
      luoQemu: {},
      counter: { lastBefore: 1, firstAfter: 2, sumBefore: 'a', sumAfter: 'a' },
    }),
  ];
  const withQemu = mergeBlackoutFile({ clock: 'x', pairs }, { qemu });
  assert.equal(withQemu.pairs, pairs);
  assert.equal(withQemu.qemu, qemu);
  const again = mergeBlackoutFile(withQemu, { pairs: [] });
  assert.equal(again.qemu, qemu, 'the update part keeps the QEMU section');
  assert.deepEqual(mergeBlackoutFile(undefined, { pairs }).qemu, undefined);
  const text = formatBlackoutFile(withQemu);
  assert.match(text, /^Blackout, kernels 7\.2->7\.2/);
  assert.match(text, /\nQEMU VM across the live update, kernels 7\.2->7\.2/);
});

test("Node's own start, probed in the floor's next boot after its blackout: cold and warm, and the ratio beyond it", () => {
  const probe = [
    '[+  25.300s] LUOKIT-PHASE path=floor boot=1 phase=node-probe',
    '[+  26.740s] LUOKIT-PHASE path=floor boot=1 phase=node-cold',
    '[+  27.430s] LUOKIT-PHASE path=floor boot=1 phase=node-warm',
  ].join('\n');
  const report = blackoutReport({
    kernels: '7.2->7.3',
    sizes: ['64M', '128M'],
    luod: collectMarks(parseConsoleLog(LUOD_CONSOLE)),
    floor: collectMarks(parseConsoleLog(`${FLOOR_CONSOLE}${probe}\n`)),
  });
  assert.deepEqual(report.nodeStart, { coldMs: 1440, warmMs: 690 });
  // Not part of the floor's blackout, which ended when its files were retrieved.
  assert.equal(report.floor.totalMs, 19000 - 11525);
  assert.equal(report.ratioBeyondNode, Math.round((11000 / (7475 + 1440)) * 100) / 100);
  const table = formatBlackout(report);
  assert.match(table, /Node's own start in the next kernel .*: 1440 ms cold page cache, 690 ms warm/);
  assert.match(table, /ratio luod \/ \(floor \+ Node's cold start\): 1\.23x/);
});

test('a mark a printk split in two is read whole, at the time its first part came (the floor once lost init@1)', () => {
  // As the floor's console of 2026-12-07 received it: the kernel's mouse line
  // landed inside the job's LUOKIT-BOOT line.
  const text = `[+  10.521s] [    1.690869] Run /init as init process
[+  10.705s] LUOKIT-BOOT boot[    1.873468] input: ImExPS/2 Generic Explorer Mouse as /devices/platform/i8042/serio1/input/input3
[+  10.706s] =1 release=7.2.13 uptime=1.90
[+  10.893s] [    2.060488] EXT4-fs (vda): mounted filesystem ro without journal.
[+  11.137s] LUOKIT-PHASE path=floor boot=1 phase=start
[+  11.143s] LUOKIT-PHASE path=floor boot=1 phase=re[    2.300001] random: crng init done
[+  11.150s] LUOKIT-PHASE path=floor boot=1 phase=verified
`;
  const lines = parseConsoleLog(text);
  assert.deepEqual(
    lines.map((l) => [l.atMs, l.text]),
    [
      [10521, '[    1.690869] Run /init as init process'],
      [
        10705,
        '[    1.873468] input: ImExPS/2 Generic Explorer Mouse as /devices/platform/i8042/serio1/input/input3',
      ],
      [10705, 'LUOKIT-BOOT boot=1 release=7.2.13 uptime=1.90'],
      [10893, '[    2.060488] EXT4-fs (vda): mounted filesystem ro without journal.'],
      [11137, 'LUOKIT-PHASE path=floor boot=1 phase=start'],
      [11143, '[    2.300001] random: crng init done'],
      // No tail came (the next line is a mark of its own): the head as it is, then that mark.
      [11143, 'LUOKIT-PHASE path=floor boot=1 phase=re'],
      [11150, 'LUOKIT-PHASE path=floor boot=1 phase=verified'],
    ],
  );
  const run = collectMarks(lines);
  assert.equal(run.marks['init@1'], 10705);
  assert.equal(run.marks['start@1'], 11137);
  assert.equal(run.marks['verified@1'], 11150);
});
