/**
 * The README's main job, as a user runs it: the compiled `luoctl demo` on the
 * emulated kernel, with `--json` giving one verdict object on the last line.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { test } from 'node:test';

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
});

test('luoctl demo rejects bad sizes with a clear error', () => {
  const run = spawnSync(process.execPath, [CLI, 'demo', '--mem', 'lots'], { encoding: 'utf8' });
  assert.equal(run.status, 1);
  assert.match(run.stderr, /luoctl: demo: EINVAL: not a size: "lots"/);
});
