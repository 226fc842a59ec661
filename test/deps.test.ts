/**
 * scripts/deps.sh, the one list of Debian packages the suites need (#13
 * item 13): `npm test` runs it first, and a user who is not root is stopped
 * with the one apt-get line to run, not with failures further on.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';

const ROOT = path.resolve(import.meta.dirname, '..');
const SCRIPT = path.join(ROOT, 'scripts/deps.sh');

test('a user who is not root, missing packages, gets the one apt-get line and exit 1', () => {
  // A PATH with nothing on it but an `id` that says uid 1000: every command probe fails.
  const bin = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-deps-'));
  try {
    fs.writeFileSync(path.join(bin, 'id'), '#!/bin/sh\necho 1000\n', { mode: 0o755 });
    const run = spawnSync('/bin/sh', [SCRIPT, 'test'], { encoding: 'utf8', env: { PATH: bin } });
    assert.equal(run.status, 1, run.stderr);
    const lines = run.stderr.split('\n').filter((l) => /apt-get install/.test(l));
    assert.equal(lines.length, 1, run.stderr);
    const line = lines[0]!.trim();
    assert.match(line, /^apt-get install -y /, 'no sudo on this PATH: the line is for root');
    const named = line.replace(/^apt-get install -y /, '').split(' ');
    for (const pkg of ['device-tree-compiler', 'gcc', 'make', 'xz-utils', 'chromium', 'etcd-server'])
      assert.ok(named.includes(pkg), `${pkg} missing from: ${line}`);
  } finally {
    fs.rmSync(bin, { recursive: true, force: true });
  }
});

test('the vm tier lists the main suite and its own packages', () => {
  const list = (tier: string) =>
    spawnSync('/bin/sh', [SCRIPT, '--list', tier], { encoding: 'utf8' }).stdout.trim().split(' ');
  const main = list('test');
  const vm = list('vm');
  assert.ok(main.includes('chromium') && main.includes('device-tree-compiler'), main.join(' '));
  for (const pkg of main) assert.ok(vm.includes(pkg), `vm lacks ${pkg}`);
  assert.ok(vm.includes('qemu-system-x86') && vm.includes('kexec-tools'), vm.join(' '));
});

test('npm test, npm run test:vm and .ci/run take the packages from scripts/deps.sh alone', () => {
  const scripts = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).scripts;
  assert.match(scripts.test, /^sh scripts\/deps\.sh test && /);
  assert.match(scripts['test:vm'], /^sh scripts\/deps\.sh vm && /);
  const ci = fs.readFileSync(path.join(ROOT, '.ci/run'), 'utf8');
  assert.match(ci, /^sh scripts\/deps\.sh vm$/m);
  assert.doesNotMatch(ci, /apt-get/, '.ci/run keeps no package list of its own');
});
