import assert from 'node:assert/strict';
import { test } from 'node:test';
import { adoptSession, openDevice } from '../src/kernel/index.js';
import { LuoDevice, LuoSession } from '../src/kernel/luo-device.js';
import { openRealDevice } from '../src/kernel/real/index.js';
import type { IoctlTransport } from '../src/kernel/transport.js';
import { Errno, isOpen, memfdCreate, SysError } from '../src/sys/index.js';
import { LuoError } from '../src/uapi/index.js';

interface Call {
  fd: number;
  request: number;
  arg: string;
}

/**
 * A kernel stand-in that records the exact bytes each ioctl carries and
 * answers like the kernel: it writes a new fd number into the argument, or
 * fails with an errno.
 */
function recordingTransport(answer: (call: Call, arg: Buffer | null) => number): {
  transport: IoctlTransport;
  calls: Call[];
} {
  const calls: Call[] = [];
  return {
    calls,
    transport: {
      backend: 'real',
      ioctl(fd, request, arg) {
        const call = { fd, request, arg: arg?.toString('hex') ?? 'NULL' };
        calls.push(call);
        return answer(call, arg);
      },
    },
  };
}

/** An fd the test owns, standing in for one the kernel would create. */
function newFd(): number {
  return memfdCreate('stand-in').release();
}

test('createSession sends the 72-byte struct the kernel header defines and owns the fd it gets back', () => {
  let created = -1;
  const { transport, calls } = recordingTransport((_call, arg) => {
    created = newFd();
    arg!.writeInt32LE(created, 4);
    return 0;
  });
  const device = new LuoDevice(transport, memfdCreate('device'));
  const session = device.createSession('vm-42');
  assert.equal(calls.length, 1);
  assert.equal(calls[0]!.request, 0xba00);
  // u32 size = 72 | s32 fd = 0 | "vm-42" NUL-padded to 64 bytes
  const expected = `48000000 00000000 ${Buffer.from('vm-42').toString('hex')}${'00'.repeat(59)}`.replaceAll(
    ' ',
    '',
  );
  assert.equal(calls[0]!.arg, expected);
  assert.equal(session.fd, created);
  assert.equal(session.name, 'vm-42');
  assert.equal(session.origin, 'created');
  session.close();
  assert.equal(isOpen(created), false, 'closing the session closes the fd the kernel gave');
  device.close();
});

test('preserveFd and retrieveFd carry fd and u64 token little-endian', () => {
  const { transport, calls } = recordingTransport((call, arg) => {
    if (call.request === 0xba41) arg!.writeInt32LE(newFd(), 4);
    return 0;
  });
  using session = new LuoSession(transport, memfdCreate('session'), 's', 'created');
  using memfd = memfdCreate('guest');
  session.preserveFd(memfd, 0x0102030405060708n);
  const token = '0807060504030201';
  assert.equal(calls[0]!.request, 0xba40);
  assert.equal(calls[0]!.arg, `10000000${Buffer.from([memfd.fd, 0, 0, 0]).toString('hex')}${token}`);
  using retrieved = session.retrieveFd(2n ** 64n - 1n);
  assert.equal(calls[1]!.request, 0xba41);
  assert.equal(calls[1]!.arg, `1000000000000000${'ff'.repeat(8)}`);
  assert.ok(isOpen(retrieved.fd));
});

test('finish and getName use their own structs', () => {
  const { transport, calls } = recordingTransport((call, arg) => {
    if (call.request === 0xba43) Buffer.from('incoming-1\0').copy(arg!, 8);
    return 0;
  });
  using session = new LuoSession(transport, memfdCreate('session'), 'incoming-1', 'retrieved');
  session.finish();
  assert.deepEqual(calls[0], { fd: session.fd, request: 0xba42, arg: '0800000000000000' });
  assert.equal(session.getName(), 'incoming-1');
  assert.equal(calls[1]!.request, 0xba43);
  assert.equal(calls[1]!.arg.slice(0, 16), '4800000000000000');
});

test('arguments the kernel would refuse never reach it', () => {
  const { transport, calls } = recordingTransport(() => 0);
  using device = new LuoDevice(transport, memfdCreate('device'));
  assert.throws(() => device.createSession(''), { code: 'EINVAL', operation: 'CREATE_SESSION' });
  assert.throws(() => device.createSession('x'.repeat(64)), { code: 'EINVAL' });
  assert.throws(() => device.retrieveSession(''), { code: 'ENOENT', operation: 'RETRIEVE_SESSION' });
  using session = new LuoSession(transport, memfdCreate('session'), 's', 'created');
  using memfd = memfdCreate('guest');
  assert.throws(() => session.preserveFd(memfd, -1n), { code: 'EINVAL', operation: 'PRESERVE_FD' });
  assert.throws(() => session.preserveFd(memfd, 2n ** 64n), { code: 'EINVAL' });
  assert.throws(() => session.preserveFd(-5, 1n), { code: 'EBADF' });
  const closed = memfdCreate('closed');
  const number = closed.fd;
  closed.close();
  assert.throws(() => session.preserveFd(closed, 1n), { code: 'EBADF' });
  assert.throws(() => session.preserveFd(number, 1n), { code: 'EBADF' });
  session.close();
  assert.throws(() => session.finish(), { code: 'EBADF', operation: 'FINISH' });
  assert.equal(calls.length, 0);
});

test('kernel errors become LuoErrors that say what they mean', () => {
  const { transport } = recordingTransport(() => {
    throw new SysError('ioctl', Errno.EBUSY);
  });
  using session = new LuoSession(transport, memfdCreate('session'), 's', 'created');
  using memfd = memfdCreate('guest');
  assert.throws(
    () => session.preserveFd(memfd, 1n),
    (err: unknown) =>
      err instanceof LuoError &&
      err.code === 'EBUSY' &&
      err.errno === Errno.EBUSY &&
      err.operation === 'PRESERVE_FD' &&
      /already preserved/.test(err.message),
  );
});

test('the real transport issues real ioctls: a non-LUO fd answers ENOTTY', () => {
  using device = openRealDevice('/dev/null');
  assert.equal(device.backend, 'real');
  assert.throws(() => device.createSession('probe'), { code: 'ENOTTY', operation: 'CREATE_SESSION' });
});

test('on a host without /dev/liveupdate, opening the real device says so', () => {
  assert.throws(
    () => openDevice({ backend: 'real', devicePath: '/nonexistent/liveupdate' }),
    (err: unknown) => err instanceof LuoError && err.code === 'ENOENT' && err.operation === 'OPEN',
  );
});

test('adoptSession refuses an fd that is not a session', () => {
  using memfd = memfdCreate('not-a-session');
  assert.throws(() => adoptSession(memfd), { code: 'EINVAL' });
});

test('adopting: the kernel names the session; without GET_NAME (before 7.2) the known name stands', () => {
  const named = recordingTransport((_call, arg) => {
    Buffer.from('vm-1\0').copy(arg!, 8);
    return 0;
  });
  using byKernel = LuoSession.adopt(named.transport, memfdCreate('session'), 'vm-2');
  assert.equal(byKernel.name, 'vm-1');
  const old = recordingTransport(() => {
    throw new SysError('ioctl', Errno.ENOTTY);
  });
  using byName = LuoSession.adopt(old.transport, memfdCreate('session'), 'vm-2');
  assert.equal(byName.name, 'vm-2');
  assert.equal(byName.origin, 'adopted');
  assert.throws(() => LuoSession.adopt(old.transport, memfdCreate('session')), { code: 'ENOTTY' });
});
