/**
 * luoctl's daemon commands as an operator runs them (the package's bins, so
 * the bundles of scripts/bundle.mjs; LUOD_SOCKET),
 * against luod on the emulated kernel: clean errors for bad kernel images and
 * versions, --json everywhere, and exit codes scripts can rely on.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { LuoClient } from '../src/client/index.js';
import { cliHost } from './support/cli-host.js';

const host = cliHost('luokit-cli-luod-');
const { luoctl, dir, socket } = host;

test('status --json reaches luod through LUOD_SOCKET', () => {
  const run = luoctl('status', '--json');
  assert.equal(run.status, 0, run.stderr);
  const status = JSON.parse(run.stdout);
  assert.equal(status.ok, true);
  assert.equal(status.phase, 'idle');
  assert.equal(status.backend, 'emulated');
});

test('load refuses what is not a kernel image, and a missing one, naming the file', () => {
  const missing = luoctl('load', path.join(dir, 'no-such-bzImage'));
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /luoctl: load: ENOENT: cannot read kernel image .*no-such-bzImage/);
  const text = path.join(dir, 'not-a-kernel');
  fs.writeFileSync(text, 'hello, I am a text file\n'.repeat(100));
  const notKernel = luoctl('load', text, '--json');
  assert.equal(notKernel.status, 1);
  const reply = JSON.parse(notKernel.stdout);
  assert.equal(reply.error.code, 'ENOEXEC');
  assert.match(reply.error.message, /not a kernel image/);
});

test('load accepts a bzImage header, adds liveupdate=on, and records the emulated version', () => {
  const image = path.join(dir, 'bzImage');
  const bytes = Buffer.alloc(0x400);
  bytes.write('HdrS', 0x202, 'latin1');
  fs.writeFileSync(image, bytes);
  const run = luoctl('load', image, '--emu-version', '7.3', '--cmdline', 'console=ttyS0', '--json');
  assert.equal(run.status, 0, run.stdout + run.stderr);
  const { loaded } = JSON.parse(run.stdout);
  assert.equal(loaded.version, '7.3');
  assert.equal(loaded.cmdline, 'console=ttyS0 liveupdate=on');
  const bad = luoctl('load', '--emu-version', '9.9');
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /EINVAL: unknown emulated kernel "9\.9"/);
  const both = luoctl('load', '--cmdline', 'x', '--reuse-cmdline');
  assert.equal(both.status, 1);
  assert.match(both.stderr, /EINVAL: --cmdline and --reuse-cmdline exclude each other/);
});

test('update --dry-run changes nothing; abort with no update is EBUSY; bad durations are EINVAL', () => {
  const dry = luoctl('update', '--dry-run', '--json');
  assert.equal(dry.status, 0, dry.stderr);
  assert.equal(JSON.parse(dry.stdout).outcome, 'dry-run');
  assert.equal(JSON.parse(luoctl('status', '--json').stdout).phase, 'idle');
  const abort = luoctl('abort');
  assert.equal(abort.status, 1);
  assert.match(abort.stderr, /luoctl: abort: EBUSY: no update is in progress/);
  const duration = luoctl('update', '--timeout', 'soon');
  assert.equal(duration.status, 1);
  assert.match(duration.stderr, /EINVAL: not a duration: soon/);
});

/** luoctl without blocking this process: a client here must answer luod meanwhile. */
function luoctlAsync(...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['dist/cli/luoctl-bin.cjs', ...args], {
      env: { ...process.env, LUOD_SOCKET: socket },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

test('update exits 1 when the update is aborted: a script must not take it for success', async () => {
  const vm = await LuoClient.connect(socket);
  try {
    vm.onPreserve(() => {
      throw new Error('this VM cannot be preserved');
    });
    await vm.subscribe('vm-refuses');
    const run = await luoctlAsync('update', '--timeout', '20s', '--json');
    assert.equal(run.status, 1, `${run.stdout}\n${run.stderr}`);
    const result = JSON.parse(run.stdout.trim().split('\n').at(-1)!);
    assert.equal(result.outcome, 'aborted');
    assert.match(result.reason, /vm-refuses failed: this VM cannot be preserved/);
    const text = await luoctlAsync('update', '--timeout', '20s');
    assert.equal(text.status, 1, text.stderr);
    assert.match(text.stdout, /: aborted \(vm-refuses failed/);
  } finally {
    vm.close();
  }
  assert.equal(JSON.parse(luoctl('status', '--json').stdout).phase, 'idle');
});

test('without luod, commands say where they looked', () => {
  const run = spawnSync(process.execPath, ['dist/cli/luoctl-bin.cjs', 'status'], {
    encoding: 'utf8',
    env: { ...process.env, LUOD_SOCKET: path.join(dir, 'nobody-here.sock') },
  });
  assert.equal(run.status, 1);
  assert.match(run.stderr, /luoctl: status: ENOENT: cannot reach luod at .*nobody-here\.sock/);
});
