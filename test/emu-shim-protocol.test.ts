/**
 * Protocol conformance of the C preload shim (native/emu-shim/luoemu.c)
 * against docs/emulator.md, with this test process as a fake emulator.
 *
 * The fake listens on device.sock and query.sock in a temporary state
 * directory, writes its own pid to emu.pid, records every message byte for
 * byte, and answers from a script. A small C program (native/emu-shim/test/
 * probe.c) runs under LD_PRELOAD=libluoemu.so and reports what each libc
 * call returned. Each test checks both sides: the bytes on the wire and what
 * the unmodified C caller saw.
 *
 * Needs a C compiler (scripts/build-native.sh builds the shim).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  fstat,
  memfdCreate,
  type OwnedFd,
  pwriteAll,
  socketpair,
  UnixServer,
  UnixSocket,
} from '../src/sys/index.js';

const projectRoot = fileURLToPath(new URL('..', import.meta.url));

const MAGIC = 0x454f554c;
const KIND_IOCTL = 1;
const KIND_FROZEN_QUERY = 2;
const KIND_SYNC = 3;
const ARG_NULL = 1;
const TAIL_NONZERO = 2;
const FD_INVALID = 4;
const ARG_FAULT = 8;

const CREATE_SESSION = 0xba00;
const RETRIEVE_SESSION = 0xba01;
const PRESERVE_FD = 0xba40;
const RETRIEVE_FD = 0xba41;
const FINISH = 0xba42;
const GET_NAME = 0xba43;

const EPERM = 1;
const ENOENT = 2;
const EIO = 5;
const EBADF = 9;
const EFAULT = 14;
const EBUSY = 16;
const EEXIST = 17;
const ENOTDIR = 20;
const EINVAL = 22;
const ENOTTY = 25;
const EOPNOTSUPP = 95;

/** One request as the fake emulator received it. */
interface Message {
  /** 'device', 'session:<name>' or 'query'. */
  socket: string;
  kind: number;
  request: number;
  flags: number;
  arg: Buffer;
  /** Inode numbers of the fds attached (SCM_RIGHTS). */
  fds: bigint[];
}

interface Answer {
  result: number;
  arg?: Buffer;
  /** An fd to attach; the fake closes its own copy once sent. */
  fd?: OwnedFd;
  /** Read the request and hang up without replying. */
  hangUp?: boolean;
}

type Responder = (msg: Message) => Answer | undefined;

function nameField(name: string): Buffer {
  const field = Buffer.alloc(64);
  field.write(name, 'latin1');
  return field;
}

function readName(arg: Buffer, offset: number): string {
  const field = arg.subarray(offset, offset + 64);
  const nul = field.indexOf(0);
  return field.subarray(0, nul < 0 ? field.length : nul).toString('latin1');
}

/** A kernel's 72-byte session struct: {u32 size; s32 fd; u8 name[64]}. */
function sessionStruct(name: string): Buffer {
  const arg = Buffer.alloc(72);
  arg.writeUInt32LE(72, 0);
  nameField(name).copy(arg, 8);
  return arg;
}

/**
 * Just enough of an emulator to answer the probe: sessions are socketpairs,
 * PRESERVE_FD marks the file frozen, RETRIEVE_FD hands back a memfd. Anything
 * else is ENOTTY. A test can override any answer with `respond`.
 */
class FakeEmulator {
  readonly dir: string;
  readonly messages: Message[] = [];
  readonly errors: string[] = [];
  readonly frozen = new Set<bigint>();
  connections = 0;
  /** SYNC requests (the shim closed an emulator fd). */
  syncs = 0;
  openResult = 0;
  replyDelayMs: () => number = () => 0;
  respond: Responder = () => undefined;
  readonly #servers: UnixServer[] = [];
  readonly #sockets = new Set<UnixSocket>();

  constructor() {
    this.dir = mkdtempSync(path.join(tmpdir(), 'luoemu-fake-'));
    writeFileSync(path.join(this.dir, 'emu.pid'), `${process.pid}\n`);
    const device = UnixServer.listen(path.join(this.dir, 'device.sock'), { type: 'seqpacket' });
    device.on('connection', (sock) => this.#onDevice(sock));
    const query = UnixServer.listen(path.join(this.dir, 'query.sock'), { type: 'seqpacket' });
    query.on('connection', (sock) => this.#serve(sock, 'query'));
    this.#servers.push(device, query);
  }

  reset(): void {
    this.messages.length = 0;
    this.errors.length = 0;
    this.frozen.clear();
    this.connections = 0;
    this.syncs = 0;
    this.openResult = 0;
    this.replyDelayMs = () => 0;
    this.respond = () => undefined;
  }

  /** The messages that arrived on one socket. */
  on(socket: string): Message[] {
    return this.messages.filter((m) => m.socket === socket);
  }

  close(): void {
    for (const sock of this.#sockets) sock.close();
    for (const server of this.#servers) server.close();
    rmSync(this.dir, { recursive: true, force: true });
  }

  #onDevice(sock: UnixSocket): void {
    this.connections++;
    const handshake = this.#reply(KIND_IOCTL, this.openResult, Buffer.alloc(0));
    if (this.openResult < 0) {
      void sock.send(handshake).finally(() => sock.close());
      return;
    }
    void sock.send(handshake);
    this.#serve(sock, 'device');
  }

  #serve(sock: UnixSocket, name: string): void {
    this.#sockets.add(sock);
    sock.on('close', () => this.#sockets.delete(sock));
    sock.on('end', () => sock.close());
    sock.on('error', () => sock.close());
    sock.on('data', (data, fds) => {
      const msg = this.#decode(name, data, fds);
      for (const fd of fds) fd.close();
      if (msg === null) {
        sock.close();
        return;
      }
      if (msg.kind === KIND_SYNC) {
        // The shim's close() of an emulator fd: counted, answered, kept out of `messages`.
        this.syncs++;
        void sock.send(this.#reply(KIND_SYNC, 0, Buffer.alloc(0))).catch(() => {});
        return;
      }
      this.messages.push(msg);
      const answer = this.respond(msg) ?? this.#default(msg);
      if (answer.hangUp) {
        sock.close();
        return;
      }
      const reply = this.#reply(msg.kind, answer.result, answer.arg ?? Buffer.alloc(0));
      const send = () => {
        if (sock.closed) return;
        void sock
          .send(reply, answer.fd ? [answer.fd] : [])
          .catch(() => {})
          .finally(() => answer.fd?.close());
      };
      const delay = this.replyDelayMs();
      if (delay > 0) setTimeout(send, delay);
      else send();
    });
  }

  #decode(socket: string, data: Buffer, fds: OwnedFd[]): Message | null {
    const fail = (what: string) => {
      this.errors.push(`${socket}: ${what}`);
      return null;
    };
    if (data.length < 20) return fail(`message of ${data.length} bytes`);
    if (data.readUInt32LE(0) !== MAGIC) return fail(`magic 0x${data.readUInt32LE(0).toString(16)}`);
    if (data.readUInt16LE(4) !== 1) return fail(`version ${data.readUInt16LE(4)}`);
    const argLen = data.readUInt32LE(16);
    if (argLen > 4096 || data.length !== 20 + argLen)
      return fail(`arg_len ${argLen} in ${data.length} bytes`);
    return {
      socket,
      kind: data.readUInt16LE(6),
      request: data.readUInt32LE(8),
      flags: data.readUInt32LE(12),
      arg: Buffer.from(data.subarray(20)),
      fds: fds.map((fd) => fstat(fd).ino),
    };
  }

  #reply(kind: number, result: number, arg: Buffer): Buffer {
    const head = Buffer.alloc(16);
    head.writeUInt32LE(MAGIC, 0);
    head.writeUInt16LE(1, 4);
    head.writeUInt16LE(kind, 6);
    head.writeInt32LE(result, 8);
    head.writeUInt32LE(arg.length, 12);
    return Buffer.concat([head, arg]);
  }

  #newSession(name: string): OwnedFd {
    const [mine, theirs] = socketpair('seqpacket');
    const sock = new UnixSocket(mine, 'seqpacket');
    this.#serve(sock, `session:${name}`);
    return theirs;
  }

  #default(msg: Message): Answer {
    if (msg.kind === KIND_FROZEN_QUERY) {
      return { result: msg.fds.length === 1 && this.frozen.has(msg.fds[0]!) ? 1 : 0 };
    }
    if (msg.flags & (ARG_NULL | ARG_FAULT)) return { result: -EFAULT };
    switch (msg.socket === 'device' ? msg.request : msg.request | 0x10000) {
      case CREATE_SESSION:
      case RETRIEVE_SESSION: {
        const name = readName(msg.arg, 8);
        return { result: 0, arg: sessionStruct(name), fd: this.#newSession(name) };
      }
      case GET_NAME | 0x10000:
        return { result: 0, arg: sessionStruct(msg.socket.slice('session:'.length)) };
      case PRESERVE_FD | 0x10000: {
        if (msg.flags & FD_INVALID) return { result: -EBADF };
        if (msg.fds.length !== 1) return { result: -EINVAL };
        this.frozen.add(msg.fds[0]!);
        return { result: 0, arg: msg.arg.subarray(0, 16) };
      }
      case RETRIEVE_FD | 0x10000: {
        const file = memfdCreate('retrieved');
        pwriteAll(file, Buffer.from('retrieved'), 0);
        const arg = Buffer.alloc(16);
        msg.arg.copy(arg, 0, 0, 16);
        return { result: 0, arg, fd: file };
      }
      case FINISH | 0x10000:
        return { result: 0, arg: msg.arg.subarray(0, 8) };
      default:
        return { result: -ENOTTY };
    }
  }
}

let lib = '';
let probe = '';
let buildDir = '';
let fake: FakeEmulator;

interface ProbeRun {
  /** "key" -> "value" for each line the probe printed. */
  out: Map<string, string>;
  stderr: string;
  status: number | null;
  signal: NodeJS.Signals | null;
}

async function runProbe(scenario: string, env: NodeJS.ProcessEnv = {}): Promise<ProbeRun> {
  const child = spawn(probe, [scenario], {
    env: { PATH: process.env.PATH, LD_PRELOAD: lib, LUOKIT_EMU_STATE: fake.dir, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  const [status, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
    child.on('close', (code, sig) => resolve([code, sig])),
  );
  clearTimeout(timer);
  const out = new Map<string, string>();
  for (const line of stdout.split('\n')) {
    const space = line.indexOf(' ');
    if (space > 0) out.set(line.slice(0, space), line.slice(space + 1));
  }
  const run = { out, stderr, status, signal };
  assert.equal(status, 0, `probe ${scenario} failed (${signal ?? status}): ${stdout}${stderr}`);
  assert.equal(out.get('done'), scenario, `probe ${scenario} did not finish: ${stdout}${stderr}`);
  return run;
}

/** "ret errno" as the probe prints it, for a call that succeeded (ret) or failed (errno). */
const ok = (ret = 0) => `${ret} 0`;
const failed = (errno: number) => `-1 ${errno}`;

function hex(...parts: Array<string | Buffer>): string {
  return parts.map((p) => (typeof p === 'string' ? p.replaceAll(' ', '') : p.toString('hex'))).join('');
}

function u32(n: number): string {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0, 0);
  return b.toString('hex');
}

before(() => {
  execFileSync(path.join(projectRoot, 'scripts/build-native.sh'), { stdio: ['ignore', 'ignore', 'inherit'] });
  lib = path.join(projectRoot, 'build/native/libluoemu.so');
  assert.ok(existsSync(lib), `${lib} was not built`);
  buildDir = mkdtempSync(path.join(tmpdir(), 'luoemu-probe-'));
  probe = path.join(buildDir, 'luoemu-probe');
  execFileSync(
    process.env.CC ?? 'cc',
    [
      '-O2',
      '-Wall',
      '-Wextra',
      '-Werror',
      '-pthread',
      '-o',
      probe,
      path.join(projectRoot, 'native/emu-shim/test/probe.c'),
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  fake = new FakeEmulator();
});

after(() => {
  fake?.close();
  if (buildDir) rmSync(buildDir, { recursive: true, force: true });
});

beforeEach(() => fake.reset());

describe('open("/dev/liveupdate") under the shim', () => {
  it('connects to device.sock, one connection per open, honouring O_CLOEXEC and O_NONBLOCK', async () => {
    const { out } = await runProbe('open');
    assert.match(out.get('open')!, /^\d+ 0$/);
    assert.equal(out.get('open.cloexec'), '0', 'like the kernel, no close-on-exec unless asked');
    assert.match(out.get('open.flags')!, /^\d+ 0$/);
    assert.equal(out.get('open.flags.cloexec'), '1');
    assert.equal(out.get('open.flags.nonblock'), '1');
    assert.match(out.get('openat')!, /^\d+ 0$/);
    assert.match(out.get('open64')!, /^\d+ 0$/);
    assert.equal(fake.connections, 4);
    assert.deepEqual(fake.messages, [], 'opening sends nothing: the emulator speaks first');
    assert.equal(fake.syncs, 4, 'each close() of a device fd waits for a SYNC on query.sock');
  });

  it('fails with the errno of the handshake reply and leaks no fd', async () => {
    fake.openResult = -EBUSY;
    const { out } = await runProbe('open-refused');
    assert.equal(out.get('open'), failed(EBUSY));
    assert.equal(out.get('leak'), '3', 'fd 3 is free again');
    assert.equal(fake.connections, 1);
  });

  it('leaves flag errors to the VFS order and other paths to libc, without connecting', async () => {
    const { out } = await runProbe('open-flags');
    assert.equal(out.get('excl'), failed(EEXIST));
    assert.equal(out.get('directory'), failed(ENOTDIR));
    assert.equal(out.get('creat-directory'), failed(EINVAL));
    if (!existsSync('/dev/liveupdate')) {
      assert.equal(out.get('path'), failed(ENOENT), 'O_PATH goes to the real file system');
      assert.equal(out.get('relative'), failed(ENOENT), 'only the absolute path is the device');
    }
    assert.equal(out.get('other'), failed(ENOENT));
    assert.equal(out.get('null'), failed(EFAULT));
    assert.equal(fake.connections, 0);
  });

  it('is off without LUOKIT_EMU_STATE: the real open() answers', async () => {
    const { out } = await runProbe('open-refused', { LUOKIT_EMU_STATE: '' });
    if (!existsSync('/dev/liveupdate')) assert.equal(out.get('open'), failed(ENOENT));
    assert.equal(fake.connections, 0);
  });
});

describe('ioctl() on emulator fds', () => {
  it('sends the caller struct as an IOCTL request and installs the session fd it gets back', async () => {
    const { out } = await runProbe('create');
    assert.deepEqual(fake.errors, []);
    const [create, getName] = fake.messages;
    assert.deepEqual(
      { ...create!, arg: create!.arg.toString('hex') },
      {
        socket: 'device',
        kind: KIND_IOCTL,
        request: CREATE_SESSION,
        flags: 0,
        arg: hex('48000000 ffffffff', nameField('probe-session')),
        fds: [],
      },
    );
    assert.equal(out.get('create'), ok());
    const fd = Number(out.get('create.fd'));
    assert.ok(fd >= 3, `the session fd number is written into the struct (got ${fd})`);
    assert.equal(out.get('create.fd.cloexec'), '1', 'session fds are O_CLOEXEC, as the kernel makes them');
    assert.equal(out.get('create.fd.socket'), '1');
    assert.equal(getName!.socket, 'session:probe-session');
    assert.equal(getName!.request, GET_NAME);
    assert.equal(getName!.arg.toString('hex'), hex(u32(72), '00'.repeat(68)));
    assert.equal(out.get('get_name'), ok());
    assert.equal(out.get('get_name.name'), 'probe-session');
    assert.equal(out.get('get_name.size'), '72');
  });

  it('summarises arguments it cannot or need not send with flags', async () => {
    fake.respond = () => ({ result: -EINVAL });
    const { out } = await runProbe('args');
    assert.deepEqual(fake.errors, []);
    const seen = fake.messages.map((m) => ({ request: m.request, flags: m.flags, len: m.arg.length }));
    assert.deepEqual(seen, [
      { request: CREATE_SESSION, flags: ARG_NULL, len: 0 }, // NULL
      { request: CREATE_SESSION, flags: ARG_NULL, len: 0 }, // unmapped pointer
      { request: CREATE_SESSION, flags: ARG_FAULT, len: 8 }, // 72 bytes, 8 mapped
      { request: CREATE_SESSION, flags: 0, len: 4096 }, // size 8192, zero tail
      { request: CREATE_SESSION, flags: TAIL_NONZERO, len: 4096 }, // size 8192, non-zero tail
      { request: CREATE_SESSION, flags: ARG_FAULT, len: 4096 }, // tail runs into an unmapped page
      { request: CREATE_SESSION, flags: 0, len: 4 }, // size 2: the size field still travels
      { request: RETRIEVE_SESSION, flags: ARG_NULL, len: 0 }, // upper bits of the request dropped
      { request: 0x5401, flags: 0, len: 4 }, // TCGETS: the emulator decides, as the driver would
    ]);
    assert.equal(fake.messages[2]!.arg.toString('hex'), hex(u32(72), 'abababab'));
    assert.equal(fake.messages[3]!.arg.readUInt32LE(0), 8192);
    assert.equal(fake.messages[3]!.arg[100], 0x5a);
    assert.equal(fake.messages[6]!.arg.toString('hex'), u32(2));
    for (const key of [
      'null',
      'unmapped',
      'partial',
      'big.zero',
      'big.nonzero',
      'big.fault',
      'tiny',
      'upper',
      'tcgets',
    ]) {
      assert.equal(out.get(key), failed(EINVAL), key);
    }
  });

  it('attaches the fd PRESERVE_FD names, or flags it FD_INVALID when it is not open', async () => {
    const { out } = await runProbe('preserve');
    assert.deepEqual(fake.errors, []);
    const memfdIno = BigInt(out.get('memfd.ino')!);
    const preserves = fake.on('session:preserve');
    assert.equal(preserves.length, 5);
    const [good, closed, negative, opath, short] = preserves;
    assert.deepEqual(good!.fds, [memfdIno], 'the emulator gets the same file');
    assert.equal(good!.flags, 0);
    assert.equal(good!.arg.length, 16);
    assert.equal(good!.arg.readUInt32LE(0), 16);
    assert.equal(good!.arg.readBigUInt64LE(8), 0x1122334455667788n);
    assert.equal(out.get('preserve'), ok());
    for (const [msg, key] of [
      [closed, 'preserve.closed'],
      [negative, 'preserve.negative'],
      [opath, 'preserve.opath'],
    ] as const) {
      assert.equal(msg!.flags, FD_INVALID, key);
      assert.deepEqual(msg!.fds, [], key);
      assert.equal(out.get(key), failed(EBADF), key);
    }
    assert.equal(opath!.arg.readInt32LE(4) >= 0, true, 'the O_PATH fd number travels as the caller wrote it');
    assert.deepEqual(
      { flags: short!.flags, len: short!.arg.length, fds: short!.fds },
      { flags: 0, len: 4, fds: [] },
    );
    assert.equal(out.get('preserve.short'), failed(EINVAL));
  });

  it('copies back min(caller size, reply size) bytes, and fails with EFAULT without leaking the new fd', async () => {
    const { out } = await runProbe('copyback');
    const getName = fake.on('session:copyback-session-name-that-is-long')[0]!;
    assert.equal(getName.arg.length, 40);
    assert.equal(out.get('short'), ok());
    assert.equal(out.get('short.name'), 'copyback-session-name-that-is-lo');
    assert.equal(out.get('short.canary'), 'eeee', 'nothing written beyond the caller size');
    assert.equal(out.get('readonly'), failed(EFAULT));
    assert.equal(out.get('readonly.leak'), '0', 'the session fd that could not be reported is closed');
  });

  it('installs retrieved files and carries FINISH', async () => {
    const { out } = await runProbe('retrieve');
    assert.equal(out.get('retrieve_session'), ok());
    assert.equal(out.get('retrieve_fd'), ok());
    assert.equal(out.get('retrieve_fd.cloexec'), '1');
    assert.equal(out.get('retrieve_fd.text'), 'retrieved');
    const session = fake.on('session:incoming');
    assert.deepEqual(
      session.map((m) => [m.request, m.arg.length]),
      [
        [RETRIEVE_FD, 16],
        [FINISH, 8],
      ],
    );
    assert.equal(session[0]!.arg.readBigUInt64LE(8), 7n);
    assert.equal(out.get('finish'), ok());
  });

  it('waits for late replies on non-blocking fds, and FIONBIO stays with the VFS', async () => {
    fake.replyDelayMs = () => 50;
    const { out } = await runProbe('nonblock');
    assert.equal(out.get('create.fd'), '1');
    assert.equal(out.get('fionbio'), ok());
    assert.equal(out.get('session.nonblock'), '1');
    assert.equal(out.get('get_name'), ok());
    assert.equal(out.get('get_name.name'), 'slow');
    assert.deepEqual(
      fake.messages.map((m) => m.request),
      [CREATE_SESSION, GET_NAME],
    );
  });

  it('answers the VFS-generic ioctls locally and forwards the driver ones', async () => {
    const { out } = await runProbe('generic');
    assert.equal(out.get('fioclex'), ok());
    assert.equal(out.get('fioclex.cloexec'), '1');
    assert.equal(out.get('fionclex'), ok());
    assert.equal(out.get('fionclex.cloexec'), '0');
    assert.equal(out.get('fioasync.off'), ok());
    assert.equal(out.get('fioasync.on'), failed(ENOTTY), 'LUO files have no fasync');
    assert.equal(out.get('fioasync.fault'), failed(EFAULT));
    assert.equal(out.get('fionread'), failed(ENOTTY));
    assert.deepEqual(
      fake.messages.map((m) => [m.request, m.flags, m.arg.toString('hex')]),
      [[0x541b, 0, u32(0)]],
    );
  });

  it('reports EIO when the emulator hangs up, and never raises SIGPIPE', async () => {
    fake.respond = () => ({ result: 0, hangUp: true });
    const { out } = await runProbe('gone');
    assert.equal(out.get('eof'), failed(EIO));
    assert.equal(out.get('epipe'), failed(EIO));
  });

  it('leaves non-emulator fds to the real ioctl and keeps errno on success', async () => {
    const passthrough = await runProbe('passthrough');
    assert.equal(passthrough.out.get('socketpair.fionread'), ok());
    assert.equal(passthrough.out.get('socketpair.avail'), '3');
    assert.equal(passthrough.out.get('devnull.tcgets'), failed(ENOTTY));
    assert.equal(passthrough.out.get('devnull.fionbio'), ok());
    assert.equal(passthrough.out.get('errno.kept'), '4321');
    assert.equal(fake.connections, 0);
    const emulated = await runProbe('errno');
    assert.equal(emulated.out.get('get_name'), ok());
    assert.equal(emulated.out.get('errno.kept'), '1234');
  });

  it('keeps request and reply paired across threads and fork', async () => {
    fake.replyDelayMs = () => Math.floor(Math.random() * 3);
    const threads = await runProbe('threads');
    assert.equal(threads.out.get('threads.ok'), '1');
    const forked = await runProbe('fork');
    assert.equal(forked.out.get('child'), '0');
  });
});

describe('inside the emulator process itself', () => {
  it('the shim stands aside, so an emulator that inherited LD_PRELOAD never waits on itself', async () => {
    const pidFile = path.join(fake.dir, 'emu.pid');
    try {
      const { out } = await runProbe('emulator-itself');
      if (!existsSync('/dev/liveupdate')) assert.equal(out.get('open'), failed(ENOENT));
      assert.equal(out.get('ftruncate'), ok());
      assert.equal(out.get('fionread'), ok());
    } finally {
      writeFileSync(pidFile, `${process.pid}\n`);
    }
    assert.equal(fake.connections, 0);
    assert.deepEqual(fake.messages, []);
  });
});

describe('size changes of preserved memfds', () => {
  it('ask query.sock with the file attached, and fail with EPERM when it is frozen', async () => {
    const { out } = await runProbe('frozen');
    assert.deepEqual(fake.errors, []);
    const ino = BigInt(out.get('memfd.ino')!);
    assert.equal(out.get('before'), ok());
    assert.equal(out.get('preserve'), ok());
    assert.equal(out.get('ftruncate'), failed(EPERM));
    assert.equal(out.get('ftruncate64'), failed(EPERM));
    assert.equal(out.get('ftruncate.same'), ok(), 'no size change: shmem allows it');
    assert.equal(out.get('ftruncate.negative'), failed(EINVAL));
    assert.equal(out.get('fallocate'), failed(EPERM));
    assert.equal(out.get('fallocate64'), failed(EPERM));
    assert.equal(out.get('fallocate.punch'), failed(EPERM));
    assert.equal(
      out.get('fallocate.zero'),
      failed(EOPNOTSUPP),
      'shmem refuses the mode before the frozen check',
    );
    assert.equal(out.get('fallocate.badlen'), failed(EINVAL));
    assert.equal(out.get('posix_fallocate'), String(EPERM), 'posix_fallocate returns the error');
    assert.equal(out.get('posix_fallocate64'), String(EPERM));
    assert.equal(out.get('posix_fallocate.errno'), '555', 'and leaves errno alone');
    assert.equal(out.get('readonly'), failed(EINVAL));

    const queries = fake.on('query');
    for (const q of queries) {
      assert.deepEqual(
        { kind: q.kind, request: q.request, flags: q.flags, len: q.arg.length },
        {
          kind: KIND_FROZEN_QUERY,
          request: 0,
          flags: 0,
          len: 0,
        },
      );
      assert.equal(q.fds.length, 1, 'the file travels with the query');
    }
    // memfd creation (ftruncate from 0), `before`, then the 7 calls that reach shmem's check.
    assert.equal(queries.filter((q) => q.fds[0] === ino).length, 9);
    if (out.get('tmpfile') !== undefined) {
      assert.equal(out.get('tmpfile'), ok());
      assert.equal(
        queries.filter((q) => q.fds[0] !== ino).length,
        1,
        'an O_TMPFILE has no links: it is asked about',
      );
    }
  });
});
