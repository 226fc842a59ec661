/**
 * Qualification records and the policy on them, without QEMU (#16 part 3; docs/qualify.md):
 * records written here by the test, read back and looked up (the newest decides, another
 * image of the same release is not the pair), the HTML page, how a guest run is judged
 * (works, cold boot, panic, files lost), and luod --require-qualified on the emulated
 * kernel: refused with EPERM and a sentence naming the pair, let through by a passing
 * record, refused again by a later failed one, loaded with --force and so recorded. Also
 * the gate on an image it cannot read (`unknown`, EPROTO unless forced).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { workloadParts } from '../src/cli/qualify.js';
import { imageFormats } from '../src/daemon/kernel.js';
import { gateVerdict, type SpokenFormats } from '../src/image/gate.js';
import { readKernelInfoCached } from '../src/image/kernel-info.js';
import { qualificationVerdict } from '../src/qualify/policy.js';
import { cannotBoot, judgeRun } from '../src/qualify/real.js';
import {
  lookupQualification,
  QUALIFICATION_SCHEMA,
  type QualificationRecord,
  type QualifiedKernel,
  readQualifications,
  recordId,
  writeQualification,
} from '../src/qualify/record.js';
import { qualificationHtml } from '../src/report/qualification.js';
import { parseMarker, type QemuResult } from '../src/vm/qemu.js';
import { cliHost } from './support/cli-host.js';
import { ROOT } from './support/luod.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-qualify-records-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const SHA_A = 'a'.repeat(64);
const SHA_B = 'b'.repeat(64);

function kernel(release: string, sha256: string): QualifiedKernel {
  return {
    image: `/images/${release}`,
    sha256,
    release,
    liveupdate: true,
    formats: { kho: 'kho-v4', luo: 'luo-v5', files: ['memfd-v2'] },
  };
}

/** A record as luoctl qualify writes it; `at` orders them. */
function record(
  from: string,
  to: string,
  result: QualificationRecord['result'],
  at: string,
  toSha = SHA_B,
): QualificationRecord {
  return {
    schema: QUALIFICATION_SCHEMA,
    id: recordId(from, to, new Date(at)),
    result,
    outcome: result === 'pass' ? 'works' : result === 'fail' ? 'cold-boot' : 'cannot-boot',
    ...(result !== 'pass' && { reason: 'written by the test' }),
    from: kernel(from, SHA_A),
    to: kernel(to, toSha),
    gate: { outcome: 'works', sentence: 'the next kernel reads what this kernel writes' },
    agrees_with_gate: result === 'not-run' ? null : result === 'pass',
    checks: [
      { name: 'boot 0 runs it', ok: true },
      {
        name: 'memfd vm-1 (16M) verified',
        ok: result === 'pass',
        ...(result !== 'pass' && { detail: 'lost' }),
      },
    ],
    workload: { description: 'test', memfds: ['16M'] },
    guest: { qemu: ['qemu-system-x86_64', '-m', '2G'], memory: '2G', cpus: 2 },
    blackout: result === 'pass' ? { total_ms: 1234 } : {},
    started: at,
    finished: at,
    luokit: '0.1.0',
  };
}

test('records: written, read back with their schema, and the newest of a pair decides', () => {
  const dir = path.join(tmp, 'lookup');
  const file = writeQualification(dir, record('7.2.13', '7.3.0-rc7', 'pass', '2026-12-01T10:00:00.000Z'));
  assert.equal(path.basename(file), '7.2.13--7.3.0-rc7--20261201T100000Z.json');
  fs.writeFileSync(path.join(dir, 'notes.json'), '{"not": "a record"}');
  fs.writeFileSync(path.join(dir, 'broken.json'), '{');
  const read = readQualifications(dir);
  assert.equal(read.records.length, 1);
  assert.equal(read.unreadable.length, 2, 'a file that is not a record is listed, never a pass');

  const found = lookupQualification(dir, { release: '7.2.13' }, { release: '7.3.0-rc7', sha256: SHA_B });
  assert.equal(found.qualified, true, found.sentence);
  assert.equal(found.file, file);
  assert.match(found.sentence, /^7\.2\.13 -> 7\.3\.0-rc7 qualified/);

  // Another image of the same release is another kernel.
  const rebuilt = lookupQualification(
    dir,
    { release: '7.2.13' },
    { release: '7.3.0-rc7', sha256: 'c'.repeat(64) },
  );
  assert.equal(rebuilt.qualified, false);
  assert.match(
    rebuilt.sentence,
    /qualifies other images of these releases: a rebuilt kernel must be qualified again/,
  );

  // The reverse pair is not the pair.
  assert.equal(lookupQualification(dir, { release: '7.3.0-rc7' }, { release: '7.2.13' }).qualified, false);

  // A run that could not test decides nothing; a later failure withdraws the pass.
  writeQualification(dir, record('7.2.13', '7.3.0-rc7', 'not-run', '2026-12-02T10:00:00.000Z'));
  assert.equal(lookupQualification(dir, { release: '7.2.13' }, { release: '7.3.0-rc7' }).qualified, true);
  writeQualification(dir, record('7.2.13', '7.3.0-rc7', 'fail', '2026-12-03T10:00:00.000Z'));
  const withdrawn = lookupQualification(dir, { release: '7.2.13' }, { release: '7.3.0-rc7' });
  assert.equal(withdrawn.qualified, false);
  assert.match(withdrawn.sentence, /failed its qualification .*cold-boot: written by the test/);
});

test('a records directory that is not there is an error with the errno name, not an empty policy', () => {
  assert.throws(
    () => lookupQualification(path.join(tmp, 'missing'), { release: 'a' }, { release: 'b' }),
    (err: Error & { code?: string }) =>
      err.code === 'ENOENT' && /cannot read the qualification records/.test(err.message),
  );
  const verdict = qualificationVerdict(path.join(tmp, 'missing'), { release: 'a' }, { release: 'b' });
  assert.equal(verdict.qualified, false);
  assert.match(verdict.sentence, /cannot be checked: ENOENT/);
});

test('the policy hashes the next image: the record qualifies that image, not its release', () => {
  const dir = path.join(tmp, 'policy');
  const image = path.join(tmp, 'bzImage-7.3');
  fs.writeFileSync(image, 'not really a kernel, only bytes to hash');
  const actual = spawnSync('sha256sum', [image], { encoding: 'utf8' }).stdout.split(' ')[0]!;
  assert.match(actual, /^[0-9a-f]{64}$/);
  writeQualification(dir, record('7.2.13', '7.3.0-rc7', 'pass', '2026-12-01T10:00:00.000Z', actual));
  assert.equal(
    qualificationVerdict(dir, { release: '7.2.13' }, { release: '7.3.0-rc7' }, image).qualified,
    true,
  );
  fs.appendFileSync(image, 'rebuilt');
  const other = qualificationVerdict(dir, { release: '7.2.13' }, { release: '7.3.0-rc7' }, image);
  assert.equal(other.qualified, false);
  assert.match(
    other.sentence,
    new RegExp(`luoctl qualify --from IMAGE-OF-7\\.2\\.13 --to ${image} --dir ${dir} qualifies it`),
  );
});

test('the HTML page: the verdict, both kernels, every check as a row', () => {
  const pass = qualificationHtml(record('7.2.13', '7.3.0-rc7', 'pass', '2026-12-01T10:00:00.000Z'));
  assert.match(pass, /data-result="pass"/);
  assert.equal((pass.match(/data-check=/g) ?? []).length, 2);
  assert.match(pass, /data-kernel="from"/);
  assert.match(pass, /kho-v4, luo-v5, memfd-v2/);
  const fail = qualificationHtml({
    ...record('7.2.13', '7.3.0-rc7', 'fail', '2026-12-01T10:00:00.000Z'),
    reason: '<b>',
  });
  assert.match(fail, /data-result="fail"/);
  assert.match(fail, /data-ok="false"/);
  assert.match(fail, /&lt;b&gt;/, 'escaped');
});

/** A guest run's result as runQemu returns it, for judgeRun; `markers` are console lines. */
function guestRun(
  boots: [number, string][],
  extra: Partial<QemuResult> = {},
  lines: string[] = [],
): QemuResult {
  const markers = ['LUOKIT-PHASE path=luod boot=0 phase=subscribed', ...lines].map(
    (line) => parseMarker(line, 1)!,
  );
  return {
    outcome: 'ok',
    exitStatus: 0,
    boots: boots.map(([boot, release]) => ({
      boot,
      release,
      kernelAtMs: 0,
      initAtMs: 1000 * boot,
      guestUptimeS: 1,
    })),
    kexecs: [],
    markers,
    timedOut: false,
    qemuExit: { code: 0, signal: null },
    durationMs: 1,
    consoleLog: '',
    command: [],
    ...extra,
  };
}

/** The counter guest's serial lines (native/counter-guest): counter, TSC, CMOS time, RAM sum. */
function counterLines(first: number, count: number, banner: boolean): string {
  const lines: string[] = banner ? ['luokit counter guest: booted'] : [];
  for (let i = 0; i < count; i++) {
    const n = first + i;
    const hex = (v: number, w: number) => v.toString(16).padStart(w, '0');
    lines.push(
      `N=${hex(n, 8)} T=${hex(n * 1_000_000, 16)} R=1200${String(10 + Math.floor(n / 4)).padStart(2, '0')} K=deadbeef`,
    );
  }
  return `${lines.join('\r\n')}\r\n`;
}

const KEXEC_TESTS = ['luo_kexec_simple', 'luo_multi_session'];
const FULL = { memfds: ['16M'], kexecTests: KEXEC_TESTS, scenarios: true, qemu: true };

/** What qualify.sh leaves in its output directory when everything crossed the kexec. */
function fullRunDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const write = (name: string, text: string) => fs.writeFileSync(path.join(dir, name), text);
  write('load.json', JSON.stringify({ loaded: { gate: { outcome: 'works', sentence: 's' } } }));
  write(
    'luod-status.boot1.json',
    JSON.stringify({ pending_claims: [], last_update: { outcome: 'rebooted' } }),
  );
  write('luod.boot1.log', '');
  write('liveupdate.boot0.txt', 'TAP version 13\n1..2\nok 1 create\nok 2 preserve # SKIP no\n');
  const scenario = (stage: string, status = 'pass') => ({
    id: `kexec/simple/${stage === 'before-kexec' ? 'before' : 'after'}`,
    group: 'kexec/simple',
    stage,
    status,
  });
  write(
    'scenarios.boot0.json',
    JSON.stringify({ boot: 0, release: '7.2.13', results: [scenario('before-kexec')] }),
  );
  write(
    'scenarios.boot1.json',
    JSON.stringify({ boot: 1, release: '7.3.0-rc7', results: [scenario('after-kexec')] }),
  );
  write('serial.boot0.txt', counterLines(0, 20, true));
  write('serial.boot1.txt', counterLines(20, 20, false));
  write(
    'luo-qemu.boot1.log',
    `${JSON.stringify({ level: 30, event: 'claimed' })}\n${JSON.stringify({ level: 30, event: 'continued', blackout_ms: 900 })}\n`,
  );
}

const SELFTEST_LINES = [
  'LUOKIT-RESULT kind=selftest name=liveupdate stage=single status=0',
  ...KEXEC_TESTS.flatMap((t) => [
    `LUOKIT-RESULT kind=selftest name=${t} stage=1 status=0`,
    `LUOKIT-RESULT kind=selftest name=${t} stage=2 status=0`,
  ]),
  'LUOKIT-PHASE path=qualify boot=0 phase=qemu-running',
  'LUOKIT-QEMU-EXIT boot=1 status=0',
];

test('judging a guest run: every part, works, cold boot, panic, files lost, each check with its outcome', () => {
  const from = kernel('7.2.13', SHA_A);
  const to = kernel('7.3.0-rc7', SHA_B);
  const dir = path.join(tmp, 'judge');
  fullRunDir(dir);
  const kexeced = { luod: { 'kexec@0': 10 }, vmms: [] as never[] };
  const verified = {
    luod: { 'kexec@0': 10 },
    vmms: [{ id: 'vm-1', verified: true, bytes: 16 << 20, verify: 'pattern', atMs: 20 }],
  };
  const both = guestRun(
    [
      [0, '7.2.13'],
      [1, '7.3.0-rc7'],
    ],
    {},
    SELFTEST_LINES,
  );
  const parts = (c: { part?: string }[]) => [...new Set(c.map((x) => x.part))].sort();

  const works = judgeRun(both, dir, verified, from, to, 'works', FULL);
  assert.equal(works.outcome, 'works', JSON.stringify(works.checks.filter((c) => !c.ok)));
  assert.ok(works.checks.every((c) => c.ok && c.outcome === 'held'));
  assert.deepEqual(parts(works.checks), ['kernel', 'luod', 'qemu', 'scenarios', 'selftests']);
  // Every part's checks in both kernels: selftest stage 1 in A and stage 2 in B, each scenario's two stages.
  const names = works.checks.map((c) => `${c.kernel} ${c.name}`);
  assert.ok(
    names.includes('from selftest luo_multi_session stage 1 (preserve, hold) in 7.2.13'),
    names.join('\n'),
  );
  assert.ok(names.includes('to selftest luo_multi_session stage 2 (retrieve, verify, finish) in 7.3.0-rc7'));
  assert.ok(names.includes('from scenario kexec/simple/before in 7.2.13'));
  assert.ok(names.includes('to scenario kexec/simple/after in 7.3.0-rc7'));
  assert.ok(names.some((n) => n.startsWith('to the QEMU VM goes on')));

  // Without the optional parts: only the luod checks (and the kernels).
  const luodOnly = judgeRun(both, dir, verified, from, to, 'works', { memfds: ['16M'] });
  assert.deepEqual(parts(luodOnly.checks), ['kernel', 'luod']);

  // A selftest's stage 2 and the VM failing while luod restored and every byte came back:
  // a failed run (a bug or a behaviour to look at), and only those checks failed.
  const stage2 = guestRun(
    both.boots.map((b) => [b.boot, b.release]),
    {},
    [
      ...SELFTEST_LINES.filter((l) => !l.includes('luo_multi_session stage=2')),
      'LUOKIT-RESULT kind=selftest name=luo_multi_session stage=2 status=1',
    ],
  );
  const failedStage2 = judgeRun(stage2, dir, verified, from, to, 'works', FULL);
  assert.equal(failedStage2.outcome, 'failed');
  assert.deepEqual(
    failedStage2.checks.filter((c) => !c.ok).map((c) => [c.name, c.outcome]),
    [['selftest luo_multi_session stage 2 (retrieve, verify, finish) in 7.3.0-rc7', 'failed']],
  );

  // A memfd that came back short: files lost; the checks in B that failed are lost with them.
  const short = { ...verified, vmms: [{ ...verified.vmms[0]!, bytes: 4096 }] };
  const lost = judgeRun(both, dir, short, from, to, 'works', FULL);
  assert.equal(lost.outcome, 'files-lost');
  assert.match(lost.reason ?? '', /memfd vm-1 \(16M\)/);
  assert.deepEqual(
    lost.checks.filter((c) => !c.ok).map((c) => c.outcome),
    ['lost'],
  );

  // The next kernel ignored the handover: luod found no luod-internal session, the VM, the
  // selftests and the scenarios found nothing: every check in B is lost, none failed.
  fs.writeFileSync(
    path.join(dir, 'luod-status.boot1.json'),
    JSON.stringify({ pending_claims: [], last_update: null }),
  );
  fs.writeFileSync(
    path.join(dir, 'luod.boot1.log'),
    '{"level":30,"msg":"no live update in progress (no luod-internal session)"}\n',
  );
  fs.writeFileSync(
    path.join(dir, 'scenarios.boot1.json'),
    JSON.stringify({
      results: [
        {
          id: 'kexec/simple/after',
          group: 'kexec/simple',
          stage: 'after-kexec',
          status: 'fail',
          error: 'ENOENT',
        },
      ],
    }),
  );
  fs.writeFileSync(path.join(dir, 'serial.boot1.txt'), counterLines(0, 5, true));
  const coldRun = guestRun(
    both.boots.map((b) => [b.boot, b.release]),
    {},
    [
      ...SELFTEST_LINES.filter((l) => !/stage=2|QEMU-EXIT/.test(l)),
      ...KEXEC_TESTS.map((t) => `LUOKIT-RESULT kind=selftest name=${t} stage=2 status=1`),
      'LUOKIT-QEMU-EXIT boot=1 status=0',
    ],
  );
  const cold = judgeRun(coldRun, dir, kexeced, from, to, 'works', FULL);
  assert.equal(cold.outcome, 'cold-boot');
  assert.match(cold.reason ?? '', /no update restored/);
  const inB = cold.checks.filter((c) => c.kernel === 'to' && !c.ok);
  assert.ok(inB.length >= 6, JSON.stringify(inB));
  assert.deepEqual([...new Set(inB.map((c) => c.outcome))], ['lost']);
  assert.deepEqual(parts(inB), ['luod', 'qemu', 'scenarios', 'selftests']);
  assert.ok(cold.checks.filter((c) => c.kernel === 'from').every((c) => c.outcome === 'held'));

  // A panic after luod's kexec, before the next /init: every check in B lost, listed all the same.
  const panicked = guestRun(
    [[0, '7.2.13']],
    {
      outcome: 'failed',
      reason: 'after kexec: the next kernel started but did not reach /init',
      panic: 'Kernel panic - not syncing: luo: bad data',
    },
    SELFTEST_LINES.filter((l) => !/stage=2|QEMU-EXIT/.test(l)),
  );
  const panic = judgeRun(panicked, dir, kexeced, from, to, 'works', FULL);
  assert.equal(panic.outcome, 'panic');
  assert.match(panic.reason ?? '', /reaches \/init/);
  const panicB = panic.checks.filter((c) => c.kernel === 'to');
  assert.equal(panicB.length, works.checks.filter((c) => c.kernel === 'to').length);
  assert.ok(panicB.every((c) => c.outcome === 'lost'));

  // The same panic before any kexec is a failed run, not the next kernel's panic: B never ran.
  const early = judgeRun(panicked, dir, { luod: {}, vmms: [] }, from, to, 'works', FULL);
  assert.equal(early.outcome, 'failed');
  assert.ok(early.checks.filter((c) => c.kernel === 'to').every((c) => c.outcome === 'not-run'));
  // A failure in A before `luoctl load` (the VM never ran): the load's check never ran either.
  fs.rmSync(path.join(dir, 'load.json'));
  const noLoad = judgeRun(panicked, dir, { luod: {}, vmms: [] }, from, to, 'works', FULL);
  assert.equal(noLoad.checks.find((c) => c.name.startsWith('luoctl load'))?.outcome, 'not-run');
  assert.equal(noLoad.checks.find((c) => c.name.startsWith('luod kexecs'))?.outcome, 'failed');

  // The scenario program died in A: boot 0 stopped there; its check failed, what came after never ran.
  fs.rmSync(path.join(dir, 'scenarios.boot0.json'));
  const died = guestRun([[0, '7.2.13']], { outcome: 'ok', exitStatus: 1 }, [
    ...SELFTEST_LINES.filter((l) => !/stage=2|QEMU-EXIT|qemu-running/.test(l)),
    'LUOKIT-QUALIFY-FAILED boot=0 part=scenarios reason=the scenario program exited (see scenarios.boot0.log)',
  ]);
  died.markers.shift(); // no 'subscribed': luod never started
  const stopped = judgeRun(died, dir, { luod: {}, vmms: [] }, from, to, 'works', FULL);
  assert.equal(stopped.outcome, 'failed');
  assert.match(stopped.reason ?? '', /before-kexec stages ran: the scenario program exited/);
  assert.deepEqual(
    stopped.checks.filter((c) => c.outcome === 'failed').map((c) => c.part),
    ['scenarios'],
  );
  assert.ok(
    stopped.checks
      .filter((c) => c.kernel === 'to' || c.part === 'luod' || c.part === 'qemu')
      .every((c) => c.outcome === 'not-run'),
    JSON.stringify(stopped.checks.filter((c) => c.outcome !== 'not-run' && c.outcome !== 'held')),
  );

  // A guest that could not run (no 9p in A, say): cannot-boot with what is missing, and every
  // check listed as not run, none failed.
  const infra = guestRun([], {
    outcome: 'infra',
    reason: "guest setup: boot 0: cannot mount the host's / (9p tag host)",
  });
  const none = cannotBoot(
    judgeRun(infra, dir, { luod: {}, vmms: [] }, from, to, 'works', FULL).checks,
    infra.reason,
  );
  assert.equal(none.outcome, 'cannot-boot');
  assert.match(none.reason, /9p tag host/);
  assert.ok(none.checks.length >= works.checks.length - 17, `${none.checks.length} checks`);
  assert.ok(
    none.checks.every((c) => !c.ok && c.outcome === 'not-run' && /not run: .*9p/.test(c.detail ?? '')),
  );
});

test('a record of the full workload: parses, renders every check with its outcome, and the policy reads it', () => {
  const dir = path.join(tmp, 'full-workload');
  const at = '2026-12-06T18:00:00.000Z';
  const base = record('7.2.13', '7.3.0-rc7', 'fail', at);
  const full: QualificationRecord = {
    ...base,
    outcome: 'cold-boot',
    agrees_with_gate: false,
    checks: [
      {
        name: 'selftest luo_kexec_simple stage 1',
        ok: true,
        part: 'selftests',
        kernel: 'from',
        outcome: 'held',
      },
      {
        name: 'selftest luo_kexec_simple stage 2',
        ok: false,
        part: 'selftests',
        kernel: 'to',
        outcome: 'lost',
        detail: 'exit 1',
      },
      { name: 'scenario kexec/simple/after', ok: false, part: 'scenarios', kernel: 'to', outcome: 'lost' },
      { name: 'the QEMU VM goes on', ok: false, part: 'qemu', kernel: 'to', outcome: 'lost' },
      { name: 'luod restores', ok: false, part: 'luod', kernel: 'to', outcome: 'lost' },
    ],
    workload: {
      description: 'the standard workload',
      memfds: ['16M', '32M'],
      parts: ['kernel', 'selftests', 'scenarios', 'luod', 'qemu'],
      selftests: { dir: '/st', kexec_tests: ['luo_kexec_simple'] },
      scenarios: { program: '/s.mjs', count: 34 },
      qemu: { vms: 1, ram: '32M' },
    },
    blackout: { total_ms: 1, qemu_guest_pause_ms: 900 },
  };
  writeQualification(dir, full);
  const back = readQualifications(dir);
  assert.deepEqual(back.unreadable, []);
  assert.deepEqual(back.records[0]!.record, full);
  const page = qualificationHtml(full);
  assert.equal((page.match(/data-outcome="lost"/g) ?? []).length, 4);
  assert.equal((page.match(/data-outcome="held"/g) ?? []).length, 1);
  assert.match(page, /data-part="qemu"/);
  const lookup = lookupQualification(dir, { release: '7.2.13' }, { release: '7.3.0-rc7', sha256: SHA_B });
  assert.equal(lookup.qualified, false);
  assert.match(lookup.sentence, /failed its qualification .*cold-boot/);
  // A partial workload says so on the page.
  const partial = qualificationHtml({
    ...full,
    workload: { ...full.workload, omitted: [{ part: 'qemu', why: 'left out by --without qemu' }] },
  });
  assert.match(partial, /data-omitted="qemu"/);
  // A record of an older luokit (checks without outcome or part) still reads, and renders.
  assert.match(qualificationHtml(record('7.2.13', '7.2.13', 'pass', at)), /data-outcome="held"/);
});

test('luoctl qualify: the standard workload needs every part, or leaving one out by name', () => {
  assert.throws(
    () => workloadParts({}),
    (err: NodeJS.ErrnoException) =>
      err.code === 'EINVAL' && /--selftests DIR.*--without selftests/.test(err.message),
  );
  assert.throws(
    () => workloadParts({ selftests: '/st' }),
    (err: NodeJS.ErrnoException) => err.code === 'EINVAL' && /--scenarios FILE/.test(err.message),
  );
  assert.throws(
    () => workloadParts({ selftests: '/st', scenarios: '/s', without: 'selftests' }),
    (err: NodeJS.ErrnoException) => err.code === 'EINVAL' && /contradict/.test(err.message),
  );
  assert.throws(
    () => workloadParts({ without: 'luod' }),
    (err: NodeJS.ErrnoException) => err.code === 'EINVAL',
  );
  assert.deepEqual(workloadParts({ selftests: '/st', scenarios: '/s' }), {
    selftests: '/st',
    scenarios: '/s',
    qemu: true,
    omitted: [],
  });
  assert.deepEqual(workloadParts({ without: 'selftests,scenarios,qemu' }), {
    qemu: false,
    omitted: [
      { part: 'selftests', why: 'left out by --without selftests' },
      { part: 'scenarios', why: 'left out by --without scenarios' },
      { part: 'qemu', why: 'left out by --without qemu' },
    ],
  });
});

test('the gate on an image it cannot read: unknown, with the reason, never a guess', async () => {
  const damaged = path.join(tmp, 'damaged-bzImage');
  // A bzImage's header (HdrS at 0x202, boot protocol 2.15) whose payload is garbage.
  const image = Buffer.alloc(0x4000);
  image.write('HdrS', 0x202, 'latin1');
  image.writeUInt16LE(0x020f, 0x206);
  image[0x1f1] = 1;
  image.writeUInt32LE(0x100, 0x248);
  image.writeUInt32LE(0x800, 0x24c);
  image.fill(0x5a, 0x300);
  fs.writeFileSync(damaged, image);
  const next = await imageFormats(damaged);
  assert.ok(next.unreadable, JSON.stringify(next));
  assert.match(next.unreadable!, /^E[A-Z]+: /);
  const current: SpokenFormats = {
    release: '7.2.13',
    kho: 'kho-v4',
    luo: 'luo-v5',
    files: ['memfd-v2'],
    source: 'table',
  };
  const verdict = gateVerdict(current, next);
  assert.equal(verdict.outcome, 'unknown');
  assert.equal(verdict.ok, false);
  assert.match(
    verdict.sentence,
    /^the gate cannot read the next kernel's image \(E[A-Z]+: .*\): it cannot tell/,
  );
  const unknownHere = gateVerdict({ release: '9.9.9', files: [], source: 'unknown' }, current);
  assert.equal(unknownHere.outcome, 'unknown');
  assert.match(unknownHere.sentence, /does not know what this kernel \(9\.9\.9\) writes/);
});

test("luod's image reading is remembered while the file is unchanged, and read again once it changes", async () => {
  // A minimal ELF "kernel": its banner and LUO's compatibles as strings of their own.
  const elf = (release: string) => {
    const head = Buffer.alloc(64);
    head.writeUInt32BE(0x7f454c46, 0);
    return Buffer.concat([
      head,
      Buffer.from(`\0Linux version ${release} (test@luokit) #1\0kho-v4\0luo-v5\0`, 'latin1'),
      Buffer.alloc(1024),
    ]);
  };
  const file = path.join(tmp, 'vmlinux');
  fs.writeFileSync(file, elf('9.9.1'));
  const first = readKernelInfoCached(file);
  assert.equal(readKernelInfoCached(file), first, 'the same reading, not a second one');
  assert.equal((await first).release, '9.9.1');
  assert.deepEqual([(await first).formats.kho, (await first).formats.luo], ['kho-v4', 'luo-v5']);
  fs.writeFileSync(file, elf('9.9.2'));
  assert.equal((await readKernelInfoCached(file)).release, '9.9.2', 'a rewritten image is read again');
  fs.writeFileSync(file, 'not a kernel at all, but long enough to be looked at: '.repeat(20));
  await assert.rejects(
    readKernelInfoCached(file),
    (err: Error & { code?: string }) => err.code === 'ENOEXEC',
  );
});

const policyDir = path.join(tmp, 'qualified');
fs.mkdirSync(policyDir, { recursive: true });
const host = cliHost('luokit-require-qualified-', (dir) => [
  '--records',
  path.join(dir, 'records'),
  '--require-qualified',
  policyDir,
]);
const { luoctl } = host;

test('luod --require-qualified: no record, EPERM naming the pair and how to qualify it', () => {
  const refused = luoctl('load', '--emu-version', '7.3');
  assert.equal(refused.status, 1);
  assert.match(
    refused.stderr,
    new RegExp(
      `^luoctl: load: EPERM: refused: no qualification of 7\\.2 -> 7\\.3 in ${policyDir}; this luod requires a passing qualification \\(--require-qualified\\): luoctl qualify --from IMAGE-OF-7\\.2 --to IMAGE-OF-7\\.3 --dir ${policyDir} qualifies it \\(luoctl load --force loads it anyway\\)`,
    ),
  );
  const json = JSON.parse(luoctl('load', '--emu-version', '7.3', '--json').stdout);
  assert.equal(json.ok, false);
  assert.equal(json.error.code, 'EPERM');
  assert.equal(JSON.parse(luoctl('status', '--json').stdout).loaded, null, 'nothing was loaded');
  // A format mismatch is still the gate's first answer.
  assert.match(
    luoctl('load', '--emu-version', '7.1').stderr,
    /EPROTO: refused: the next kernel \(7\.1\) reads kho-v3/,
  );
});

test('luod --require-qualified: a passing record lets the pair through, a later failure withdraws it', () => {
  const file = writeQualification(policyDir, record('7.2', '7.3', 'pass', '2026-12-04T10:00:00.000Z'));
  const loaded = luoctl('load', '--emu-version', '7.3', '--json');
  assert.equal(loaded.status, 0, loaded.stdout + loaded.stderr);
  const gate = JSON.parse(loaded.stdout).loaded.gate;
  assert.equal(gate.ok, true);
  assert.equal(gate.forced, false);
  assert.deepEqual(gate.qualification, {
    required: policyDir,
    qualified: true,
    sentence: `7.2 -> 7.3 qualified (${file}, 2026-12-04T10:00:00.000Z)`,
    record: file,
  });
  writeQualification(policyDir, record('7.2', '7.3', 'fail', '2026-12-05T10:00:00.000Z'));
  const again = luoctl('load', '--emu-version', '7.3');
  assert.equal(again.status, 1);
  assert.match(again.stderr, /EPERM: refused: 7\.2 -> 7\.3 failed its qualification/);
});

test('luod --require-qualified: --force loads an unqualified pair, and the update record says so', () => {
  const forced = luoctl('load', '--emu-version', '7.3', '--force', '--json');
  assert.equal(forced.status, 0, forced.stdout + forced.stderr);
  const gate = JSON.parse(forced.stdout).loaded.gate;
  assert.deepEqual(
    [gate.outcome, gate.ok, gate.forced, gate.qualification.qualified],
    ['works', false, true, false],
  );
  const doctor = JSON.parse(luoctl('doctor', '--json').stdout);
  const check = doctor.checks.find((c: { id: string }) => c.id === 'next-kernel');
  assert.equal(check.status, 'fail');
  assert.match(check.finding, /loaded with --force: 7\.2 -> 7\.3 failed its qualification/);
  const update = JSON.parse(luoctl('update', '--json', '--timeout', '5s').stdout);
  assert.ok(update.update, JSON.stringify(update));
  const saved = JSON.parse(fs.readFileSync(path.join(host.dir, 'records', `${update.update}.json`), 'utf8'));
  assert.equal(saved.gate.forced, true);
  assert.equal(saved.gate.qualification.qualified, false);
  assert.equal(saved.gate.qualification.required, policyDir);
});

test('luod --require-qualified on a directory that is not there refuses to start (ENOENT)', () => {
  const r = spawnSync(
    process.execPath,
    [
      path.join(ROOT, 'dist/daemon/luod-bin.cjs'),
      '--emulate',
      '--state',
      path.join(tmp, 'never'),
      '--socket',
      path.join(tmp, 'never.sock'),
      '--require-qualified',
      path.join(tmp, 'no-such-dir'),
    ],
    { encoding: 'utf8', timeout: 60_000 },
  );
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /ENOENT.*--require-qualified .*no-such-dir: no such directory/);
  assert.equal(r.stderr.includes('    at '), false);
});

test('luoctl qualify without --from and --to (nor --emulated): EINVAL, in JSON too', () => {
  const r = luoctl('qualify', '--from', '/x', '--json');
  assert.equal(r.status, 1);
  assert.deepEqual(JSON.parse(r.stdout).error.code, 'EINVAL');
  const missing = luoctl(
    'qualify',
    '--from',
    path.join(tmp, 'nope'),
    '--to',
    path.join(tmp, 'nope'),
    '--dir',
    tmp,
    '--without',
    'selftests,scenarios,qemu',
    '--json',
  );
  assert.equal(missing.status, 1);
  assert.equal(JSON.parse(missing.stdout).error.code, 'ENOENT');
  // The standard workload's inputs are asked for before anything runs.
  const noSelftests = luoctl('qualify', '--from', '/x', '--to', '/y', '--dir', tmp, '--json');
  assert.equal(noSelftests.status, 1);
  const error = JSON.parse(noSelftests.stdout).error;
  assert.equal(error.code, 'EINVAL');
  assert.match(error.message, /--selftests DIR/);
});
