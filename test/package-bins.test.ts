/**
 * `npx luoctl` runs package.json's bin file directly, so it must be executable after
 * every build, not only when npm first links it: tsc writes new files without the
 * execute bit, and a user who runs `npm test` (which builds) after `npm ci` would
 * otherwise get "luoctl: Permission denied".
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';

const ROOT = path.resolve(import.meta.dirname, '..');
const VERSION = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version as string;
const bins = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).bin as Record<
  string,
  string
>;

test('every bin in package.json is built, executable, and starts with a node shebang', () => {
  assert.deepEqual(Object.keys(bins).sort(), ['luo-qemu', 'luoctl', 'luod']);
  for (const [name, file] of Object.entries(bins)) {
    const full = path.join(ROOT, file);
    assert.ok(fs.existsSync(full), `${name}: ${file} is not built`);
    assert.equal(fs.statSync(full).mode & 0o111, 0o111, `${name}: ${file} is not executable`);
    assert.match(fs.readFileSync(full, 'utf8').split('\n')[0]!, /^#!\/usr\/bin\/env node$/, name);
  }
});

test('luoctl runs as a program by its path (as npx runs it)', () => {
  const run = spawnSync(path.join(ROOT, bins.luoctl!), ['--version'], { encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  assert.match(run.stdout.trim(), /^\d+\.\d+\.\d+/);
});

test('luo-qemu runs as a program by its path, and says what it needs', () => {
  const run = spawnSync(path.join(ROOT, bins['luo-qemu']!), ['--id', 'vm-1', '--ram', '64M'], {
    encoding: 'utf8',
  });
  assert.equal(run.status, 1, run.stderr);
  assert.match(run.stderr, /^luo-qemu: EINVAL: no QEMU command: put it after --$/m);
});

test("luo-qemu --json: its own errors, commander's too, are one JSON line each on stderr", () => {
  for (const [args, message] of [
    [['--json', '--id', 'vm-1', '--ram', '64M'], /^no QEMU command: put it after --$/],
    [['--json', '--id', 'vm-1'], /required option '--ram <size>' not specified/],
    [['--json', '--id', '', '--ram', '64M', '--', 'true'], /^--id must not be empty$/],
  ] as const) {
    const run = spawnSync(path.join(ROOT, bins['luo-qemu']!), args, { encoding: 'utf8' });
    assert.notEqual(run.status, 0, run.stderr);
    assert.equal(run.stdout, '', "stdout is QEMU's");
    const lines = run.stderr.trim().split('\n');
    assert.equal(lines.length, 1, run.stderr);
    const { ok, error } = JSON.parse(lines[0]!);
    assert.equal(ok, false);
    assert.equal(error.code, 'EINVAL');
    assert.match(error.message, message);
  }
});

test('the luod, luoctl, holder and luo-qemu bins run their bundles, with the code cache V8 accepts', () => {
  for (const [bin, args] of [
    [bins.luoctl!, ['--version']],
    [bins.luod!, ['--version']],
  ] as const) {
    const run = spawnSync(path.join(ROOT, bin), args, {
      encoding: 'utf8',
      env: { ...process.env, LUOKIT_BUNDLE_DEBUG: '1' },
    });
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stderr, /^luokit: bundle \w+, code cache accepted$/m, bin);
    // Written into the bundle at build time (src/sys/package-version.ts): the package's own.
    assert.equal(run.stdout.trim(), VERSION, bin);
  }
  assert.ok(fs.existsSync(path.join(ROOT, 'dist/bundle/holder.cjs')), 'the holder has its bundle');
  // luo-qemu too: after a live update its start is on the VM's blackout.
  const qemu = spawnSync(path.join(ROOT, bins['luo-qemu']!), ['--help'], {
    encoding: 'utf8',
    env: { ...process.env, LUOKIT_BUNDLE_DEBUG: '1' },
  });
  assert.equal(qemu.status, 0, qemu.stderr);
  assert.match(qemu.stderr, /^luokit: bundle luo-qemu, code cache accepted$/m);
  assert.match(qemu.stdout, /--id <id>/);
  // Without the bundles (a plain tsc build), the same bins import the modules.
  const plain = spawnSync(path.join(ROOT, bins.luoctl!), ['--version'], {
    encoding: 'utf8',
    env: { ...process.env, LUOKIT_NO_BUNDLE: '1', LUOKIT_BUNDLE_DEBUG: '1' },
  });
  assert.equal(plain.status, 0, plain.stderr);
  assert.equal(plain.stderr, '');
  assert.equal(plain.stdout.trim(), VERSION, 'read from package.json without a bundle');
});

test("a bundle dlopens koffi's addon from dist/bundle, without resolving koffi in node_modules", () => {
  // A preload records every module request naming koffi and, at exit, the shared objects
  // loaded (process.report): the bundle must take the addon copied next to it at build time.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-koffi-'));
  try {
    const preload = path.join(dir, 'watch.cjs');
    const out = path.join(dir, 'out.json');
    fs.writeFileSync(
      preload,
      `const Module = require('node:module');
const fs = require('node:fs');
const requested = [];
const resolve = Module._resolveFilename;
Module._resolveFilename = function (request, ...rest) {
  if (/koffi|koromix/.test(request)) requested.push(request);
  return resolve.call(this, request, ...rest);
};
process.on('exit', () => {
  const shared = process.report.getReport().sharedObjects.filter((f) => f.includes('koffi'));
  fs.writeFileSync(${JSON.stringify(out)}, JSON.stringify({ requested, shared }));
});
`,
    );
    // doctor probes the host through src/sys: koffi is loaded whatever it finds.
    const run = spawnSync(path.join(ROOT, bins.luoctl!), ['doctor', '--json'], {
      encoding: 'utf8',
      env: { ...process.env, NODE_OPTIONS: `--require ${preload}`, LUOKIT_BUNDLE_DEBUG: '1' },
    });
    assert.match(run.stderr, /^luokit: bundle luoctl, code cache accepted$/m, run.stderr);
    const { requested, shared } = JSON.parse(fs.readFileSync(out, 'utf8'));
    assert.deepEqual(requested, [], 'no module request names koffi');
    assert.deepEqual(shared, [fs.realpathSync(path.join(ROOT, 'dist/bundle/koffi.node'))]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('luoctl loads the modules of the command asked for: help still lists every command', () => {
  const help = spawnSync(path.join(ROOT, bins.luoctl!), ['--help'], { encoding: 'utf8' });
  assert.equal(help.status, 0, help.stderr);
  for (const command of ['doctor', 'emu', 'status', 'update', 'demo', 'inspect', 'report'])
    assert.match(help.stdout, new RegExp(`^  ${command}\\b`, 'm'), command);
  const typo = spawnSync(path.join(ROOT, bins.luoctl!), ['statuss'], { encoding: 'utf8' });
  assert.equal(typo.status, 2);
  assert.match(typo.stderr, /unknown command 'statuss'/);
  const socketFirst = spawnSync(
    path.join(ROOT, bins.luoctl!),
    ['--socket', path.join(ROOT, 'no-such.sock'), '--json', 'status'],
    { encoding: 'utf8' },
  );
  assert.equal(socketFirst.status, 1);
  assert.equal(JSON.parse(socketFirst.stdout).error.code, 'ENOENT');
});
