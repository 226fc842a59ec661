/**
 * Update records and `luoctl report`: the records directory (bounded,
 * damaged records named), the carried state's older format, the compiled
 * CLI's summary and --json, and the HTML page as headless Chromium renders
 * it (Debian's `chromium` must be installed: the test fails without it).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import pino from 'pino';
import type { LuodKernel } from '../src/daemon/kernel.js';
import { draftFromTimeline, RecordBuilder } from '../src/daemon/record-builder.js';
import { UpdateRecords } from '../src/daemon/update-records.js';
import { blackoutOf, readyToClaimOf } from '../src/record/format.js';
import { latestRecord, RecordStore, readRecordFile, recordPath } from '../src/record/store.js';
import { reportHtml } from '../src/report/html.js';
import { abortedRecord, completedRecord } from './support/records.js';

const CLI = 'dist/cli/luoctl.js';
const silentLog = pino({ level: 'silent' });
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-report-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

function luoctl(...args: string[]) {
  assert.ok(fs.existsSync(CLI), `${CLI} is missing: run npm run build first`);
  const run = spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8',
    env: { ...process.env, LUOD_SOCKET: path.join(dir, 'no-luod.sock') },
  });
  assert.equal(run.stderr.includes('    at '), false, `no stack trace:\n${run.stderr}`);
  return run;
}

describe('records', () => {
  test("the builder closes phases in order; the blackout is each VM's pause to resume, as its VMM reported", () => {
    const record = completedRecord('u-built');
    assert.equal(record.outcome, 'completed');
    assert.deepEqual(
      record.phases.map((p) => [p.phase, p.end! - p.start]),
      [
        ['load', 1000],
        ['preserve', 10],
        ['barrier', 190],
        ['freeze', 10],
        ['kexec', 1000],
        ['boot', 2000],
        ['luod-ready', 200],
        ['restore', 10],
        ['claims', 185],
        ['finish', 1],
      ],
    );
    const b = record.clients.find((c) => c.id === 'vm-b')!;
    assert.deepEqual(b.preserve, { start: record.started + 10, end: record.started + 200 });
    const t0 = record.started;
    assert.deepEqual(blackoutOf(record), {
      vms: [
        { id: 'vm-a', ms: 3465, paused_at: t0 + 45, resumed_at: t0 + 3510 },
        { id: 'vm-b', ms: 3460, paused_at: t0 + 190, resumed_at: t0 + 3650 },
      ],
      maxMs: 3465,
      window: { start: t0 + 45, end: t0 + 3650 },
      unreported: [],
    });
    // luod's own view, kept apart: first READY to last CLAIM.
    assert.deepEqual(readyToClaimOf(record), { start: t0 + 50, end: t0 + 3605 });
    const silent = completedRecord('u-silent', t0, { resumed: false });
    assert.deepEqual(blackoutOf(silent), {
      vms: [],
      maxMs: null,
      window: null,
      unreported: ['vm-a', 'vm-b'],
    });
    const aborted = abortedRecord('u-aborted');
    assert.equal(blackoutOf(aborted).maxMs, 59, 'a VM resumed on ABORTED has a blackout too');
    assert.deepEqual(readyToClaimOf(aborted), { start: aborted.started + 40, end: aborted.started + 95 });
    assert.equal(aborted.clients.find((c) => c.id === 'vm-bad')!.preserve!.end, aborted.started + 90);
  });

  test('a blackout is reported once: a repeat is the same, another one a conflict, an unknown id refused', () => {
    const builder = RecordBuilder.resume(
      completedRecord('u-once', 1_800_000_000_000, { resumed: false }),
      silentLog,
    );
    assert.equal(builder.blackout('vm-a', 100, 200), 'recorded');
    assert.equal(builder.blackout('vm-a', 100, 200), 'same');
    assert.equal(builder.blackout('vm-a', 100, 300), 'conflict');
    assert.equal(builder.blackout('vm-z', 100, 200), 'unknown');
    assert.deepEqual(builder.snapshot().clients[0]!.blackout, { paused_at: 100, resumed_at: 200 });
    // A record without any blackout (older than RESUMED) is still valid.
    assert.equal(builder.snapshot().clients[1]!.blackout, undefined);
  });

  test('a luod restarted after the update closed takes RESUMED from the record on disk, and writes it again', async () => {
    const store = new RecordStore(path.join(dir, 'restarted'));
    const file = store.write(completedRecord('u-restarted', 1_800_000_000_000, { resumed: false }));
    // A new UpdateRecords: nothing of this update in memory.
    const records = new UpdateRecords({
      store,
      metrics: null,
      log: silentLog,
      kernel: { backend: 'emulated' } as unknown as LuodKernel,
    });
    const report = {
      id: 'vm-b',
      update: 'u-restarted',
      pausedAt: 1_800_000_000_190,
      resumedAt: 1_800_000_003_650,
    };
    assert.equal(await records.resumed(report, { uid: 0, admin: false }), 3460);
    assert.deepEqual(readRecordFile(file).clients[1]!.blackout, {
      paused_at: 1_800_000_000_190,
      resumed_at: 1_800_000_003_650,
    });
    assert.equal(readRecordFile(file).outcome, 'completed', 'still the closed record');
    // Another uid than the one that subscribed vm-b (uid 0 in this record) is refused.
    await assert.rejects(records.resumed({ ...report, id: 'vm-a' }, { uid: 1000, admin: false }), {
      code: 'EPERM',
    });
    await assert.rejects(records.resumed({ ...report, update: 'u-unknown' }, { uid: 0, admin: false }), {
      code: 'ENOENT',
    });
  });

  test('a luod restarted during the claims continues the record on disk, writing it only when it adds to it', async () => {
    const store = new RecordStore(path.join(dir, 'claims-restart'));
    const builder = RecordBuilder.start(
      {
        update: 'u-claims',
        backend: 'emulated',
        from: '7.2',
        to: '7.2',
        at: 1_800_000_000_000,
        load: null,
        clients: [
          { id: 'vm-a', uid: 0, sessions: ['vm-a.1'] },
          { id: 'vm-b', uid: 0, sessions: ['vm-b.1'] },
        ],
      },
      silentLog,
    );
    builder.begin('claims', 1_800_000_001_000);
    const file = store.write(builder.snapshot());
    const incoming = (claimed: string[]) => ({
      update: 'u-claims',
      timeline: [{ phase: 'claim', at: 1_800_000_001_500, client: 'vm-a' }],
      clients: [],
      claimed,
    });
    const fresh = () =>
      new UpdateRecords({
        store,
        metrics: null,
        log: silentLog,
        kernel: { backend: 'emulated' } as unknown as LuodKernel,
      });
    // No claim answered before the restart: the record on disk is already right, and stays as it is.
    const inode = fs.statSync(file).ino;
    const quiet = fresh();
    assert.ok(quiet.resumeAfterRestart(incoming([])));
    await quiet.idle();
    assert.equal(fs.statSync(file).ino, inode, 'not written again');
    assert.equal(quiet.lastPath, file, 'STATUS still names it');
    // vm-a claimed before luod died: that goes into the record, written again.
    const busy = fresh();
    assert.ok(busy.resumeAfterRestart(incoming(['vm-a'])));
    await busy.idle(); // written after luod listens (saveSoon)
    assert.notEqual(fs.statSync(file).ino, inode, 'written again');
    const lanes = readRecordFile(file).clients;
    assert.deepEqual(lanes[0]!.claim, { start: 1_800_000_001_500, end: 1_800_000_001_500 });
    assert.equal(lanes[1]!.claim, null);
  });

  test('the store keeps a bounded number, and a damaged record is named, never trusted', () => {
    const store = new RecordStore(path.join(dir, 'bounded'), 3);
    for (let i = 0; i < 5; i++) {
      const file = store.write(completedRecord(`u-${i}`));
      const t = new Date(Date.now() - (10 - i) * 1000);
      fs.utimesSync(file, t, t);
    }
    store.prune();
    assert.deepEqual(fs.readdirSync(store.dir).sort(), ['u-2.json', 'u-3.json', 'u-4.json']);
    fs.writeFileSync(path.join(store.dir, 'u-9.json'), '{"format":"luod-update-record-v1","upd');
    const latest = latestRecord(store.dir);
    assert.equal(latest.record.update, 'u-4');
    assert.equal(latest.skipped.length, 1);
    assert.match(latest.skipped[0]!.reason, /record .*u-9\.json is corrupt: not JSON/);
    const wrong = { ...completedRecord('u-8'), phases: [{ phase: 'teleport', start: 1, end: 2 }] };
    fs.writeFileSync(path.join(store.dir, 'u-8.json'), JSON.stringify(wrong));
    assert.throws(
      () => readRecordFile(path.join(store.dir, 'u-8.json')),
      /u-8\.json is corrupt: phases\.0\.phase/,
    );
    assert.throws(() => recordPath(store.dir, '../etc/passwd'), { code: 'EINVAL' });
    assert.throws(() => store.write({ ...completedRecord('u-x'), finished: null }), /finish time/);
    assert.throws(() => new RecordStore(dir, 0), { code: 'EINVAL' });
  });

  test("an older luod's carried state (v1, phase marks only) becomes a draft with the same phases", () => {
    const draft = draftFromTimeline({
      update: 'u-old',
      from: '7.2',
      to: '7.3',
      backend: 'real',
      clients: [{ id: 'vm-a', uid: 0, sessions: ['vm-a'] }],
      timeline: [
        { phase: 'update-start', at: 1000 },
        { phase: 'barrier-start', at: 1010 },
        { phase: 'ready', at: 1050, client: 'vm-a' },
        { phase: 'barrier-done', at: 1050 },
        { phase: 'kexec', at: 1060 },
      ],
    });
    assert.deepEqual(
      draft.phases.map((p) => [p.phase, p.start, p.end]),
      [
        ['preserve', 1000, 1010],
        ['barrier', 1010, 1050],
        ['freeze', 1050, 1060],
        ['kexec', 1060, null],
      ],
    );
    assert.equal(draft.clients[0]!.ready, 1050);
  });
});

describe('luoctl report', () => {
  const records = path.join(dir, 'updates');
  const store = new RecordStore(records);
  const done = store.write(completedRecord('u-20270115T100000-aaaa'));
  const aborted = store.write(abortedRecord('u-20270115T110000-bbbb'));
  fs.utimesSync(done, new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));

  test('without UPDATE: the latest, as a summary of phases, blackout and clients', () => {
    const run = luoctl('report', '--records', records);
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /^update u-20270115T110000-bbbb: ABORTED \(vm-bad failed: no space/);
    assert.match(run.stdout, /kernel 7\.2\.0-luo -> \/boot\/vmlinuz-7\.3 \(real\)/);
    assert.match(run.stdout, /barrier +85 ms +at \+5 ms +FAILED: vm-bad failed/);
    assert.match(run.stdout, /vm-bad +uid 1000 +no preservation started|vm-bad +uid 1000/);
    assert.match(run.stdout, /FAILED: vm-bad failed: no space for the device state/);
    assert.match(
      run.stdout,
      /^blackout 59 ms \(the longest of 1 VM: pause to resume, as each VMM reported\)$/m,
    );
    assert.match(run.stdout, new RegExp(`record: ${aborted.replace(/[.]/g, '\\.')}`));
  });

  test('UPDATE by id, where the blackout went, and --json carries the record', () => {
    const run = luoctl('report', 'u-20270115T100000-aaaa', '--records', records);
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /COMPLETED/);
    assert.match(
      run.stdout,
      /^blackout 3\.4\d s \(the longest of 2 VMs: pause to resume, as each VMM reported\)\n +vm-a +3\.4\d s\n +vm-b +3\.46 s\n3\.6\d s from the first VM paused to the last VM resumed, as their VMMs reported \(RESUMED\), spent in:\n +boot +2\.00 s +55%/m,
    );
    assert.match(run.stdout, /^ +vmms +44 ms +1%$/m, "the VMMs' own work after the last CLAIM");
    for (const phase of [
      'preserve',
      'barrier',
      'freeze',
      'kexec',
      'boot',
      'luod-ready',
      'restore',
      'claims',
      'finish',
    ])
      assert.match(run.stdout, new RegExp(`^  ${phase} `, 'm'), phase);
    assert.match(run.stdout, /load +1\.00 s +at 5\.00 s before the update/);
    assert.match(
      run.stdout,
      /vm-b +uid 0 +preserved in 190 ms, READY at \+200 ms, blackout 3\.46 s \(pause to resume\), claimed at \+3\.6\d s/,
    );
    const json = luoctl('--json', 'report', 'u-20270115T100000-aaaa', '--records', records);
    assert.equal(json.status, 0, json.stderr);
    const reply = JSON.parse(json.stdout);
    assert.equal(reply.ok, true);
    assert.equal(reply.path, done);
    assert.deepEqual(reply.record, readRecordFile(done));
  });

  test('clear errors: unknown update, bad id, damaged record, nothing recorded yet', () => {
    const missing = luoctl('report', 'u-nope', '--records', records);
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /^luoctl: report: ENOENT: no record of update u-nope in /);
    const bad = luoctl('--json', 'report', '../../etc/passwd', '--records', records);
    assert.equal(bad.status, 1);
    assert.equal(JSON.parse(bad.stdout).error.code, 'EINVAL');
    fs.writeFileSync(path.join(records, 'u-broken.json'), '{"format":"luod-update-record-v1"}');
    const broken = luoctl('report', 'u-broken', '--records', records);
    assert.equal(broken.status, 1);
    assert.match(broken.stderr, /EINVAL: record .*u-broken\.json is corrupt: /);
    const latest = luoctl('report', '--records', records);
    assert.equal(latest.status, 0);
    assert.match(latest.stderr, /luoctl: report: skipped: record .*u-broken\.json is corrupt/);
    assert.match(latest.stdout, /u-20270115T110000-bbbb/);
    fs.rmSync(path.join(records, 'u-broken.json'));
    const empty = luoctl('report', '--records', path.join(dir, 'nothing-here'));
    assert.equal(empty.status, 1);
    assert.match(empty.stderr, /ENOENT: no update record in .*nothing-here yet/);
    const nowhere = luoctl('report');
    if (!fs.existsSync('/var/lib/luod/updates')) {
      assert.equal(nowhere.status, 1);
      assert.match(nowhere.stderr, /ENOENT: no records directory: cannot reach luod at .*no-luod\.sock/);
    }
    const both = luoctl('report', '--records', records, '--state', dir);
    assert.equal(both.status, 1);
    assert.match(both.stderr, /EINVAL: --records and --state exclude each other/);
  });
});

/** Headless Chromium's DOM of `file` after it parsed and laid it out. */
function renderedDom(file: string): string {
  const chromium = spawnSync('sh', ['-c', 'command -v chromium'], { encoding: 'utf8' }).stdout.trim();
  assert.ok(
    chromium,
    'chromium is not installed: the HTML report is checked in headless Chromium (apt-get install -y chromium)',
  );
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-chromium-'));
  try {
    const run = spawnSync(
      chromium,
      [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        `--user-data-dir=${profile}`,
        '--dump-dom',
        `file://${file}`,
      ],
      { encoding: 'utf8', timeout: 120_000, maxBuffer: 16 << 20 },
    );
    assert.equal(run.status, 0, `chromium failed: ${run.error ?? ''}\n${run.stderr}`);
    return run.stdout;
  } finally {
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

/** The start tags in `dom` that have all of `attributes`. */
function elements(dom: string, tag: string, attributes: Record<string, string>): string[] {
  return [...dom.matchAll(new RegExp(`<${tag}\\b[^>]*>`, 'g'))]
    .map((m) => m[0])
    .filter((el) => Object.entries(attributes).every(([k, v]) => el.includes(`${k}="${v}"`)));
}

describe('the HTML report in headless Chromium', () => {
  test('luoctl report --html: one lane for luod and one per client, every phase drawn, the blackout shaded', () => {
    const html = path.join(dir, 'completed.html');
    const records = path.join(dir, 'html-records');
    new RecordStore(records).write(completedRecord('u-20270115T100000-cccc'));
    const run = luoctl('report', '--records', records, '--html', html);
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, new RegExp(`html report: ${html}`));
    const page = fs.readFileSync(html, 'utf8');
    assert.doesNotMatch(
      page,
      /<script|<link|src=|url\(|@import|https?:\/\/(?!www\.w3\.org\/2000\/svg)/,
      'self-contained',
    );
    const dom = renderedDom(html);
    assert.ok(dom.includes('<svg'), 'an SVG timeline');
    const lanes = elements(dom, 'g', { class: 'lane' }).map((g) => /data-lane="([^"]+)"/.exec(g)![1]);
    assert.deepEqual(lanes, ['luod', 'vm-a', 'vm-b']);
    const luodBars = elements(dom, 'rect', { 'data-lane': 'luod' });
    assert.deepEqual(
      luodBars.map((r) => /data-phase="([^"]+)"/.exec(r)![1]),
      ['load', 'preserve', 'barrier', 'freeze', 'kexec', 'boot', 'luod-ready', 'restore', 'claims', 'finish'],
    );
    const boot = elements(dom, 'rect', { 'data-lane': 'luod', 'data-phase': 'boot' })[0]!;
    assert.match(boot, /data-start-ms="1210"/);
    assert.match(boot, /data-duration-ms="2000"/);
    for (const client of ['vm-a', 'vm-b'])
      assert.deepEqual(
        elements(dom, 'rect', { 'data-lane': client }).map((r) => /data-phase="([^"]+)"/.exec(r)![1]),
        ['preserve', 'paused', 'claim'],
        client,
      );
    const blackout = elements(dom, 'rect', { 'data-blackout': 'true' });
    assert.equal(blackout.length, 1);
    assert.match(blackout[0]!, /data-duration-ms="3605"/, 'first pause to last resume');
    assert.equal(elements(dom, 'tr', { 'data-vm-blackout': 'vm-a', 'data-blackout-ms': '3465' }).length, 1);
    assert.equal(elements(dom, 'tr', { 'data-vm-blackout': 'vm-b', 'data-blackout-ms': '3460' }).length, 1);
    assert.match(dom, /blackout 3\.4\d s \(the longest of 2 VMs: pause to resume/);
    assert.equal(elements(dom, 'rect', { 'data-failed': 'true' }).length, 0);
    assert.ok(elements(dom, 'g', { 'data-axis': 'time' }).length === 1, 'a time axis');
    assert.match(dom, /boot 2\.00 s/, 'durations written on the bars');
  });

  test('VMMs that did not report: no blackout claimed, READY to CLAIM shown under its own name', () => {
    const html = path.join(dir, 'silent.html');
    fs.writeFileSync(
      html,
      reportHtml(completedRecord('u-20270115T100000-eeee', undefined, { resumed: false })),
    );
    const dom = renderedDom(html);
    for (const client of ['vm-a', 'vm-b'])
      assert.deepEqual(
        elements(dom, 'rect', { 'data-lane': client }).map((r) => /data-phase="([^"]+)"/.exec(r)![1]),
        ['preserve', 'held', 'claim'],
        client,
      );
    assert.equal(elements(dom, 'rect', { 'data-blackout': 'true' }).length, 0);
    const held = elements(dom, 'rect', { 'data-basis': 'ready-to-claim' });
    assert.equal(held.length, 1);
    assert.match(held[0]!, /data-duration-ms="3555"/);
    assert.match(dom, /blackout not reported by the VMMs \(no RESUMED\)/);
    assert.equal(elements(dom, 'tr', { 'data-vm-blackout': 'vm-a' }).length, 0);
  });

  test('an aborted update: the failed client and the failed barrier are marked', () => {
    const html = path.join(dir, 'aborted.html');
    fs.writeFileSync(html, reportHtml(abortedRecord('u-20270115T110000-dddd')));
    const dom = renderedDom(html);
    assert.deepEqual(
      elements(dom, 'g', { class: 'lane' }).map((g) => /data-lane="([^"]+)"/.exec(g)![1]),
      ['luod', 'vm-ok', 'vm-bad'],
    );
    assert.equal(elements(dom, 'g', { 'data-lane': 'vm-bad', 'data-failed': 'true' }).length, 1);
    const failed = elements(dom, 'rect', { 'data-failed': 'true' }).map(
      (r) => `${/data-lane="([^"]+)"/.exec(r)![1]}/${/data-phase="([^"]+)"/.exec(r)![1]}`,
    );
    assert.deepEqual(failed.sort(), ['luod/barrier', 'vm-bad/preserve']);
    assert.equal(elements(dom, 'text', { 'data-failure-mark': 'vm-bad' }).length, 1);
    assert.equal(elements(dom, 'rect', { 'data-lane': 'luod', 'data-phase': 'kexec' }).length, 0);
    assert.match(dom, /data-outcome="aborted"/);
  });
});
