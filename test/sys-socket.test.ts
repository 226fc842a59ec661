import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import {
  addSeals,
  F_SEAL_SHRINK,
  fdTarget,
  fstat,
  getSeals,
  isCloseOnExec,
  MAX_FDS_PER_MESSAGE,
  memfdCreate,
  type OwnedFd,
  pread,
  pwriteAll,
  receiveWithFds,
  sendWithFds,
  sockaddrUn,
  socketpair,
  UnixServer,
  UnixSocket,
} from '../src/sys/index.js';

function tempSocketPath(): { dir: string; sock: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-sock-'));
  return { dir, sock: path.join(dir, 's.sock') };
}

function memfdWith(text: string): OwnedFd {
  const fd = memfdCreate('t');
  pwriteAll(fd, Buffer.from(text), 0);
  return fd;
}

function contents(fd: OwnedFd): string {
  return pread(fd, fstat(fd).size, 0).toString();
}

test('sockaddr_un accepts filesystem and abstract paths and rejects bad lengths', () => {
  assert.equal(sockaddrUn('/run/x').length, 2 + 6 + 1);
  assert.equal(sockaddrUn('\0abstract').length, 2 + 9, 'abstract names carry no NUL terminator');
  assert.throws(() => sockaddrUn(''), { code: 'EINVAL' });
  assert.throws(() => sockaddrUn(`/${'x'.repeat(107)}`), { code: 'EINVAL' });
});

test('stream socketpair carries bytes with fds attached (SCM_RIGHTS)', () => {
  const [a, b] = socketpair('stream');
  using memfd = memfdWith('guest memory');
  assert.equal(sendWithFds(a, Buffer.from('hi'), [memfd]), 2);
  const got = receiveWithFds(b)!;
  assert.equal(got.data.toString(), 'hi');
  assert.equal(got.fds.length, 1);
  const [fd] = got.fds;
  assert.notEqual(fd!.fd, memfd.fd, 'the receiver gets its own fd number');
  assert.equal(fstat(fd!).ino, fstat(memfd).ino, 'for the same file');
  assert.ok(isCloseOnExec(fd!), 'received fds are close-on-exec (MSG_CMSG_CLOEXEC)');
  assert.equal(contents(fd!), 'guest memory');
  fd!.close();
  a.close();
  const eof = receiveWithFds(b)!;
  assert.equal(eof.eof, true);
  b.close();
});

test(`a message carries up to ${MAX_FDS_PER_MESSAGE} fds and no more`, () => {
  const [a, b] = socketpair('seqpacket');
  const fds = Array.from({ length: MAX_FDS_PER_MESSAGE }, (_, i) => memfdWith(`file ${i}`));
  sendWithFds(a, Buffer.from('many'), fds);
  const got = receiveWithFds(b)!;
  assert.equal(got.fds.length, MAX_FDS_PER_MESSAGE);
  assert.equal(got.fdsTruncated, false);
  assert.equal(contents(got.fds[200]!), 'file 200');
  for (const fd of [...fds, ...got.fds]) fd.close();
  const extra = Array.from({ length: MAX_FDS_PER_MESSAGE + 1 }, () => 0);
  assert.throws(() => sendWithFds(a, Buffer.from('x'), extra), { code: 'EINVAL' });
  assert.throws(() => sendWithFds(a, Buffer.alloc(0), [0]), { code: 'EINVAL' });
  a.close();
  b.close();
});

test('seqpacket keeps message boundaries and reports truncation', () => {
  const [a, b] = socketpair('seqpacket', { nonBlocking: true });
  sendWithFds(a, Buffer.from('first'));
  sendWithFds(a, Buffer.from('second message'));
  assert.equal(receiveWithFds(b)!.data.toString(), 'first');
  const cut = receiveWithFds(b, 6)!;
  assert.equal(cut.data.toString(), 'second');
  assert.equal(cut.truncated, true);
  assert.equal(receiveWithFds(b), null, 'the rest of a truncated datagram is gone; nothing more to read');
  a.close();
  b.close();
});

test('peer credentials name the process at the other end', () => {
  const [a, b] = socketpair('stream');
  const cred = new UnixSocket(a).peerCredentials();
  assert.deepEqual(cred, { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
  a.close();
  b.close();
});

test('UnixSocket sends a large message without blocking the event loop, fds on its first byte', async () => {
  const [a, b] = socketpair('stream');
  const writer = new UnixSocket(a);
  const reader = new UnixSocket(b);
  const payload = Buffer.alloc(8 << 20);
  for (let i = 0; i < payload.length; i += 4096) payload.writeUInt32LE(i, i);
  using memfd = memfdWith('attached');
  const chunks: Buffer[] = [];
  const fdsPerChunk: number[] = [];
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  const done = new Promise<void>((resolve) => {
    let total = 0;
    reader.on('data', (data, fds) => {
      chunks.push(data);
      fdsPerChunk.push(fds.length);
      if (fds.length) assert.equal(contents(fds[0]!), 'attached');
      for (const fd of fds) fd.close();
      total += data.length;
      if (total === payload.length) resolve();
    });
  });
  const sent = writer.send(payload, [memfd]);
  assert.ok(writer.pendingBytes > 0, 'the kernel buffer cannot take 8 MiB at once');
  await Promise.all([sent, done]);
  clearInterval(timer);
  assert.ok(Buffer.concat(chunks).equals(payload));
  assert.equal(fdsPerChunk[0], 1, 'the fd arrives with the first chunk');
  assert.equal(
    fdsPerChunk.slice(1).every((n) => n === 0),
    true,
  );
  assert.ok(ticks > 0, 'timers ran while the transfer was in progress');
  writer.close();
  reader.close();
});

test('UnixSocket emits end when the peer closes, and send after close rejects', async () => {
  const [a, b] = socketpair('stream');
  const reader = new UnixSocket(b);
  const ended = once(reader, 'end');
  a.close();
  await ended;
  reader.close();
  await assert.rejects(reader.send(Buffer.from('x')), { code: 'EPIPE' });
});

test('UnixSocket rejects pending sends with EPIPE when the peer is gone', async () => {
  const [a, b] = socketpair('stream');
  const writer = new UnixSocket(a);
  b.close();
  writer.on('error', () => {});
  await assert.rejects(writer.send(Buffer.from('to nobody')), { code: 'EPIPE' });
  writer.close();
});

test('UnixServer accepts connections; fds cross a real process boundary both ways', async () => {
  const { dir, sock } = tempSocketPath();
  const server = UnixServer.listen(sock);
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/memfd-peer.ts', sock], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const [conn] = (await once(server, 'connection')) as [UnixSocket];
  assert.equal(conn.peerCredentials().pid, child.pid);
  const mine = memfdWith('hello');
  addSeals(mine, F_SEAL_SHRINK);
  const reply = new Promise<{ text: string; fd: OwnedFd }>((resolve) =>
    conn.on('data', (data, fds) => resolve({ text: data.toString(), fd: fds[0]! })),
  );
  await conn.send(Buffer.from('take this\n'), [mine]);
  const { text, fd } = await reply;
  const [exitCode] = await once(child, 'exit');
  assert.equal(exitCode, 0);
  assert.equal(text, 'reply\n');
  assert.equal(contents(fd), `from ${child.pid}: take this / hello`);
  assert.equal(contents(mine), `hello|seen by ${child.pid}`, "the peer's write reached our memfd: same file");
  assert.equal(getSeals(mine), F_SEAL_SHRINK);
  assert.match(fdTarget(fd), /^\/memfd:peer \(deleted\)$/);
  fd.close();
  mine.close();
  conn.close();
  server.close();
  fs.rmSync(dir, { recursive: true });
});

test('connecting to a missing socket fails with the errno name', () => {
  assert.throws(() => UnixSocket.connect('/nonexistent/luokit.sock'), { code: 'ENOENT', syscall: 'connect' });
  const { dir, sock } = tempSocketPath();
  fs.writeFileSync(sock, '');
  assert.throws(() => UnixSocket.connect(sock), { code: 'ECONNREFUSED' });
  fs.rmSync(dir, { recursive: true });
});
