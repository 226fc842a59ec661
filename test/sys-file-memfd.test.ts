import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import {
  addSeals,
  F_SEAL_EXEC,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  fallocate,
  fdTarget,
  fstat,
  ftruncate,
  getSeals,
  isCloseOnExec,
  lseek,
  MFD_ALLOW_SEALING,
  MFD_HUGETLB,
  memfdCreate,
  O_CREAT,
  O_RDWR,
  open,
  pread,
  pwrite,
  pwriteAll,
  read,
  SEEK_CUR,
  SEEK_END,
  SysError,
  sealNames,
  write,
} from '../src/sys/index.js';

test('memfd_create gives a close-on-exec memfd with no links', () => {
  using fd = memfdCreate('guest-ram');
  assert.ok(isCloseOnExec(fd));
  const st = fstat(fd);
  assert.equal(st.nlink, 0);
  assert.equal(st.size, 0);
  assert.equal(fdTarget(fd), '/memfd:guest-ram (deleted)');
});

test('memfd_create validates the name before the kernel sees it', () => {
  assert.throws(() => memfdCreate('x'.repeat(250)), { code: 'EINVAL' });
  assert.throws(() => memfdCreate('a\0b'), { code: 'EINVAL' });
  assert.doesNotThrow(() => memfdCreate('x'.repeat(249)).close());
});

test('MFD_HUGETLB either gives a hugetlb memfd or fails with an errno name', () => {
  try {
    memfdCreate('huge', MFD_HUGETLB).close();
  } catch (err) {
    assert.ok(err instanceof SysError);
    assert.match(err.code, /^E[A-Z0-9]+$/);
  }
});

test('read, write, pread, pwrite and lseek move the bytes and the position', () => {
  using fd = memfdCreate('rw');
  assert.equal(write(fd, Buffer.from('hello world')), 11);
  assert.equal(lseek(fd, 0, SEEK_CUR), 11);
  assert.equal(pwrite(fd, Buffer.from('W'), 6), 1);
  assert.equal(lseek(fd, 0, SEEK_CUR), 11, 'pwrite leaves the position alone');
  assert.equal(pread(fd, 5, 6).toString(), 'World');
  lseek(fd, 0);
  assert.equal(read(fd, 5).toString(), 'hello');
  assert.equal(lseek(fd, 0, SEEK_END), 11);
  assert.equal(read(fd, 10).length, 0, 'read at end of file returns no bytes');
});

test('ftruncate and fallocate size a memfd; holes read as zeros', () => {
  using fd = memfdCreate('size');
  ftruncate(fd, 1 << 20);
  assert.equal(fstat(fd).size, 1 << 20);
  assert.ok(pread(fd, 4096, 8192).every((b) => b === 0));
  fallocate(fd, 0, 2 << 20);
  assert.equal(fstat(fd).size, 2 << 20);
  assert.throws(() => ftruncate(fd, -1), { code: 'EINVAL' });
});

test('seals are added, read back and enforced', () => {
  using fd = memfdCreate('sealed', MFD_ALLOW_SEALING);
  pwriteAll(fd, Buffer.alloc(4096, 7), 0);
  assert.equal(getSeals(fd), 0);
  addSeals(fd, F_SEAL_SHRINK | F_SEAL_GROW);
  assert.equal(getSeals(fd), F_SEAL_SHRINK | F_SEAL_GROW);
  assert.throws(() => ftruncate(fd, 100), { code: 'EPERM', syscall: 'ftruncate' });
  assert.throws(() => ftruncate(fd, 8192), { code: 'EPERM' });
  addSeals(fd, F_SEAL_WRITE);
  assert.throws(() => pwrite(fd, Buffer.from('x'), 0), { code: 'EPERM', syscall: 'pwrite' });
  addSeals(fd, F_SEAL_SEAL);
  assert.throws(() => addSeals(fd, F_SEAL_EXEC), { code: 'EPERM', syscall: 'fcntl' });
  assert.deepEqual(sealNames(getSeals(fd)), ['SEAL', 'SHRINK', 'GROW', 'WRITE']);
  assert.deepEqual(sealNames(0x40 | F_SEAL_EXEC), ['EXEC', '0x40']);
});

test('a memfd created without MFD_ALLOW_SEALING is already sealed against sealing', () => {
  using fd = memfdCreate('nosealing', 0);
  assert.equal(getSeals(fd), F_SEAL_SEAL);
  assert.throws(() => addSeals(fd, F_SEAL_WRITE), { code: 'EPERM' });
});

test('errors carry the errno name and the operation, never a raw Node error', () => {
  assert.throws(
    () => open('/nonexistent/luokit'),
    (err: unknown) =>
      err instanceof SysError && err.code === 'ENOENT' && err.errno === 2 && err.message.includes('ENOENT'),
  );
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-'));
  using fd = open(path.join(dir, 'f'), O_RDWR | O_CREAT);
  assert.ok(isCloseOnExec(fd));
  assert.throws(() => read(fd, -1), { code: 'EINVAL' });
  assert.throws(() => pread(999_999, 1, 0), { code: 'EBADF', syscall: 'pread' });
  fs.rmSync(dir, { recursive: true });
});
