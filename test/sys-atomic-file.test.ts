import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { writeFileAtomic } from '../src/sys/atomic-file.js';

function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-atomic-'));
}

test('writeFileAtomic writes, then replaces, with the requested mode and no temporary left', () => {
  const dir = tempDir();
  const target = path.join(dir, 'state.json');
  writeFileAtomic(target, 'first', { mode: 0o600 });
  assert.equal(fs.readFileSync(target, 'utf8'), 'first');
  assert.equal(fs.statSync(target).mode & 0o777, 0o600);
  writeFileAtomic(target, Buffer.from('second'));
  assert.equal(fs.readFileSync(target, 'utf8'), 'second');
  assert.deepEqual(fs.readdirSync(dir), ['state.json']);
  fs.rmSync(dir, { recursive: true });
});

test('a failed writeFileAtomic leaves the old content and no temporary file', () => {
  const dir = tempDir();
  const target = path.join(dir, 'occupied');
  fs.mkdirSync(target);
  fs.writeFileSync(path.join(target, 'keep'), 'old');
  assert.throws(
    () => writeFileAtomic(target, 'new'),
    (err: NodeJS.ErrnoException) => err.code === 'EISDIR',
  );
  assert.deepEqual(fs.readdirSync(dir), ['occupied']);
  assert.equal(fs.readFileSync(path.join(target, 'keep'), 'utf8'), 'old');
  assert.throws(
    () => writeFileAtomic(path.join(dir, 'missing', 'x'), 'new'),
    (err: NodeJS.ErrnoException) => err.code === 'ENOENT',
  );
  fs.rmSync(dir, { recursive: true });
});

test('writeFileAtomic without durability (no fsync) still replaces the file whole', () => {
  const dir = tempDir();
  const target = path.join(dir, 'luod.sock.state.json');
  writeFileAtomic(target, 'old', { mode: 0o600 });
  writeFileAtomic(target, 'x'.repeat(1 << 16), { mode: 0o600, durable: false });
  assert.equal(fs.readFileSync(target, 'utf8'), 'x'.repeat(1 << 16));
  assert.equal(fs.statSync(target).mode & 0o777, 0o600);
  assert.deepEqual(fs.readdirSync(dir), ['luod.sock.state.json']);
  fs.rmSync(dir, { recursive: true });
});
