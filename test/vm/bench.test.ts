/**
 * The real-kernel bench's own logic, without QEMU or a kernel: console markers, the QEMU
 * outcome classification (ok / failed / infra, driven by fake `qemu` scripts), TAP parsing
 * and the parity comparison. The bench itself is `npm run test:vm` (docs/vm.md).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { BASE_CMDLINE, parseMarker, type QemuOptions, qemuCommand, runQemu } from '../../src/vm/qemu.js';
import type { ScenarioResult } from '../scenarios/types.js';
import { compareResults, formatParity } from './parity.js';
import { tapResults } from './selftests.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-vm-test-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A stand-in for qemu-system-x86_64: a shell script printing a console. */
function fakeQemu(name: string, script: string): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, `#!/bin/sh\n${script}\n`, { mode: 0o755 });
  return file;
}

function options(qemu: string, timeoutMs = 10_000): QemuOptions {
  return {
    qemu,
    kernel: '/nonexistent/bzImage',
    initramfs: '/nonexistent/initramfs.cpio.gz',
    append: 'luokit.boot=0',
    shares: [{ tag: 'host', path: '/', readonly: true }],
    timeoutMs,
    consoleLog: path.join(dir, `${path.basename(qemu)}.log`),
  };
}

describe('console markers', () => {
  test('kind and fields; a value runs to the next key', () => {
    const m = parseMarker('[  1.2] LUOKIT-INFRA boot=1 reason=cannot mount the host / (9p) kernel=x', 42);
    assert.equal(m?.kind, 'INFRA');
    assert.deepEqual(m?.fields, { boot: '1', reason: 'cannot mount the host / (9p)', kernel: 'x' });
    assert.equal(m?.atMs, 42);
  });

  test('lines without a marker', () => {
    assert.equal(parseMarker('[    0.000000] Linux version 7.2.13'), undefined);
    assert.equal(parseMarker('LUOKIT-lowercase x=1'), undefined);
  });

  test('the QEMU command line: TCG, the base kernel command line, shares', () => {
    const args = qemuCommand(options('qemu-system-x86_64'));
    assert.equal(args[args.indexOf('-accel') + 1], 'tcg,thread=multi,tb-size=512');
    assert.ok(args.includes('-no-reboot'));
    assert.equal(args[args.indexOf('-append') + 1], `${BASE_CMDLINE} luokit.boot=0`);
    assert.match(args[args.indexOf('-virtfs') + 1]!, /^local,path=\/,mount_tag=host,.*readonly=on$/);
    // LUOKIT_VM_TB_SIZE: the translated-code buffer of an investigation run.
    const small = qemuCommand({ ...options('qemu-system-x86_64'), tbSizeMb: 64 });
    assert.equal(small[small.indexOf('-accel') + 1], 'tcg,thread=multi,tb-size=64');
  });
});

describe('QEMU outcomes', () => {
  test('ok: the job returned; boots, kexecs and blackout are recorded', async () => {
    const qemu = fakeQemu(
      'ok',
      `echo 'Linux version 7.2.13 (x)'
echo 'LUOKIT-BOOT boot=0 release=7.2.13 uptime=2.5'
echo 'LUOKIT-KEXEC boot=0 next=1 kernel=/k'
sleep 0.2
echo 'Linux version 7.3.0 (x)'
echo 'LUOKIT-BOOT boot=1 release=7.3.0 uptime=2.1'
echo 'LUOKIT-EXIT boot=1 status=4'`,
    );
    const started = Date.now();
    const r = await runQemu(options(qemu));
    const elapsed = Date.now() - started;
    assert.equal(r.outcome, 'ok');
    assert.equal(r.exitStatus, 4);
    assert.deepEqual(
      r.boots.map((b) => [b.boot, b.release]),
      [
        [0, '7.2.13'],
        [1, '7.3.0'],
      ],
    );
    assert.equal(r.kexecs.length, 1);
    // Host timestamps of two console lines 0.2 s apart; on a loaded machine both may be read
    // together, so only the bounds are certain.
    const blackout = r.kexecs[0]!.blackoutMs;
    assert.equal(typeof blackout, 'number');
    assert.ok(
      blackout! >= 0 && blackout! <= elapsed,
      `blackout ${blackout} ms within the run's ${elapsed} ms`,
    );
    assert.match(fs.readFileSync(r.consoleLog, 'utf8'), /\[\+\s+\d+\.\d{3}s\] LUOKIT-EXIT boot=1 status=4/);
  });

  test('infra: QEMU is not installed', async () => {
    const r = await runQemu(options(path.join(dir, 'no-such-qemu')));
    assert.equal(r.outcome, 'infra');
    assert.match(r.reason!, /not installed/);
  });

  test('infra: QEMU exits before the kernel prints anything', async () => {
    const r = await runQemu(options(fakeQemu('bad-option', "echo 'qemu: invalid accelerator' >&2; exit 1")));
    assert.equal(r.outcome, 'infra');
    assert.match(r.reason!, /before the kernel printed anything: qemu: invalid accelerator/);
  });

  test('infra: the kernel never reaches /init', async () => {
    const qemu = fakeQemu(
      'no-init',
      "echo 'Linux version 7.2.13'; echo 'Kernel panic - not syncing: No working init found.'",
    );
    const r = await runQemu(options(qemu));
    assert.equal(r.outcome, 'infra');
    assert.match(r.reason!, /did not reach \/init \(Kernel panic - not syncing: No working init found\.\)/);
  });

  test('infra: the guest could not set up', async () => {
    const qemu = fakeQemu(
      'guest-infra',
      "echo 'Linux version 7.2.13'; echo 'LUOKIT-BOOT boot=0 release=7.2.13'; echo 'LUOKIT-INFRA boot=0 reason=cannot mount the host'; echo 'LUOKIT-EXIT boot=0 status=125'",
    );
    const r = await runQemu(options(qemu));
    assert.equal(r.outcome, 'infra');
    assert.match(r.reason!, /cannot mount the host/);
  });

  test('failed: no kernel after the kexec', async () => {
    const qemu = fakeQemu(
      'kexec-lost',
      "echo 'Linux version 7.2.13'; echo 'LUOKIT-BOOT boot=0 release=7.2.13'; echo 'LUOKIT-KEXEC boot=0 next=1 kernel=/k'",
    );
    const r = await runQemu(options(qemu));
    assert.equal(r.outcome, 'failed');
    assert.match(r.reason!, /after kexec 0 -> 1: no kernel started/);
  });

  test('failed: a panic in the next kernel', async () => {
    const qemu = fakeQemu(
      'kexec-panic',
      `echo 'Linux version 7.2.13'; echo 'LUOKIT-BOOT boot=0 release=7.2.13'; echo 'LUOKIT-KEXEC boot=0 next=1 kernel=/k'
echo 'Linux version 7.3.0'; echo 'Kernel panic - not syncing: luo: incompatible ABI'`,
    );
    const r = await runQemu(options(qemu));
    assert.equal(r.outcome, 'failed');
    assert.match(r.reason!, /next kernel started but did not reach \/init \(Kernel panic - not syncing: luo/);
  });

  test('a hanging guest is killed at the timeout', async () => {
    const qemu = fakeQemu(
      'hang',
      "echo 'Linux version 7.2.13'; echo 'LUOKIT-BOOT boot=0 release=7.2.13'; exec sleep 60",
    );
    const started = Date.now();
    const r = await runQemu(options(qemu, 500));
    assert.ok(Date.now() - started < 10_000);
    assert.equal(r.timedOut, true);
    assert.equal(r.outcome, 'failed');
    assert.match(r.reason!, /timeout after 500 ms in boot 0/);
    assert.equal(r.qemuExit.signal, 'SIGTERM');
  });
});

describe('selftest output', () => {
  test('TAP lines', () => {
    const text =
      'TAP version 13\n1..3\nok 1 dev.a\nnot ok 2 dev.b\nok 3 dev.c # SKIP no device\n# Totals: pass:1';
    assert.deepEqual(tapResults(text), [
      { name: 'dev.a', ok: true, skip: false },
      { name: 'dev.b', ok: false, skip: false },
      { name: 'dev.c', ok: true, skip: true },
    ]);
  });
});

describe('parity', () => {
  const result = (
    id: string,
    status: ScenarioResult['status'],
    steps: ScenarioResult['steps'],
  ): ScenarioResult => ({
    id,
    group: id,
    stage: 'single',
    rule: 'a rule',
    status,
    steps,
    ...(status === 'infra' ? { error: 'needs something' } : {}),
    durationMs: 1,
  });
  const ok = (step: string, value?: string) => ({
    step,
    outcome: value === undefined ? ({ ok: true } as const) : ({ ok: true, value } as const),
  });
  const err = (step: string, code: string) => ({ step, outcome: { ok: false, code } as const });

  test('same, different (errno and value), not compared, missing', () => {
    const emulator = [
      result('a', 'pass', [ok('CREATE'), err('CREATE again', 'EEXIST')]),
      result('b', 'fail', [ok('CREATE'), err('CREATE #2', 'EEXIST')]),
      result('c', 'pass', [ok('size', '8192')]),
      result('d', 'infra', []),
      result('e', 'pass', []),
    ];
    const real = [
      result('a', 'pass', [ok('CREATE'), err('CREATE again', 'EEXIST')]),
      result('b', 'pass', [ok('CREATE'), ok('CREATE #2')]),
      result('c', 'pass', [ok('size', '4096')]),
      result('d', 'pass', [ok('x')]),
    ];
    const report = compareResults(emulator, real);
    assert.deepEqual(
      report.rows.map((r) => [r.id, r.verdict]),
      [
        ['a', 'same'],
        ['b', 'different'],
        ['c', 'different'],
        ['d', 'not-compared'],
        ['e', 'missing'],
      ],
    );
    assert.deepEqual(report.rows[1]!.differences, [
      { index: 1, emulator: 'CREATE #2: EEXIST', real: 'CREATE #2: ok' },
    ]);
    assert.equal(report.rows[2]!.differences[0]!.real, 'size: ok "4096"');
    assert.deepEqual(report.counts, { same: 1, different: 2, 'not-compared': 1, missing: 1 });
    const text = formatParity(report);
    assert.match(text, /1 same, 2 different, 1 not compared, 1 missing/);
    assert.match(text, /emulator: CREATE #2: EEXIST\n\s+real:\s+CREATE #2: ok/);
  });
});
