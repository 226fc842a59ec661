/**
 * LuoClient and the example VMM against a real luod on the emulated kernel
 * (luod runs as a child process: src/daemon/main.ts --emulate).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, type TestContext, test } from 'node:test';
import { LineFramer, LuoClient, type LuoClientError } from '../src/client/index.js';
import { Pattern } from '../src/example-vmm/pattern.js';
import {
  digestOf,
  page0Mismatch,
  parseVmmArgs,
  patternSweep,
  runVmm,
  type VmmOptions,
} from '../src/example-vmm/vmm.js';
import type { Session } from '../src/kernel/index.js';
import { LineChannel } from '../src/protocol/lines.js';
import { fstat, ftruncate, memfdCreate, type OwnedFd, pread, pwriteAll } from '../src/sys/index.js';
import { parseSize } from '../src/sys/size.js';
import { receiveWithFds, sendWithFds, socketpair } from '../src/sys/socket.js';
import { UnixSocket } from '../src/sys/unix-socket.js';
import { spawnChild } from './support/child.js';
import { type LuodInstance, ROOT, startLuod, waitIdleWith } from './support/luod.js';
import { waitUntil } from './support/wait.js';

const NOBODY = 65534;

/**
 * An example VMM that fills its RAM and runs until luod announces the kexec, then stops
 * as its process would with the host: it must never get to claim.
 */
function vmmUntilKexec(options: Omit<VmmOptions, 'fill' | 'signal' | 'output' | 'log'>) {
  const stop = new AbortController();
  return runVmm({
    ...options,
    fill: true,
    signal: stop.signal,
    output: () => assert.fail('a VMM stopped at the kexec must not claim'),
    log: (message) => {
      if (message === 'kexec: the host reboots') stop.abort();
    },
  });
}

/** A plain stream connection to `socketPath`, resolved once connected; errors reject. */
function connectRaw(socketPath: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection(socketPath);
    sock.once('error', reject);
    sock.once('connect', () => {
      sock.off('error', reject);
      sock.on('error', () => {});
      resolve(sock);
    });
  });
}
const VMM_ENTRY = path.join(ROOT, 'src/example-vmm/main.ts');

function readAllOf(fd: OwnedFd): Buffer {
  const size = fstat(fd).size;
  const parts: Buffer[] = [];
  for (let off = 0; off < size; ) {
    const part = pread(fd, size - off, off);
    if (part.length === 0) break;
    parts.push(part);
    off += part.length;
  }
  return Buffer.concat(parts);
}

function guestMemory(name: string, content: Buffer): OwnedFd {
  const fd = memfdCreate(name);
  ftruncate(fd, content.length);
  pwriteAll(fd, content, 0);
  return fd;
}

async function rejects(promise: Promise<unknown>, code: string, message?: RegExp): Promise<LuoClientError> {
  try {
    await promise;
  } catch (err) {
    const e = err as LuoClientError;
    assert.equal(e.code, code, `expected ${code}, got ${e.code}: ${e.message}`);
    if (message) assert.match(e.message, message);
    return e;
  }
  assert.fail(`expected a rejection with ${code}`);
}

/** Raw lines over a plain socket: what a broken or hostile client sends. */
function rawConnection(socketPath: string) {
  const sock = net.createConnection(socketPath);
  const lines: Record<string, unknown>[] = [];
  let partial = '';
  let closed = false;
  sock.setEncoding('utf8');
  sock.on('data', (d: string) => {
    partial += d;
    const parts = partial.split('\n');
    partial = parts.pop()!;
    for (const p of parts) lines.push(JSON.parse(p));
  });
  sock.on('error', () => {});
  const closedPromise = new Promise<void>((resolve) =>
    sock.on('close', () => {
      closed = true;
      resolve();
    }),
  );
  return {
    sock,
    lines,
    get closed() {
      return closed;
    },
    closedPromise,
    ready: new Promise<void>((resolve) => sock.once('connect', () => resolve())),
    write: (text: string) => new Promise<void>((resolve) => sock.write(text, () => resolve())),
    waitLines: (n: number) => waitUntil(() => lines.length >= n, `${n} lines from luod`),
  };
}

describe('LineFramer (fds and lines as the kernel delivers them)', () => {
  test('one recvmsg() returning an fd-less line glued before the line with fds: the fds go to the second', () => {
    const [a, b] = socketpair('stream');
    const memfd = memfdCreate('framer');
    try {
      assert.ok(sendWithFds(a, Buffer.from('{"ok":true,"seq":1}\n')) > 0);
      assert.ok(sendWithFds(a, Buffer.from('{"event":"START_PRESERVATION"}\n'), [memfd]) > 0);
      const got = receiveWithFds(b)!;
      // The kernel returns both lines in one recvmsg(), with the fd.
      assert.equal(got.data.toString(), '{"ok":true,"seq":1}\n{"event":"START_PRESERVATION"}\n');
      assert.equal(got.fds.length, 1);
      const lines = new LineFramer(65536).push(got.data, got.fds);
      assert.deepEqual(
        lines.map((l) => [l.line, l.fds.length]),
        [
          ['{"ok":true,"seq":1}', 0],
          ['{"event":"START_PRESERVATION"}', 1],
        ],
      );
      for (const l of lines) for (const fd of l.fds) fd.close();
    } finally {
      memfd.close();
      a.close();
      b.close();
    }
  });

  test('a line split over chunks keeps the fds of its first chunk; a partial line takes the fds of its chunk', () => {
    const framer = new LineFramer(65536);
    const [x, y] = socketpair('stream');
    try {
      assert.deepEqual(framer.push(Buffer.from('{"a":'), [x]), []);
      const first = framer.push(Buffer.from('1}\n{"b"'), []);
      assert.equal(first.length, 1);
      assert.equal(first[0]!.fds.length, 1);
      const second = framer.push(Buffer.from(':2}\n'), [y]);
      // y arrived with a chunk whose last byte is in {"b":2}: it is that line's.
      assert.equal(second[0]!.line, '{"b":2}');
      assert.equal(second[0]!.fds.length, 1);
    } finally {
      x.close();
      y.close();
    }
  });

  test('a line over the limit throws E2BIG and closes the fds it holds', () => {
    const framer = new LineFramer(16);
    const [x, y] = socketpair('stream');
    try {
      assert.throws(() => framer.push(Buffer.from('0123456789abcdefXYZ'), [x]), { code: 'E2BIG' });
      assert.ok(x.closed);
    } finally {
      x.close();
      y.close();
    }
  });

  test('LineChannel gives the fds to the line they came with', async () => {
    const [a, b] = socketpair('stream');
    const memfd = memfdCreate('channel');
    const channel = new LineChannel(new UnixSocket(b));
    try {
      const got: [unknown, number][] = [];
      channel.on('message', (value, fds) => {
        got.push([value, fds.length]);
        for (const fd of fds) fd.close();
      });
      sendWithFds(a, Buffer.from('{"ok":true}\n'));
      sendWithFds(a, Buffer.from('{"event":"START_PRESERVATION"}\n'), [memfd]);
      await waitUntil(() => got.length === 2, 'two messages');
      assert.deepEqual(got, [
        [{ ok: true }, 0],
        [{ event: 'START_PRESERVATION' }, 1],
      ]);
    } finally {
      channel.close();
      memfd.close();
      a.close();
    }
  });
});

describe('LuoClient against a scripted server', () => {
  /** A fake luod: `script` gets each command and the raw socket. */
  async function fakeLuod(script: (command: Record<string, unknown>, sock: net.Socket) => void) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-fake-'));
    const socketPath = path.join(dir, 'fake.sock');
    const server = net.createServer((sock) => {
      let partial = '';
      sock.setEncoding('utf8');
      sock.on('error', () => {});
      sock.on('data', (d: string) => {
        partial += d;
        const parts = partial.split('\n');
        partial = parts.pop()!;
        for (const p of parts) script(JSON.parse(p), sock);
      });
    });
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
    return {
      socketPath,
      close: async () => {
        await new Promise((resolve) => server.close(resolve));
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  }

  test('replies are matched by seq, whatever their order; events in between are delivered', async () => {
    let held: { seq: unknown; sock: net.Socket } | null = null;
    const fake = await fakeLuod((command, sock) => {
      if (command.cmd === 'UPDATE') {
        held = { seq: command.seq, sock };
        return;
      }
      sock.write(`${JSON.stringify({ event: 'PROGRESS', seq: held?.seq, phase: 'barrier' })}\n`);
      sock.write(`${JSON.stringify({ event: 'SOMETHING_NEW' })}\n`);
      sock.write(`${JSON.stringify({ seq: command.seq, ok: true, phase: 'idle' })}\n`);
      if (held) held.sock.write(`${JSON.stringify({ seq: held.seq, ok: true, outcome: 'dry-run' })}\n`);
    });
    const client = await LuoClient.connect(fake.socketPath);
    try {
      const progress: unknown[] = [];
      const events: unknown[] = [];
      client.on('event', (e) => events.push(e.event));
      const update = client.update({ onProgress: (p) => progress.push(p.phase) });
      await waitUntil(() => held !== null, 'UPDATE at the server');
      assert.equal((await client.status()).phase, 'idle');
      assert.equal((await update).outcome, 'dry-run');
      assert.deepEqual(progress, ['barrier']);
      assert.deepEqual(events, ['PROGRESS', 'SOMETHING_NEW']);
    } finally {
      client.close();
      await fake.close();
    }
  });

  test('a command without a reply times out (commandTimeoutMs); its late reply is dropped', async () => {
    let first = true;
    const fake = await fakeLuod((command, sock) => {
      if (first) {
        first = false;
        setTimeout(() => sock.write(`${JSON.stringify({ seq: command.seq, ok: true, late: true })}\n`), 200);
        return;
      }
      sock.write(`${JSON.stringify({ seq: command.seq, ok: true, late: false })}\n`);
    });
    const client = await LuoClient.connect(fake.socketPath, { commandTimeoutMs: 100 });
    const warnings: string[] = [];
    client.on('warning', (err) => warnings.push(err.message));
    try {
      await rejects(client.status(), 'ETIMEDOUT', /STATUS: luod did not answer within 100 ms/);
      await new Promise((r) => setTimeout(r, 250));
      assert.equal((await client.status()).late, false);
      assert.ok(warnings.some((w) => w.includes('no pending command')));
    } finally {
      client.close();
      await fake.close();
    }
  });

  test('a disconnect rejects every pending command with ECONNRESET; later commands too', async () => {
    const fake = await fakeLuod((command, sock) => {
      if (command.cmd === 'CLAIM') sock.destroy();
    });
    const client = await LuoClient.connect(fake.socketPath);
    try {
      const pending = [client.status(), client.claim('vm-1')];
      for (const p of pending) await rejects(p, 'ECONNRESET', /luod closed the connection/);
      const info = await client.closed;
      assert.deepEqual(info, { byClient: false, afterKexec: false });
      await rejects(client.hello(), 'ECONNRESET');
    } finally {
      client.close();
      await fake.close();
    }
  });

  test('close() by the client rejects pending commands with ECONNRESET too', async () => {
    const fake = await fakeLuod(() => {});
    const client = await LuoClient.connect(fake.socketPath);
    try {
      const pending = client.status();
      client.close();
      await rejects(pending, 'ECONNRESET', /the client closed the connection/);
      assert.equal((await client.closed).byClient, true);
    } finally {
      await fake.close();
    }
  });
});

describe('example VMM helpers', () => {
  test('sizes and the command line', () => {
    assert.equal(parseSize('64M'), 64 << 20);
    assert.equal(parseSize('1G'), 1 << 30);
    assert.equal(parseSize('4096'), 4096);
    assert.equal(parseSize('512KiB'), 512 << 10);
    assert.throws(() => parseSize('lots'), { code: 'EINVAL' });
    const options = parseVmmArgs(['--id', 'vm-1', '--mem', '8M', '--updates', '2']);
    assert.ok(options !== 'help');
    assert.equal(options.id, 'vm-1');
    assert.equal(options.memBytes, 8 << 20);
    assert.equal(options.updates, 2);
    assert.throws(() => parseVmmArgs(['--mem', '8M']), { code: 'EINVAL' });
    assert.throws(() => parseVmmArgs(['--id', 'x', '--bogus']), { code: 'EINVAL' });
    const pattern = parseVmmArgs(['--id', 'p', '--fill', '--verify', 'pattern']);
    assert.ok(pattern !== 'help');
    assert.equal(pattern.verify, 'pattern');
    assert.equal((parseVmmArgs(['--id', 'p']) as { verify?: string }).verify, undefined, 'sha256 by default');
    assert.throws(() => parseVmmArgs(['--id', 'p', '--verify', 'md5']), {
      code: 'EINVAL',
      message: /--verify must be sha256 or pattern/,
    });
    assert.throws(() => parseVmmArgs(['--id', 'p', '--verify', 'pattern']), {
      code: 'EINVAL',
      message: /needs --fill/,
    });
  });

  test('pattern verification: page 0 is the last generation stamped (before the resume), every other byte the pattern (after)', async () => {
    const size = 3 * 4096;
    const pattern = new Pattern(2 * 4096);
    const fd = guestMemory('pattern', Buffer.alloc(size));
    try {
      pattern.writeTo(fd.fd, size);
      // Never ticked: page 0 is still the pattern.
      assert.equal(page0Mismatch(fd, 'vm-p', 0), undefined);
      assert.equal(await patternSweep(fd, size, pattern), undefined);
      const header = Buffer.alloc(4096);
      header.write('LUOVMM01', 0, 'latin1');
      header.writeBigUInt64LE(7n, 8);
      header.write('vm-p', 16, 'utf8');
      pwriteAll(fd, header, 0);
      assert.equal(page0Mismatch(fd, 'vm-p', 7), undefined);
      assert.match(page0Mismatch(fd, 'vm-p', 6) ?? '', /page 0 .*generation 6/);
      assert.match(page0Mismatch(fd, 'vm-q', 7) ?? '', /page 0/);
      assert.match(page0Mismatch(fd, 'vm-p', 0) ?? '', /page 0/, 'a stamped page 0 is not the pattern');
      // The sweep leaves page 0 to the check before the resume (the vCPU writes it).
      assert.equal(await patternSweep(fd, size, pattern), undefined);
      // A byte in the second chunk (past the first comparison) is found, with its offset.
      pwriteAll(fd, Buffer.from([pattern.expected(2 * 4096 + 9, 1)[0]! ^ 0xff]), 2 * 4096 + 9);
      assert.match((await patternSweep(fd, size, pattern)) ?? '', /first difference at byte 8201 /);
    } finally {
      fd.close();
    }
  });

  test('the RAM digest depends on every byte', () => {
    const fd = guestMemory('digest', Buffer.alloc(3 * 4096));
    try {
      const before = digestOf(fd, 3 * 4096);
      pwriteAll(fd, Buffer.from([1]), 2 * 4096 + 4095);
      assert.notEqual(digestOf(fd, 3 * 4096), before);
    } finally {
      fd.close();
    }
  });
});

describe('LuoClient against luod on the emulated kernel', () => {
  let luod: LuodInstance;
  let admin: LuoClient;
  before(async () => {
    // --max-clients 256: the test below fills luod up to its limit (the default is 1024).
    luod = await startLuod({ group: NOBODY, args: ['--max-clients', '256'] });
    admin = await LuoClient.connect(luod.socket);
  });
  after(async () => {
    admin?.close();
    await luod?.stop();
  });

  /** Clients opened by a test are closed after it, so none takes part in the next test's update. */
  const opened = new Set<LuoClient>();
  async function connect(t: TestContext): Promise<LuoClient> {
    const client = await LuoClient.connect(luod.socket);
    opened.add(client);
    t.after(() => {
      client.close();
      opened.delete(client);
    });
    return client;
  }

  test('connect failures and command errors carry the errno name and luod sentence', async (t) => {
    await rejects(LuoClient.connect(path.join(luod.dir, 'nothing.sock')), 'ENOENT', /cannot connect to luod/);
    const client = await connect(t);
    const hello = await client.hello({ client: 'test' });
    assert.equal(hello.version, 1);
    assert.equal(hello.backend, 'emulated');
    assert.equal(hello.limits.max_line, 65536);
    await rejects(client.hello({ versions: [7] }), 'ENOTSUP', /version/);
    await rejects(client.subscribe('bad id!'), 'EINVAL', /SUBSCRIBE/);
    await rejects(client.subscribe('luod-internal'), 'EINVAL');
    await rejects(client.subscribe('x'.repeat(49)), 'EINVAL');
    await rejects(client.ready(), 'EBUSY', /no update/);
    await rejects(client.failed('nothing to fail'), 'EBUSY');
    await rejects(client.claim('vm-nobody-knows'), 'ENOENT', /vm-nobody-knows/);
    await rejects(client.request('NOPE'), 'ENOTSUP', /NOPE/);
    const sub = await client.subscribe('t-errors', { sessions: 3 });
    assert.deepEqual(sub.sessions, ['t-errors', 't-errors.1', 't-errors.2']);
    const other = await connect(t);
    await rejects(other.subscribe('t-errors'), 'EEXIST', /t-errors/);
    // Commands travel concurrently and are matched by seq.
    const [a, b, c] = await Promise.all([client.status(), client.hello(), client.status()]);
    assert.equal(a.phase, 'idle');
    assert.equal(b.version, 1);
    assert.ok(Array.isArray(c.subscribers));
    await client.unsubscribe();
    assert.ok(!((await admin.status()).subscribers as string[]).includes('t-errors'));
  });

  test('happy path: three clients preserve, the host updates, each reconnects, claims and gets its bytes back', async (t) => {
    const ids = ['t-a', 't-b', 't-c'];
    const size = 1 << 20;
    const expected = ids.map(() => randomBytes(size));
    const extra = randomBytes(8192);
    const memfds = ids.map((id, i) => guestMemory(id, expected[i]!));
    const extraFd = guestMemory('t-c-extra', extra);
    t.after(() => {
      for (const fd of [...memfds, extraFd]) fd.close();
    });
    const kexecs: string[] = [];
    const clients: LuoClient[] = [];
    for (const [i, id] of ids.entries()) {
      const client = await connect(t);
      await client.hello({ client: `test/${id}` });
      client.onPreserve((sessions, update) => {
        assert.equal(update.id, id);
        assert.deepEqual(
          sessions.map((s) => s.name),
          i === 2 ? ['t-c', 't-c.1'] : [id],
        );
        assert.ok(update.deadline.getTime() > Date.now());
        sessions[0]!.preserveFd(memfds[i]!, 1n);
        // The guest still runs after the preserve: this write must come back too.
        const stamp = Buffer.from(`written after preserve by ${id}`);
        pwriteAll(memfds[i]!, stamp, 100);
        stamp.copy(expected[i]!, 100);
        if (i === 2) sessions[1]!.preserveFd(extraFd, 7n);
      });
      client.onKexec((event) => {
        kexecs.push(`${id}:${event.update}`);
      });
      await client.subscribe(id, { sessions: i === 2 ? 2 : 1 });
      clients.push(client);
    }
    await waitIdleWith(admin, ids);
    const phases: string[] = [];
    const outcome = await admin.update({
      timeoutMs: 20_000,
      onProgress: (p) => phases.push(String(p.phase)),
    });
    assert.equal(outcome.outcome, 'rebooted', JSON.stringify(outcome));
    assert.deepEqual(phases, ['preserve', 'barrier', 'kexec', 'restored']);
    const update = String(outcome.update);
    for (const client of clients) {
      const info = await client.closed;
      assert.equal(info.afterKexec, true);
      assert.equal(info.byClient, false);
      await rejects(client.status(), 'ECONNRESET', /KEXEC/);
    }
    assert.deepEqual(kexecs.sort(), ids.map((id) => `${id}:${update}`).sort());
    assert.deepEqual(((await admin.status()).pending_claims as string[]).sort(), ids);

    for (const [i, id] of ids.entries()) {
      const client = await LuoClient.connectWithRetry(luod.socket, { hello: true });
      opened.add(client);
      t.after(() => client.close());
      const sessions = await client.claim(id);
      assert.equal(sessions.update, update);
      assert.equal(sessions.id, id);
      assert.deepEqual(
        sessions.map((s) => s.name),
        i === 2 ? ['t-c', 't-c.1'] : [id],
      );
      const file = sessions[0]!.retrieveFd(1n);
      assert.ok(readAllOf(file).equals(expected[i]!), `${id}: every byte of its memory came back`);
      file.close();
      if (i === 2) {
        const more = sessions[1]!.retrieveFd(7n);
        assert.ok(readAllOf(more).equals(extra));
        more.close();
      }
      for (const s of sessions) {
        s.finish();
        s.close();
      }
      // Claimed already: EBUSY, whether or not others are still pending.
      await rejects(client.claim(id), 'EBUSY');
    }
    const status = await admin.status();
    assert.equal(status.phase, 'idle');
    assert.deepEqual(status.pending_claims, []);
  });

  test('a client that never says READY: the update aborts at the deadline, everyone gets ABORTED, and the memory can be preserved again', async (t) => {
    const good = await connect(t);
    const silent = await connect(t);
    const goodMem = guestMemory('t-good', randomBytes(65536));
    const silentMem = guestMemory('t-silent', randomBytes(65536));
    t.after(() => {
      goodMem.close();
      silentMem.close();
    });
    const aborted: string[] = [];
    let goodSessions: Session[] = [];
    good.onPreserve((sessions) => {
      goodSessions = sessions;
      sessions[0]!.preserveFd(goodMem, 1n);
    });
    good.onAborted((event) => {
      // The client closed the session fds before telling us.
      assert.ok(goodSessions.every((s) => s.closed));
      aborted.push(`good:${event.reason}`);
    });
    // No preserve handler: the silent client holds its sessions and never answers.
    let silentRequest: string | null = null;
    silent.on('event', (event) => {
      if (event.event === 'START_PRESERVATION') silentRequest = String(event.update);
    });
    silent.onAborted((event) => {
      aborted.push(`silent:${event.reason}`);
    });
    await good.subscribe('t-good');
    await silent.subscribe('t-silent');
    await waitIdleWith(admin, ['t-good', 't-silent']);

    const started = Date.now();
    const first = admin.update({ timeoutMs: 1000 });
    await waitUntil(
      () => silentRequest !== null && good.currentUpdate !== null,
      'START_PRESERVATION at both',
    );
    const outcome = await first;
    assert.equal(outcome.outcome, 'aborted');
    assert.match(String(outcome.reason), /t-silent did not say READY/);
    assert.ok(Date.now() - started >= 900);
    await waitUntil(() => aborted.length === 2, 'ABORTED at both clients');
    assert.ok(aborted.some((a) => a.startsWith('good:') && a.includes('t-silent')));
    assert.equal(silent.currentUpdate, null);

    // Second update: both preserve the same memfds again, which the kernel
    // refuses (EBUSY) if the first update left them preserved.
    silent.onPreserve((sessions) => {
      sessions[0]!.preserveFd(silentMem, 1n);
    });
    const second = await admin.update({ timeoutMs: 20_000 });
    assert.equal(second.outcome, 'rebooted', JSON.stringify(second));
    for (const [id, mem] of [
      ['t-good', goodMem],
      ['t-silent', silentMem],
    ] as const) {
      const client = await LuoClient.connectWithRetry(luod.socket);
      t.after(() => client.close());
      const [session] = await client.claim(id);
      const file = session!.retrieveFd(1n);
      assert.ok(readAllOf(file).equals(readAllOf(mem)));
      file.close();
      session!.finish();
      session!.close();
    }
  });

  test('a client that crashes mid-preservation: the update aborts at once, the others get ABORTED and resume', async (t) => {
    const vmm = spawnChild(process.execPath, [
      '--import',
      'tsx',
      VMM_ENTRY,
      '--id',
      't-crash',
      '--mem',
      '4M',
      '--socket',
      luod.socket,
      '--misbehave',
      'never-ready',
    ]);
    t.after(() => {
      vmm.process.kill('SIGKILL');
    });
    const bystander = await connect(t);
    const mem = guestMemory('t-bystander', randomBytes(4096));
    t.after(() => mem.close());
    let resumed = false;
    bystander.onPreserve((sessions) => sessions[0]!.preserveFd(mem, 1n));
    bystander.onAborted(() => {
      resumed = true;
    });
    await bystander.subscribe('t-bystander');
    await waitIdleWith(admin, ['t-bystander', 't-crash']);
    const started = Date.now();
    const update = admin.update({ timeoutMs: 60_000 });
    await vmm.waitStderr('paused and preserved');
    vmm.process.kill('SIGKILL');
    const outcome = await update;
    assert.equal(outcome.outcome, 'aborted');
    assert.match(String(outcome.reason), /t-crash disconnected/);
    assert.ok(Date.now() - started < 30_000, 'aborted by the disconnect, not the deadline');
    await waitUntil(() => resumed, 'ABORTED at the bystander');
    assert.equal((await vmm.exit).signal, 'SIGKILL');
    // The bystander's memory is free again: it takes part in the next update.
    await waitIdleWith(admin, ['t-bystander']);
  });

  test('CLAIM from another uid is refused (EPERM); the owner then claims', async (t) => {
    const owner = await connect(t);
    const mem = guestMemory('t-owned', Buffer.from('owned by root'));
    t.after(() => mem.close());
    owner.onPreserve((sessions) => sessions[0]!.preserveFd(mem, 1n));
    await owner.subscribe('t-owned');
    await waitIdleWith(admin, ['t-owned']);
    const outcome = await admin.update({ timeoutMs: 20_000 });
    assert.equal(outcome.outcome, 'rebooted');

    const script = `
      import { LuoClient } from ${JSON.stringify(path.join(ROOT, 'src/client/index.ts'))};
      const client = await LuoClient.connect(${JSON.stringify(luod.socket)});
      const out = {};
      for (const [name, run] of [['claim', () => client.claim('t-owned')], ['force', () => client.claim('t-owned', { force: true })], ['update', () => client.update()]]) {
        try { await run(); out[name] = 'ok'; } catch (err) { out[name] = { code: err.code, message: err.message }; }
      }
      console.log(JSON.stringify({ uid: process.getuid(), ...out }));
      client.close();
      process.exit(0);
    `;
    const claimer = spawnChild(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      uid: NOBODY,
      gid: NOBODY,
      env: { ...process.env, HOME: '/nonexistent' },
    });
    const line = JSON.parse(await claimer.waitLine((l) => l.startsWith('{'), 60_000));
    assert.equal(line.uid, NOBODY);
    assert.equal(line.claim.code, 'EPERM');
    assert.match(line.claim.message, /subscribed by uid 0, you are uid 65534/);
    assert.equal(line.force.code, 'EPERM', 'force is for root only');
    assert.equal(line.update.code, 'EPERM', 'UPDATE is an admin command');

    const client = await LuoClient.connectWithRetry(luod.socket);
    t.after(() => client.close());
    const [session] = await client.claim('t-owned');
    const file = session!.retrieveFd(1n);
    assert.equal(readAllOf(file).toString(), 'owned by root');
    file.close();
    session!.finish();
    session!.close();
  });

  test('malformed and oversized lines: error replies, a disconnect after the limit, and luod still serves', async () => {
    const raw = rawConnection(luod.socket);
    await raw.ready;
    await raw.write('this is not json\n');
    await raw.write('[1,2,3]\n');
    await raw.write('{"cmd":"NOPE","seq":3}\n');
    await raw.write('{"cmd":"SUBSCRIBE","id":"no spaces","seq":4}\n');
    await raw.write('{"cmd":"CLAIM","seq":5}\n');
    await raw.write('\n');
    await raw.write('{"cmd":"STATUS","seq":6}\n');
    await raw.waitLines(6);
    assert.deepEqual(
      raw.lines.map((l) => [(l.error as { code?: string } | undefined)?.code ?? 'ok', l.seq]),
      [
        ['EPROTO', undefined],
        ['EPROTO', undefined],
        ['ENOTSUP', 3],
        ['EINVAL', 4],
        ['EINVAL', 5],
        ['ok', 6],
      ],
    );
    // 5 malformed so far; the 17th disconnects, after its error reply.
    for (let i = 0; i < 11; i++) await raw.write('garbage\n');
    await raw.waitLines(17);
    assert.equal(raw.closed, false);
    await raw.write('garbage\n');
    await raw.closedPromise;
    assert.equal(raw.lines.length, 18);
    assert.equal((raw.lines[17]!.error as { code: string }).code, 'EPROTO');

    // A line over 64 KiB: E2BIG, then the connection is closed.
    const big = rawConnection(luod.socket);
    await big.ready;
    big.sock.write(`{"cmd":"STATUS","pad":"${'x'.repeat(70_000)}"}\n`);
    await big.closedPromise;
    assert.equal((big.lines[0]?.error as { code: string } | undefined)?.code, 'E2BIG');

    // Over 64 KiB without a newline at all: the same.
    const endless = rawConnection(luod.socket);
    await endless.ready;
    endless.sock.write('{"cmd":"STATUS","pad":"');
    endless.sock.write('y'.repeat(80_000));
    await endless.closedPromise;
    assert.equal((endless.lines[0]?.error as { code: string } | undefined)?.code, 'E2BIG');

    // Exactly at the limit is fine.
    const edge = rawConnection(luod.socket);
    await edge.ready;
    const prefix = '{"cmd":"STATUS","seq":9,"pad":"';
    const suffix = '"}';
    await edge.write(`${prefix}${'z'.repeat(65536 - prefix.length - suffix.length)}${suffix}\n`);
    await edge.waitLines(1);
    assert.equal(edge.lines[0]!.ok, true);
    edge.sock.destroy();

    const status = await admin.status();
    assert.equal(status.phase, 'idle');
    const fresh = await LuoClient.connect(luod.socket);
    assert.equal((await fresh.hello()).version, 1);
    fresh.close();
  });

  test('luod queues 255 clients that connect while it is stopped and serves them; the next is refused with EMFILE', async () => {
    // Only the admin connection is left from earlier tests.
    await waitUntil(async () => Number((await admin.status()).clients) === 1, 'earlier clients gone');
    const before = 1;
    const extra: net.Socket[] = [];
    try {
      // The clients connect while luod is stopped, as a host's VMMs do right
      // after a kexec: the kernel must queue all of them (luod's listen backlog),
      // since a non-blocking AF_UNIX connect() beyond the queue fails with EAGAIN.
      luod.child.kill('SIGSTOP');
      try {
        for (let i = before; i < 256; i++) extra.push(await connectRaw(luod.socket));
      } finally {
        luod.child.kill('SIGCONT');
      }
      await waitUntil(async () => Number((await admin.status()).clients) === 256, '256 clients');
      const refused = await LuoClient.connect(luod.socket);
      const info = await refused.closed;
      assert.equal(info.error?.code, 'EMFILE');
      await rejects(refused.hello(), 'EMFILE', /at most 256 clients/);
    } finally {
      for (const s of extra) s.destroy();
    }
    await waitUntil(async () => Number((await admin.status()).clients) === before, 'the extra clients gone');
  });

  test('two updates in a row: a VMM (child process) and a client go through both', async (t) => {
    const vmm = spawnChild(process.execPath, [
      '--import',
      'tsx',
      VMM_ENTRY,
      '--id',
      't-twice',
      '--mem',
      '8M',
      '--socket',
      luod.socket,
      '--updates',
      '2',
    ]);
    t.after(() => {
      vmm.process.kill('SIGKILL');
    });
    const content = randomBytes(16384);
    let mem = guestMemory('t-twice-client', content);
    t.after(() => mem.close());
    let client = await connect(t);
    const attach = async (c: LuoClient) => {
      c.onPreserve((sessions) => sessions[0]!.preserveFd(mem, 1n));
      await c.subscribe('t-client');
    };
    await attach(client);
    const updates: string[] = [];
    for (let round = 1; round <= 2; round++) {
      await waitIdleWith(admin, ['t-client', 't-twice']);
      const outcome = await admin.update({ timeoutMs: 20_000 });
      assert.equal(outcome.outcome, 'rebooted', `round ${round}: ${JSON.stringify(outcome)}`);
      updates.push(String(outcome.update));
      assert.equal((await client.closed).afterKexec, true);
      client = await LuoClient.connectWithRetry(luod.socket);
      const c = client;
      t.after(() => c.close());
      const [session] = await client.claim('t-client');
      const file = session!.retrieveFd(1n);
      assert.ok(readAllOf(file).equals(content));
      session!.finish();
      session!.close();
      mem.close();
      mem = file; // continue on the memory the next kernel gave back
      await attach(client);
      const line = await vmm.waitLine((l) => l.includes(String(outcome.update)));
      const result = JSON.parse(line);
      assert.equal(result.verified, true, line);
      assert.equal(result.bytes, 8 << 20);
      assert.equal(result.id, 't-twice');
      assert.ok(result.blackout_ms >= 0);
      assert.equal(result.recorded_blackout_ms, result.blackout_ms, "luod recorded the VMM's blackout");
      assert.equal(typeof result.verify_ms, 'number', 'verification, after the resume, reported on its own');
    }
    assert.notEqual(updates[0], updates[1]);
    assert.equal((await vmm.exit).code, 0, vmm.stderr());
    assert.equal(vmm.lines.length, 2);
  });

  test('three example VMMs (the demo) survive an update with every byte verified', async (t) => {
    const ids = ['demo-1', 'demo-2', 'demo-3'];
    const vmms = ids.map((id) =>
      spawnChild(process.execPath, [
        '--import',
        'tsx',
        VMM_ENTRY,
        '--id',
        id,
        '--mem',
        '16M',
        '--socket',
        luod.socket,
      ]),
    );
    t.after(() => {
      for (const v of vmms) v.process.kill('SIGKILL');
    });
    await waitIdleWith(admin, ids);
    // Let the vCPUs dirty some memory first.
    await new Promise((r) => setTimeout(r, 300));
    const outcome = await admin.update({ timeoutMs: 30_000 });
    assert.equal(outcome.outcome, 'rebooted', JSON.stringify(outcome));
    for (const [i, vmm] of vmms.entries()) {
      const { code } = await vmm.exit;
      assert.equal(code, 0, vmm.stderr());
      assert.equal(vmm.lines.length, 1);
      const result = JSON.parse(vmm.lines[0]!);
      assert.equal(result.id, ids[i]);
      assert.equal(result.verified, true);
      assert.equal(result.bytes, 16 << 20);
      assert.equal(result.update, outcome.update);
      assert.ok(result.generation > 0, 'the vCPU ran before the update');
    }
    const status = await admin.status();
    assert.deepEqual(status.pending_claims, []);
  });

  test('a VMM started again after the reboot (--claim) claims its filled memory and verifies every byte', async () => {
    // On a real kernel the kexec ends the VMM; here the first VMM stops itself at KEXEC.
    const first = vmmUntilKexec({ id: 't-restart', memBytes: 4 << 20, socket: luod.socket });
    await waitIdleWith(admin, ['t-restart']);
    const outcome = await admin.update({ timeoutMs: 30_000 });
    assert.equal(outcome.outcome, 'rebooted', JSON.stringify(outcome));
    assert.deepEqual(await first, []);
    assert.deepEqual((await admin.status()).pending_claims, ['t-restart']);
    const lines: string[] = [];
    // Two updates: the restarted VMM's vCPU keeps writing, and its second digest must
    // describe the RAM it claimed, not a fresh one.
    const second = runVmm({
      id: 't-restart',
      memBytes: 4 << 20,
      claim: true,
      updates: 2,
      tickMs: 1,
      pagesPerTick: 16,
      socket: luod.socket,
      output: (line) => lines.push(line),
      log: () => {},
    });
    await waitUntil(() => lines.length === 1, 'the first claim verified');
    const result = JSON.parse(lines[0]!);
    assert.equal(result?.verified, true, JSON.stringify(result));
    assert.equal(result?.bytes, 4 << 20);
    assert.equal(result?.update, outcome.update);
    assert.deepEqual((await admin.status()).pending_claims, []);
    await waitIdleWith(admin, ['t-restart']);
    const again = await admin.update({ timeoutMs: 30_000 });
    assert.equal(again.outcome, 'rebooted', JSON.stringify(again));
    const results = await second;
    assert.equal(results.length, 2);
    assert.equal(results[1]?.verified, true, JSON.stringify(results[1]));
    assert.equal(results[1]?.update, again.update);
  });

  test('--verify pattern: the restarted VMM compares its RAM with the pattern, its vCPU having rewritten pages', async () => {
    const first = vmmUntilKexec({
      id: 't-pattern',
      memBytes: 4 << 20,
      verify: 'pattern',
      tickMs: 1,
      pagesPerTick: 64,
      socket: luod.socket,
    });
    await waitIdleWith(admin, ['t-pattern']);
    const outcome = await admin.update({ timeoutMs: 30_000 });
    assert.equal(outcome.outcome, 'rebooted', JSON.stringify(outcome));
    await first;
    const [result] = await runVmm({
      id: 't-pattern',
      memBytes: 4 << 20,
      claim: true,
      socket: luod.socket,
      output: () => {},
      log: () => {},
    });
    assert.equal(result?.verified, true, JSON.stringify(result));
    assert.equal(result?.verify, 'pattern', 'the claiming VMM follows the mode its device state records');
    assert.ok((result?.generation ?? 0) > 0, 'the vCPU ran, so page 0 carried a generation');
    assert.equal(result?.bytes, 4 << 20);
  });

  test('a restarted VMM resumes its guest before it verifies: its blackout is recorded, and the check, run beside the vCPU, still finds a changed byte', async (t) => {
    const size = 32 << 20;
    for (const changed of [false, true]) {
      const id = changed ? 't-changed' : 't-intact';
      // The VMM before the reboot, by hand: its RAM, and a device state with RAM's digest.
      const ram = guestMemory(`${id}-ram`, randomBytes(size));
      t.after(() => ram.close());
      const client = await connect(t);
      let pausedAt = 0;
      client.onPreserve((sessions, request) => {
        sessions[0]!.preserveFd(ram, 1n);
        pausedAt = Date.now();
        const digest = digestOf(ram, size);
        // A byte that changes after the digest: what verification exists to catch.
        if (changed) pwriteAll(ram, Buffer.from([pread(ram, 1, 5 * 4096 + 7)[0]! ^ 0x5a]), 5 * 4096 + 7);
        const state = { format: 'luokit-example-vmm/1', id, update: request.update, size, page_size: 4096 };
        const device = guestMemory(
          `${id}-state`,
          Buffer.from(
            JSON.stringify({ ...state, generation: 3, verify: 'sha256', digest, paused_at: pausedAt }),
          ),
        );
        sessions[0]!.preserveFd(device, 2n);
        device.close();
      });
      await client.subscribe(id);
      await waitIdleWith(admin, [id]);
      const outcome = await admin.update({ timeoutMs: 30_000 });
      assert.equal(outcome.outcome, 'rebooted', JSON.stringify(outcome));
      // A busy vCPU: most pages are rewritten before the check reaches them.
      const [result] = await runVmm({
        id,
        memBytes: size,
        claim: true,
        tickMs: 1,
        pagesPerTick: 256,
        socket: luod.socket,
        output: () => {},
        log: () => {},
      });
      assert.equal(result?.verified, !changed, JSON.stringify(result));
      if (changed) assert.match(result?.error ?? '', /differs from the recorded digest/);
      assert.equal(typeof result?.verify_ms, 'number');
      // The blackout the VMM measured is luod's record of it: pause (old VMM) to resume.
      assert.equal(result?.recorded_blackout_ms, result?.blackout_ms);
      const dir = String((await admin.status()).records_dir);
      const record = JSON.parse(fs.readFileSync(path.join(dir, `${outcome.update}.json`), 'utf8'));
      const lane = record.clients.find((c: { id: string }) => c.id === id);
      assert.equal(lane.blackout.paused_at, pausedAt);
      assert.equal(lane.blackout.resumed_at - lane.blackout.paused_at, result?.blackout_ms);
      assert.ok(lane.blackout.resumed_at >= lane.claim.end, 'resumed after the CLAIM');
    }
  });

  test('an aborted update: the example VMM resumes its guest and reports that pause into the aborted record', async (t) => {
    const holdout = await connect(t);
    await holdout.subscribe('t-holdout'); // no preserve handler: never READY
    const stop = new AbortController();
    t.after(() => stop.abort());
    const marks: string[] = [];
    const vmm = runVmm({
      id: 't-aborted',
      memBytes: 1 << 20,
      socket: luod.socket,
      signal: stop.signal,
      output: () => {},
      log: () => {},
      timeline: (phase, { update }) => marks.push(`${phase} ${update}`),
    });
    await waitIdleWith(admin, ['t-aborted', 't-holdout']);
    const outcome = await admin.update({ timeoutMs: 1000 });
    assert.equal(outcome.outcome, 'aborted', JSON.stringify(outcome));
    await waitUntil(() => marks.length === 2, 'the pause and the resume');
    assert.deepEqual(marks, [`paused ${outcome.update}`, `resumed ${outcome.update}`]);
    const dir = String((await admin.status()).records_dir);
    const lane = await waitUntil(() => {
      const record = JSON.parse(fs.readFileSync(path.join(dir, `${outcome.update}.json`), 'utf8'));
      return record.clients.find(
        (c: { id: string; blackout?: unknown }) => c.id === 't-aborted' && c.blackout,
      );
    }, 'the blackout in the aborted record');
    assert.ok(lane.blackout.paused_at <= lane.ready, 'paused before READY');
    assert.ok(lane.blackout.resumed_at >= lane.blackout.paused_at);
    stop.abort();
    assert.deepEqual(await vmm, []);
  });

  test('a subscribed client with a command in flight when the host reboots gets ECONNRESET', async (t) => {
    const client = await connect(t);
    const mem = guestMemory('t-self', Buffer.from('self'));
    t.after(() => mem.close());
    client.onPreserve((sessions) => sessions[0]!.preserveFd(mem, 1n));
    await client.subscribe('t-self');
    await waitIdleWith(admin, ['t-self']);
    // It runs the update itself; luod drops subscribed connections at the (emulated) reboot.
    await rejects(client.update({ timeoutMs: 20_000 }), 'ECONNRESET', /luod closed the connection/);
    const again = await LuoClient.connectWithRetry(luod.socket);
    t.after(() => again.close());
    const [session] = await again.claim('t-self');
    session!.finish();
    session!.close();
  });
});

describe('sessions nobody claims', () => {
  let luod: LuodInstance;
  before(async () => {
    luod = await startLuod({ claimTimeoutS: 1 });
  });
  after(async () => {
    await luod?.stop();
  });

  test('after --claim-timeout the sessions are finished and released: no pending claims, CLAIM is ENOENT', async (t) => {
    const client = await LuoClient.connect(luod.socket);
    t.after(() => client.close());
    const mem = guestMemory('t-forgotten', randomBytes(4096));
    t.after(() => mem.close());
    client.onPreserve((sessions) => sessions[0]!.preserveFd(mem, 1n));
    await client.subscribe('t-forgotten');
    const admin = await LuoClient.connect(luod.socket);
    t.after(() => admin.close());
    await waitIdleWith(admin, ['t-forgotten']);
    const outcome = await admin.update({ timeoutMs: 20_000 });
    assert.equal(outcome.outcome, 'rebooted');
    const restoredAt = Date.now();
    const status = await admin.status();
    assert.equal(status.phase, 'claiming');
    assert.deepEqual(status.pending_claims, ['t-forgotten']);
    await waitUntil(
      async () => ((await admin.status()).pending_claims as string[]).length === 0,
      'claim deadline',
      10_000,
    );
    assert.ok(Date.now() - restoredAt >= 500);
    assert.equal((await admin.status()).phase, 'idle');
    const late = await LuoClient.connect(luod.socket);
    t.after(() => late.close());
    await rejects(late.claim('t-forgotten'), 'ENOENT');
    // luod's log is written asynchronously: the line may trail the STATUS reply.
    await waitUntil(() => /UNCLAIMED: t-forgotten/.test(luod.log()), 'the UNCLAIMED log line', 10_000);
    // luod is free for the next update.
    const next = await admin.update({ timeoutMs: 5000, dryRun: true });
    assert.equal(next.outcome, 'dry-run');
  });
});

describe('a subscriber that stops reading its socket', () => {
  let luod: LuodInstance;
  before(async () => {
    luod = await startLuod();
  });
  after(async () => {
    await luod?.stop();
  });

  test('does not hold the update past its deadline', async (t) => {
    const admin = await LuoClient.connect(luod.socket);
    t.after(() => admin.close());
    const stuck = net.createConnection(luod.socket);
    t.after(() => stuck.destroy());
    await new Promise((resolve) => stuck.once('connect', resolve));
    stuck.pause(); // never reads: luod's replies fill the socket, then its own queue
    stuck.write(`${JSON.stringify({ cmd: 'SUBSCRIBE', id: 'zz-stuck' })}\n`);
    stuck.write(`${JSON.stringify({ cmd: 'STATUS' })}\n`.repeat(4000));
    await waitIdleWith(admin, ['zz-stuck']);
    const outcome = await Promise.race([
      admin.update({ timeoutMs: 500 }),
      new Promise<Record<string, unknown>>((resolve) =>
        setTimeout(() => resolve({ outcome: 'still waiting 5 s later' }), 5000),
      ),
    ]);
    assert.equal(outcome.outcome, 'aborted');
  });
});
