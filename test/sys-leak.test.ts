import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { test } from 'node:test';
import {
  dup,
  memfdCreate,
  open,
  openFds,
  receiveWithFds,
  sendWithFds,
  socketpair,
  UnixSocket,
} from '../src/sys/index.js';

const OPERATIONS = 10_000;

/**
 * The process's open fds, each with what it points at: an fd of the test runner or of tsx
 * may close while the test runs (that is not a leak), and a leaked fd may reuse its number.
 */
function fdTable(): Set<string> {
  return new Set(
    openFds().map((fd) => {
      try {
        return `${fd} -> ${fs.readlinkSync(`/proc/self/fd/${fd}`)}`;
      } catch {
        return `${fd} -> ?`;
      }
    }),
  );
}

test(`no fd leaks over ${OPERATIONS} operations, failures included`, async () => {
  const before = fdTable();
  const [a, b] = socketpair('seqpacket', { nonBlocking: true });
  for (let i = 0; i < OPERATIONS; i++) {
    switch (i % 5) {
      case 0: {
        using fd = memfdCreate(`leak-${i}`);
        using copy = dup(fd);
        assert.notEqual(copy.fd, fd.fd);
        break;
      }
      case 1: {
        using fd = memfdCreate('passed');
        sendWithFds(a, Buffer.from('x'), [fd, fd]);
        const got = receiveWithFds(b)!;
        assert.equal(got.fds.length, 2);
        for (const f of got.fds) f.close();
        break;
      }
      case 2:
        assert.throws(() => open('/nonexistent/luokit'), { code: 'ENOENT' });
        break;
      case 3:
        assert.throws(() => memfdCreate('x'.repeat(300)), { code: 'EINVAL' });
        break;
      case 4: {
        const [c, d] = socketpair('stream');
        c.close();
        d.close();
        break;
      }
    }
  }
  a.close();
  b.close();
  // The event-loop socket path too: watcher handles must go with their fds.
  for (let i = 0; i < 200; i++) {
    const [c, d] = socketpair('stream');
    const reader = new UnixSocket(d);
    const writer = new UnixSocket(c);
    const memfd = memfdCreate('async');
    const got = new Promise<void>((resolve) =>
      reader.on('data', (_data, fds) => {
        for (const f of fds) f.close();
        resolve();
      }),
    );
    await writer.send(Buffer.from('y'), [memfd]);
    await got;
    memfd.close();
    writer.close();
    reader.close();
  }
  const leaked = [...fdTable()].filter((entry) => !before.has(entry));
  assert.deepEqual(leaked, [], 'every fd opened was closed');
});
