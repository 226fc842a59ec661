import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Errno, errnoNumber, errnoText } from '../src/sys/errno.js';
import { SysError } from '../src/sys/error.js';
import { LuoError, luoError } from '../src/uapi/errors.js';

test('a LuoError carries code, errno, operation, reason, syscall and a formatted message', () => {
  const err = luoError('PRESERVE_FD', Errno.EBUSY);
  assert.ok(err instanceof LuoError);
  assert.ok(err instanceof SysError);
  assert.ok(err instanceof Error);
  assert.equal(err.name, 'LuoError');
  assert.equal(err.code, 'EBUSY');
  assert.equal(err.errno, 16);
  assert.equal(err.operation, 'PRESERVE_FD');
  assert.equal(err.syscall, 'ioctl');
  assert.match(err.reason, /^this file is already preserved in a session/);
  assert.equal(err.message, `PRESERVE_FD: EBUSY: ${err.reason}`);
});

test('detail is appended to the explanation', () => {
  const err = luoError('PRESERVE_FD', Errno.EEXIST, 'token 0x10 in session "vm-1"');
  assert.equal(
    err.message,
    'PRESERVE_FD: EEXIST: this token is already used in this session; token 0x10 in session "vm-1"',
  );
  assert.equal(err.reason, 'this token is already used in this session; token 0x10 in session "vm-1"');
});

test('opening /dev/liveupdate is an open(2), with its own explanations', () => {
  const busy = luoError('OPEN', Errno.EBUSY);
  assert.equal(busy.syscall, 'open');
  assert.equal(
    busy.message,
    'OPEN: EBUSY: another process holds /dev/liveupdate open (only one agent may open it at a time)',
  );
  assert.match(
    luoError('OPEN', Errno.ENOENT).reason,
    /^no \/dev\/liveupdate: .*CONFIG_LIVEUPDATE.*liveupdate=on/,
  );
  assert.match(luoError('OPEN', Errno.EIO).reason, /^the incoming live update data could not be restored/);
});

test('the same errno means different things in different operations', () => {
  assert.equal(luoError('CREATE_SESSION', Errno.EEXIST).reason, 'a session with this name already exists');
  assert.equal(luoError('PRESERVE_FD', Errno.EEXIST).reason, 'this token is already used in this session');
  assert.match(luoError('RETRIEVE_SESSION', Errno.ENOENT).reason, /^no incoming session has this name/);
  assert.match(luoError('RETRIEVE_FD', Errno.ENOENT).reason, /^no file was preserved under this token/);
  assert.match(
    luoError('PRESERVE_FD', Errno.ENOENT).reason,
    /^no live update handler can preserve this kind/,
  );
  assert.match(luoError('RETRIEVE_SESSION', Errno.EINVAL).reason, /^this session was already retrieved/);
  assert.match(
    luoError('PRESERVE_FD', Errno.EINVAL).reason,
    /only on sessions created in this kernel \(outgoing\)/,
  );
  assert.match(luoError('RETRIEVE_FD', Errno.EINVAL).reason, /\(incoming\)/);
  assert.match(luoError('FINISH', Errno.EBUSY).reason, /^a file in this session cannot finish yet/);
  assert.match(luoError('GET_NAME', Errno.EINVAL).reason, /predates GET_NAME/);
});

test('every errno the 7.2 source returns from an ioctl has a LUO sentence, not libc text', () => {
  const fromSource: Record<string, string[]> = {
    CREATE_SESSION: ['EINVAL', 'EEXIST', 'ENOSPC', 'ENOMEM', 'EMFILE', 'ENFILE', 'EFAULT', 'E2BIG', 'ENOTTY'],
    RETRIEVE_SESSION: ['ENOENT', 'EINVAL', 'EMFILE', 'ENFILE', 'ENOMEM', 'EFAULT', 'E2BIG', 'ENOTTY'],
    PRESERVE_FD: [
      'EEXIST',
      'EBADF',
      'ENOENT',
      'EBUSY',
      'ENOSPC',
      'ENOMEM',
      'EOPNOTSUPP',
      'EFBIG',
      'EINVAL',
      'EFAULT',
      'E2BIG',
      'ENOTTY',
    ],
    RETRIEVE_FD: ['ENOENT', 'EINVAL', 'EIO', 'EOPNOTSUPP', 'ENOMEM', 'EMFILE', 'EFAULT', 'E2BIG', 'ENOTTY'],
    FINISH: ['EINVAL', 'EBUSY', 'EFAULT', 'E2BIG', 'ENOTTY'],
    GET_NAME: ['EINVAL', 'EFAULT', 'E2BIG', 'ENOTTY'],
    OPEN: ['ENOENT', 'ENODEV', 'EBUSY', 'EIO', 'EACCES'],
  };
  for (const [operation, names] of Object.entries(fromSource)) {
    for (const name of names) {
      const errno = errnoNumber(name);
      assert.ok(errno !== undefined, name);
      const libc = errnoText(errno);
      const reason = luoError(operation, errno).reason;
      assert.notEqual(
        reason.toLowerCase(),
        libc.toLowerCase(),
        `${operation} ${name} has no LUO explanation`,
      );
    }
  }
});

test('errnos shared by all ioctls fall back to the common dispatch explanation', () => {
  assert.match(luoError('CREATE_SESSION', Errno.ENOTTY).reason, /does not take this ioctl number/);
  assert.match(luoError('FINISH', Errno.E2BIG).reason, /non-zero bytes beyond/);
  assert.equal(luoError('GET_NAME', Errno.EFAULT).reason, luoError('FINISH', Errno.EFAULT).reason);
});

test('errnos LUO does not document keep the C library text', () => {
  assert.equal(luoError('PRESERVE_FD', Errno.EPERM).message, 'PRESERVE_FD: EPERM: operation not permitted');
  assert.equal(luoError('OPEN', Errno.ENOTTY).reason, 'inappropriate ioctl for device');
  const unknown = luoError('FINISH', 9999);
  assert.equal(unknown.code, 'E9999');
  assert.equal(unknown.errno, 9999);
  assert.equal(unknown.message, 'FINISH: E9999: unknown error 9999');
});

test('a caller-named operation gets no ioctl explanations and is its own syscall', () => {
  const err = luoError('kexec_file_load', Errno.EINVAL);
  assert.equal(err.syscall, 'kexec_file_load');
  assert.equal(err.message, 'kexec_file_load: EINVAL: invalid argument');
});

test('the constructor takes an explicit reason and syscall', () => {
  const err = new LuoError('PRESERVE_FD', Errno.EINVAL, 'token must be an unsigned 64-bit integer', 'check');
  assert.equal(err.message, 'PRESERVE_FD: EINVAL: token must be an unsigned 64-bit integer');
  assert.equal(err.syscall, 'check');
  assert.equal(new LuoError('RETRIEVE_FD', Errno.ENOENT, 'x').syscall, 'ioctl');
});
