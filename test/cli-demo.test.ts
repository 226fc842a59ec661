/**
 * The README's main job, as a user runs it: the compiled `luoctl demo` on the
 * emulated kernel, with `--json` giving one verdict object on the last line.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { processesUsing } from './support/reaper.js';
import { waitUntil } from './support/wait.js';

const CLI = 'dist/cli/luoctl.js';

test('luoctl demo --json: every VMM claims and verifies its memory after the live update', () => {
  assert.ok(fs.existsSync(CLI), `${CLI} is missing: run npm run build first`);
  const run = spawnSync(process.execPath, [CLI, 'demo', '--vms', '3', '--mem', '16M', '--json'], {
    encoding: 'utf8',
    timeout: 240_000,
  });
  assert.equal(run.status, 0, `demo failed:\n${run.stdout}\n${run.stderr}`);
  const last = run.stdout.trim().split('\n').at(-1)!;
  const report = JSON.parse(last);
  assert.equal(report.verified, true);
  assert.equal(report.outcome, 'rebooted');
  assert.equal(report.vmms.length, 3);
  for (const vmm of report.vmms) {
    assert.equal(vmm.verified, true, vmm.id);
    assert.equal(vmm.bytes, 16 << 20);
  }
  const phases = report.timeline.map((m: { phase: string }) => m.phase);
  for (const phase of ['update-start', 'barrier-done', 'kexec', 'luod-ready', 'all-claimed']) {
    assert.ok(phases.includes(phase), `timeline has ${phase}: ${phases.join(', ')}`);
  }
  assert.equal(run.stderr.includes('    at '), false, 'no stack trace');
  // The demo leaves the update's record and its HTML report, and says where.
  try {
    const record = JSON.parse(fs.readFileSync(report.record, 'utf8'));
    assert.equal(record.update, report.update);
    assert.equal(record.outcome, 'completed');
    assert.deepEqual(record.clients.map((c: { id: string }) => c.id).sort(), ['vm-1', 'vm-2', 'vm-3']);
    // One blackout: each VM's in the demo's JSON is the record's (pause to resume, RESUMED),
    // and verification is reported beside it, not in it.
    type Lane = {
      id: string;
      ready: number;
      claim: { end: number };
      blackout?: { paused_at: number; resumed_at: number };
    };
    const figures: number[] = [];
    for (const vmm of report.vmms) {
      const lane = (record.clients as Lane[]).find((c) => c.id === vmm.id)!;
      assert.ok(lane.blackout, `the record has ${vmm.id}'s blackout`);
      const ms = lane.blackout.resumed_at - lane.blackout.paused_at;
      assert.equal(vmm.blackout_ms, ms, `${vmm.id}: the demo's blackout is the record's`);
      // Paused before READY, resumed after its CLAIM was answered.
      assert.ok(lane.blackout.paused_at <= lane.ready, `${vmm.id} paused before READY`);
      assert.ok(lane.blackout.resumed_at >= lane.claim.end, `${vmm.id} resumed after its CLAIM`);
      assert.equal(typeof vmm.verify_ms, 'number', `${vmm.id}: verification is reported on its own`);
      figures.push(ms);
    }
    assert.equal(report.blackout_ms, Math.max(...figures), "the update's blackout is its longest VM's");
    assert.match(report.blackout, /^pause to resume/);
    const html = fs.readFileSync(report.html, 'utf8');
    for (const vmm of report.vmms)
      assert.match(html, new RegExp(`data-vm-blackout="${vmm.id}" data-blackout-ms="${vmm.blackout_ms}"`));
    assert.match(html, /<svg /);
    assert.match(html, new RegExp(`data-update="${report.update}"`));
  } finally {
    fs.rmSync(path.dirname(report.html), { recursive: true, force: true });
  }
});

test('luoctl demo says where its record and HTML report are', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-demo-out-'));
  try {
    const run = spawnSync(process.execPath, [CLI, 'demo', '--vms', '1', '--mem', '4M', '--report-dir', dir], {
      encoding: 'utf8',
      timeout: 240_000,
    });
    assert.equal(run.status, 0, `demo failed:\n${run.stdout}\n${run.stderr}`);
    const record = /^record: (\S+) \(completed\)$/m.exec(run.stdout)?.[1];
    const html = /^html report: (\S+)$/m.exec(run.stdout)?.[1];
    assert.ok(record && html, run.stdout);
    // The lines say what blackout means and give vm-1's, the record's figure.
    const lane = JSON.parse(fs.readFileSync(record, 'utf8')).clients[0];
    const ms = lane.blackout.resumed_at - lane.blackout.paused_at;
    assert.match(run.stdout, /blackout: pause to resume/);
    assert.match(run.stdout, new RegExp(`vm-1 +verified .* blackout ${ms} ms +then verified in \\d+ ms`));
    assert.equal(path.dirname(path.dirname(record)), dir);
    assert.equal(path.dirname(html), dir);
    assert.ok(fs.existsSync(record) && fs.existsSync(html));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('luoctl demo rejects bad sizes with a clear error', () => {
  const run = spawnSync(process.execPath, [CLI, 'demo', '--mem', 'lots'], { encoding: 'utf8' });
  assert.equal(run.status, 1);
  assert.match(run.stderr, /luoctl: demo: EINVAL: not a size: "lots"/);
});

test('an interrupted luoctl demo (SIGTERM, Ctrl-C) stops its luod, VMMs and emulated kernel and removes its directory', async () => {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    // Not in --json mode: the progress lines on stderr name the demo's directory.
    const child = spawn(process.execPath, [CLI, 'demo', '--vms', '2', '--mem', '4M'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    await waitUntil(() => stderr.includes('every VMM subscribed'), 'the demo reaches its update', 120_000);
    const dir = /in (\/\S+)\n/.exec(stderr)?.[1];
    assert.ok(dir, stderr);
    assert.ok(processesNaming(dir).length > 0, 'the demo runs luod and the emulated kernel in its directory');
    child.kill(signal);
    assert.equal(await exited, signal === 'SIGINT' ? 130 : 143, stderr);
    await waitUntil(
      () => processesNaming(dir).length === 0,
      `no process of the demo is left (${signal})`,
      30_000,
    ).catch(() => assert.fail(`left running after ${signal}: ${processesNaming(dir).join('; ')}`));
    assert.equal(fs.existsSync(dir), false, 'the demo directory is removed');
  }
});

/** The demo's processes still alive: their pids and command lines. */
function processesNaming(dir: string): string[] {
  return processesUsing([dir]).map(({ pid, cmdline }) => `${pid}: ${cmdline.slice(0, 120)}`);
}
