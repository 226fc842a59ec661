import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  dup,
  fstat,
  isCloseOnExec,
  isOpen,
  memfdCreate,
  OwnedFd,
  rawFd,
  SysError,
} from '../src/sys/index.js';

test('OwnedFd closes its fd exactly once', () => {
  const fd = memfdCreate('once');
  const n = fd.fd;
  assert.ok(isOpen(n));
  fd.close();
  assert.equal(isOpen(n), false);
  assert.equal(fd.closed, true);
  fd.close(); // a second close does nothing, and in particular does not close a reused number
  const reuse = memfdCreate('reuse');
  assert.equal(reuse.fd, n, 'the kernel reuses the lowest free number');
  fd.close();
  assert.ok(isOpen(n), 'closing the stale owner again must not close the new fd');
  reuse.close();
});

test('OwnedFd refuses to hand out a closed number', () => {
  const fd = memfdCreate('closed');
  fd.close();
  assert.throws(
    () => fd.fd,
    (err: SysError) => err instanceof SysError && err.code === 'EBADF',
  );
  assert.throws(() => rawFd(fd), { code: 'EBADF' });
});

test('OwnedFd runs close hooks before closing, once', () => {
  const fd = memfdCreate('hooks');
  const n = fd.fd;
  const seen: boolean[] = [];
  fd.onClose(() => seen.push(isOpen(n)));
  fd.close();
  fd.close();
  assert.deepEqual(seen, [true]);
});

test('OwnedFd.release gives up ownership without closing', () => {
  const fd = memfdCreate('release');
  const n = fd.release();
  assert.ok(isOpen(n));
  fd.close();
  assert.ok(isOpen(n), 'a released fd is not closed by its former owner');
  new OwnedFd(n).close();
  assert.equal(isOpen(n), false);
});

test('using disposes an OwnedFd at the end of the block', () => {
  let n = -1;
  {
    using fd = memfdCreate('using');
    n = fd.fd;
    assert.ok(isOpen(n));
  }
  assert.equal(isOpen(n), false);
});

test('rawFd and OwnedFd reject numbers that cannot be fds', () => {
  for (const bad of [-1, 1.5, Number.NaN, 2 ** 31]) {
    assert.throws(() => rawFd(bad), { code: 'EBADF' }, String(bad));
  }
  assert.throws(() => new OwnedFd(-3), { code: 'EBADF' });
});

test('dup gives an independent close-on-exec reference to the same file', () => {
  using a = memfdCreate('dup');
  using b = dup(a);
  assert.notEqual(a.fd, b.fd);
  assert.equal(fstat(a).ino, fstat(b).ino);
  assert.ok(isCloseOnExec(b));
  b.close();
  assert.ok(isOpen(a.fd));
});
