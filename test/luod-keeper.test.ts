/**
 * The pieces of luod's crash safety on their own: sd_notify datagrams with
 * fds (abstract and path addresses), LISTEN_FDS checks, the names of held
 * fds, the state file's integrity checks, the kexec mode choice, and the
 * holder process (its own session, supervision, dead fds dropped).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import fc from 'fast-check';
import pino from 'pino';
import { heldName, parseHeldName } from '../src/daemon/held-names.js';
import { HolderProcess } from '../src/daemon/holder-process.js';
import { SessionKeeper } from '../src/daemon/keeper.js';
import { emulatedKernel } from '../src/daemon/kernel.js';
import { chooseKexecMode } from '../src/daemon/kexec-mode.js';
import {
  ClaimsLog,
  claimsLogPath,
  readClaimsLog,
  readStateFile,
  type StateBody,
  withLoggedClaims,
  writeStateFile,
} from '../src/daemon/restart-state.js';
import { isValidFdName, notifyAddress, SdNotify, takeListenFds } from '../src/daemon/sd-notify.js';
import { statusLine, watchdogIntervalMs } from '../src/daemon/service-notify.js';
import { statePaths, stopEmulator } from '../src/kernel/emu/index.js';
import { LineChannel } from '../src/protocol/lines.js';
import { clientId, INTERNAL_SESSION, isClientId, MAX_ID_LENGTH } from '../src/protocol/messages.js';
import { fstat, memfdCreate, type OwnedFd, pread, pwriteAll } from '../src/sys/index.js';
import { bind, receiveWithFds, socket, socketpair } from '../src/sys/socket.js';
import { MemoryHolder } from './support/memory-holder.js';
import { waitUntil } from './support/wait.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-keeper-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
const silent = pino({ level: 'silent' });

function memfdWith(text: string): OwnedFd {
  const fd = memfdCreate('t');
  pwriteAll(fd, Buffer.from(text), 0);
  return fd;
}

const contents = (fd: OwnedFd) => pread(fd, fstat(fd).size, 0).toString();

describe('sd_notify', () => {
  for (const [kind, address, env] of [
    ['abstract', `\0luokit-test-${process.pid}`, `@luokit-test-${process.pid}`],
    ['path', path.join(dir, 'notify.sock'), path.join(dir, 'notify.sock')],
  ] as const) {
    test(`FDSTORE=1 with an fd, then FDSTOREREMOVE=1, to a ${kind} NOTIFY_SOCKET`, () => {
      const receiver = socket('dgram');
      bind(receiver, address);
      const notify = SdNotify.fromEnv({ NOTIFY_SOCKET: env })!;
      const memfd = memfdWith('kept by systemd');
      try {
        notify.store('luod.in.b.u-1.0.vm-a', memfd);
        notify.remove('luod.in.b.u-1.0.vm-a');
        notify.ready('idle: 0 subscriber(s)');
        const first = receiveWithFds(receiver)!;
        assert.equal(first.data.toString(), 'FDSTORE=1\nFDNAME=luod.in.b.u-1.0.vm-a');
        assert.equal(first.fds.length, 1);
        assert.equal(contents(first.fds[0]!), 'kept by systemd');
        first.fds[0]!.close();
        const second = receiveWithFds(receiver)!;
        assert.equal(second.data.toString(), 'FDSTOREREMOVE=1\nFDNAME=luod.in.b.u-1.0.vm-a');
        assert.equal(second.fds.length, 0);
        assert.equal(receiveWithFds(receiver)!.data.toString(), 'READY=1\nSTATUS=idle: 0 subscriber(s)');
      } finally {
        memfd.close();
        notify.close();
        receiver.close();
      }
    });
  }

  test('bad addresses and names are refused with an errno name', () => {
    assert.equal(notifyAddress({}), null);
    assert.throws(() => notifyAddress({ NOTIFY_SOCKET: 'vsock:2:1' }), { code: 'EAFNOSUPPORT' });
    const notify = SdNotify.fromEnv({ NOTIFY_SOCKET: '@luokit-nobody-listens' })!;
    try {
      assert.throws(() => notify.remove('a:b'), { code: 'EINVAL' });
      assert.throws(() => notify.store('a:b', 0), { code: 'EINVAL' });
      assert.throws(() => notify.status('two\nlines'), { code: 'EINVAL' });
      assert.throws(() => notify.status('nobody listens'), { code: 'ECONNREFUSED' });
    } finally {
      notify.close();
    }
  });

  test('LISTEN_FDS: only for LISTEN_PID, a bad count is EINVAL, the variables are unset', () => {
    const other = { LISTEN_FDS: '2', LISTEN_PID: String(process.pid + 1), LISTEN_FDNAMES: 'a:b' };
    assert.deepEqual(takeListenFds(other), []);
    assert.deepEqual(other, {}, 'unset, as sd_listen_fds(1) does');
    assert.throws(() => takeListenFds({ LISTEN_FDS: 'x', LISTEN_PID: String(process.pid) }), {
      code: 'EINVAL',
    });
    assert.deepEqual(takeListenFds({}), []);
  });

  test('the watchdog interval and the STATUS line', () => {
    assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: '3000000' }), 3000);
    assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: '3000000', WATCHDOG_PID: '1' }), null);
    assert.equal(watchdogIntervalMs({}), null);
    assert.equal(statusLine({ phase: 'idle', subscribers: ['a', 'b'] }), 'idle: 2 subscriber(s)');
    assert.equal(
      statusLine({ phase: 'claiming', pending_claims: ['vm-b'] }),
      'claiming: 1 client(s) still to claim (vm-b)',
    );
    assert.match(statusLine({ phase: 'preserving', update: 'u-1' }), /^preserving: update u-1/);
  });
});

describe('names of held fds', () => {
  test('round trip, and every name is a valid FDNAME even at the limits', () => {
    const longId = 'v'.repeat(48);
    for (const session of ['vm-a', 'vm-a.1', `${longId}.7`]) {
      const name = heldName({
        role: 'in',
        boot: '0b9c5f5e-7f37-4c1a-9f56-0a7e1c2d3b4a',
        update: 'u-20261126T010130-4a43',
        uid: 4294967294,
        session,
      });
      assert.ok(isValidFdName(name), name);
      const parsed = parseHeldName(name)!;
      assert.equal(parsed.session, session);
      assert.equal(parsed.client, session.split('.')[0]);
      assert.equal(parsed.uid, 4294967294);
    }
    const state = parseHeldName(
      heldName({ role: 'state', boot: 'b', update: 'u-1', uid: 0, session: 'luod-internal' }),
    );
    assert.equal(state?.role, 'state');
  });

  test('names luod did not give are not trusted', () => {
    for (const bad of [
      'luod.in.b.u-1.0',
      'luod.gone.b.u-1.0.vm-a',
      'luod.in.b.u-1.x.vm-a',
      'luod.in.b.u-1.0.vm-a.0',
      'luod.in.b.u-1.0.vm-a.1.2',
      'luod.in.b.u-1.0.luod-internal',
      'luod.state.b.u-1.0.vm-a',
      'other.in.b.u-1.0.vm-a',
      'stored',
    ]) {
      assert.equal(parseHeldName(bad), null, bad);
    }
    assert.throws(() => heldName({ role: 'in', boot: 'a:b', update: 'u', uid: 0, session: 'x' }));
  });
});

describe('the state file', () => {
  const body: StateBody = {
    boot: 'emu1-2',
    phase: 'claiming',
    update: 'u-1',
    claimDeadline: 1_800_000_000_000,
    clients: [{ id: 'vm-a', uid: 0, sessions: ['vm-a'], claimed: false }],
    timeline: [{ phase: 'kexec', at: 1 }],
  };
  const file = path.join(dir, 'luod.sock.state.json');

  test('written atomically (no temporary file left, mode 0600) and read back', () => {
    writeStateFile(file, body);
    assert.deepEqual(readStateFile(file), body);
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    assert.deepEqual(
      fs.readdirSync(dir).filter((f) => f.includes('.tmp')),
      [],
    );
    fs.rmSync(file);
    assert.equal(readStateFile(file), null, 'no file: no update in progress');
  });

  test('torn, edited, foreign, invalid or huge files are reported with errno, sentence and path', () => {
    writeStateFile(file, body);
    const good = fs.readFileSync(file, 'utf8');
    const cases: [string, string | Buffer, string, RegExp][] = [
      ['torn', good.slice(0, good.length / 2), 'EBADMSG', /not valid JSON .*torn or damaged/],
      ['empty', '', 'EBADMSG', /not valid JSON/],
      ['edited', good.replace('"claimed":false', '"claimed":true'), 'EBADMSG', /does not match its SHA-256/],
      ['foreign', '{"format":"something-else"}', 'EINVAL', /not a luod-state-file-v1 file/],
      ['huge', Buffer.alloc(5 << 20, 0x20), 'EFBIG', /more than/],
    ];
    for (const [what, bytes, code, message] of cases) {
      fs.writeFileSync(file, bytes);
      assert.throws(
        () => readStateFile(file),
        (err: Error & { code: string }) =>
          err.code === code && message.test(err.message) && err.message.startsWith(`${file}: `),
        what,
      );
    }
    // A checksum that matches a body of the wrong shape: invalid, named.
    const wrongShape = { ...body, phase: 'dancing' };
    const sha = createHash('sha256').update(JSON.stringify(wrongShape)).digest('hex');
    fs.writeFileSync(file, JSON.stringify({ format: 'luod-state-file-v1', sha256: sha, body: wrongShape }));
    assert.throws(() => readStateFile(file), { code: 'EINVAL', message: /content is invalid \(phase: / });
    fs.rmSync(file);
  });

  test('the claims log: a line per claim; torn, damaged and foreign lines skipped; emptied on reset', () => {
    const two: StateBody = {
      ...body,
      clients: [
        { id: 'vm-a', uid: 0, sessions: ['vm-a'], claimed: false },
        { id: 'vm-b', uid: 0, sessions: ['vm-b'], claimed: false },
        { id: 'vm-c', uid: 0, sessions: ['vm-c'], claimed: false },
      ],
    };
    writeStateFile(file, two);
    const log = new ClaimsLog(file);
    log.append({ update: 'u-1', boot: 'emu1-2', client: 'vm-a', at: 10 });
    log.append({ update: 'u-0', boot: 'emu1-2', client: 'vm-b', at: 11 }); // another update
    log.append({ update: 'u-1', boot: 'emu0-1', client: 'vm-b', at: 12 }); // another boot
    log.append({ update: 'u-1', boot: 'emu1-2', client: 'vm-c', at: 13 });
    const good = fs.readFileSync(claimsLogPath(file), 'utf8');
    const lines = good.trimEnd().split('\n');
    assert.equal(lines.length, 4, 'one line per claim');
    // vm-c's line damaged (its client changed, its SHA-256 not), then a line torn by a kill.
    fs.writeFileSync(
      claimsLogPath(file),
      `${[...lines.slice(0, 3), lines[3]!.replace('vm-c', 'vm-b')].join('\n')}\n${lines[0]!.slice(0, 30)}`,
    );
    const read = readClaimsLog(file, two);
    assert.deepEqual(read.claims, [{ client: 'vm-a', at: 10 }]);
    assert.equal(read.skipped, 4);
    const applied = withLoggedClaims(readStateFile(file)!, read.claims);
    assert.deepEqual(
      applied.clients.map((c) => [c.id, c.claimed]),
      [
        ['vm-a', true],
        ['vm-b', false],
        ['vm-c', false],
      ],
      'only the good line of this update and boot counts: the others are offered again',
    );
    assert.deepEqual(applied.timeline.at(-1), { phase: 'claim', at: 10, client: 'vm-a' });
    assert.equal(fs.statSync(claimsLogPath(file)).mode & 0o777, 0o600);
    log.reset();
    assert.equal(fs.existsSync(claimsLogPath(file)), false);
    assert.deepEqual(readClaimsLog(file, two), { claims: [], skipped: 0 }, 'no log: no claims');
    fs.rmSync(file);
  });

  test('a restarted luod reports a corrupt state file, ignores it, and removes it', async () => {
    writeStateFile(file, body);
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace('vm-a', 'vm-z'));
    const errors: string[] = [];
    const log = pino({ level: 'error' }, { write: (line: string) => errors.push(line) });
    const keeper = new SessionKeeper({
      holder: new MemoryHolder(),
      stateFile: file,
      bootId: async () => 'b',
      log,
    });
    const recovered = await keeper.start();
    assert.equal(recovered.stateFileError?.code, 'EBADMSG');
    assert.equal(recovered.incoming, null, 'nothing held: nothing recovered from the file alone');
    assert.equal(errors.length, 1);
    assert.match(errors[0]!, /"code":"EBADMSG"/);
    assert.ok(errors[0]!.includes(file));
    assert.equal(fs.existsSync(file), false);
  });
});

describe('what a restarted luod takes back', () => {
  test('an `in` fd of an earlier boot is dropped, not served to a CLAIM; one of this boot is kept', async () => {
    // Real (emulated) sessions: a keeper that kept the old one would adopt it without complaint.
    const stateDir = path.join(dir, 'emu-leftover');
    const device = emulatedKernel(stateDir).openDevice();
    const holder = new MemoryHolder();
    const errors: string[] = [];
    const log = pino({ level: 'error' }, { write: (line: string) => errors.push(line) });
    try {
      const stale = heldName({ role: 'in', boot: 'old-boot', update: 'u-1', uid: 0, session: 'vm-old' });
      const current = heldName({ role: 'in', boot: 'this-boot', update: 'u-1', uid: 0, session: 'vm-new' });
      for (const [name, session] of [
        [stale, device.createSession('vm-old')],
        [current, device.createSession('vm-new')],
      ] as const) {
        await holder.hold(name, session);
        session.close();
      }
      device.close();
      const keeper = new SessionKeeper({
        holder,
        stateFile: path.join(dir, 'leftover.state.json'),
        bootId: async () => 'this-boot',
        log,
      });
      const recovered = await keeper.start();
      assert.deepEqual(
        recovered.incoming?.clients.map((c) => c.id),
        ['vm-new'],
        'only the session of this boot is offered',
      );
      assert.deepEqual([...holder.held.keys()], [current], 'the leftover is released by the holder');
      assert.ok(
        errors.some((line) => line.includes(stale) && /dropping it/.test(line)),
        errors.join('\n'),
      );
      for (const c of recovered.incoming?.clients ?? []) for (const session of c.sessions) session.close();
    } finally {
      for (const fd of holder.held.values()) fd.close();
      await stopEmulator(statePaths(stateDir)).catch(() => {});
    }
  });
});

describe('kexec mode', () => {
  const version = (v: string | undefined) => () => v;
  test('explicit and automatic choices', () => {
    assert.equal(
      chooseKexecMode('standalone', { underSystemd: true, systemctlVersion: version('systemd 262') }).mode,
      'standalone',
    );
    assert.throws(
      () => chooseKexecMode('systemd', { underSystemd: false, systemctlVersion: version(undefined) }),
      {
        code: 'EINVAL',
      },
    );
    assert.equal(
      chooseKexecMode('auto', { underSystemd: false, systemctlVersion: version('systemd 262') }).mode,
      'standalone',
    );
    const old = chooseKexecMode('auto', {
      underSystemd: true,
      systemctlVersion: version('systemd 252 (252.38)'),
    });
    assert.equal(old.mode, 'standalone');
    assert.match(old.why, /systemd 252 does not carry fd stores through kexec/);
    assert.equal(
      chooseKexecMode('auto', { underSystemd: true, systemctlVersion: version('systemd 261') }).mode,
      'systemd',
    );
    assert.equal(
      chooseKexecMode('auto', { underSystemd: true, systemctlVersion: version(undefined) }).mode,
      'standalone',
    );
  });
});

describe('the holder process', () => {
  const sessionOf = (pid: number) =>
    Number(fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[3]);
  const alive = (pid: number) =>
    fs.existsSync(`/proc/${pid}`) && !/\) Z /.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));

  test('runs in its own session, is restarted with luod copies when it dies, gives them back, exits when idle', async () => {
    const socketPath = path.join(dir, 'h.sock.holder');
    const luod = new HolderProcess(socketPath, silent);
    const memfd = memfdWith('guest memory');
    const source = {
      get fd() {
        return memfd.fd;
      },
      get closed() {
        return memfd.closed;
      },
    };
    try {
      assert.deepEqual(await luod.takeBack(), [], 'no holder yet: nothing held');
      assert.equal(luod.lastStartedPid, undefined, 'none started before luod listens');
      luod.warm();
      const first = luod.lastStartedPid!;
      assert.notEqual(
        sessionOf(first),
        sessionOf(process.pid),
        'not in luod session: a signal to it does not reach the holder',
      );
      await luod.hold('luod.in.b.u-1.0.vm-a', source);
      process.kill(first, 'SIGKILL');
      await waitUntil(() => luod.lastStartedPid !== first && alive(luod.lastStartedPid!), 'a new holder');
      // A restarted luod (another connection) finds the fd in the new holder.
      const restarted = new HolderProcess(socketPath, silent);
      const back = (await waitUntil(async () => {
        const items = await restarted.takeBack();
        if (items.length === 0) return undefined;
        return items;
      }, 'the new holder got the copy again'))!;
      assert.deepEqual(
        back.map((h) => h.name),
        ['luod.in.b.u-1.0.vm-a'],
      );
      assert.equal(contents(back[0]!.fd), 'guest memory');
      for (const h of back) h.fd.close();
      await luod.release('luod.in.b.u-1.0.vm-a');
      const second = luod.lastStartedPid!;
      luod.close();
      restarted.close();
      await waitUntil(() => !alive(second), 'the holder exits: nothing held, no luod');
    } finally {
      memfd.close();
      luod.close();
    }
  });

  test('hands many fds back in batches of up to SCM_MAX_FD, and one by one to a luod that asks so', async () => {
    const socketPath = path.join(dir, 'b.sock.holder');
    const luod = new HolderProcess(socketPath, silent);
    const COUNT = 600; // more than two batches of 253
    const memfds = Array.from({ length: COUNT }, (_, i) => memfdWith(`vm-${i}`));
    const name = (i: number) => `luod.in.b.u-1.0.vm-${i}`;
    try {
      for (let i = 0; i < COUNT; i += 50)
        await Promise.all(
          memfds.slice(i, i + 50).map((fd, j) => luod.hold(name(i + j), { fd: fd.fd, closed: false })),
        );
      // What a restarted luod gets: every fd, under its name, in the order held.
      const restarted = new HolderProcess(socketPath, silent);
      const back = await restarted.takeBack();
      try {
        assert.equal(back.length, COUNT);
        assert.deepEqual(
          back.map((h) => h.name),
          memfds.map((_, i) => name(i)),
        );
        for (const [i, h] of back.entries()) assert.equal(contents(h.fd), `vm-${i}`);
      } finally {
        for (const h of back) h.fd.close();
        restarted.close();
      }
      // A luod older than batches sends `list` alone: one `item` line per fd, as before.
      const old = LineChannel.connect(socketPath, { maxFdsPerLine: 1 });
      const lines: { op: string; fds: number }[] = [];
      const replied = new Promise<void>((resolve) =>
        old.on('message', (value, fds) => {
          for (const fd of fds) fd.close();
          const op = String((value as { op?: unknown }).op);
          lines.push({ op, fds: fds.length });
          if ((value as { ok?: unknown }).ok === true) resolve();
        }),
      );
      await old.send({ op: 'list' });
      await replied;
      old.close();
      assert.equal(lines.length, COUNT + 1);
      assert.ok(lines.slice(0, COUNT).every((l) => l.op === 'item' && l.fds === 1));
      for (let i = 0; i < COUNT; i += 100)
        await Promise.all(memfds.slice(i, i + 100).map((_, j) => luod.release(name(i + j))));
    } finally {
      for (const fd of memfds) fd.close();
      luod.close();
    }
  });

  test('drops an fd whose peer hung up (an emulated session whose kernel went away)', async () => {
    const socketPath = path.join(dir, 'd.sock.holder');
    const luod = new HolderProcess(socketPath, silent);
    const [mine, peer] = socketpair('seqpacket');
    try {
      await luod.hold('luod.in.b.u-1.0.vm-a', { fd: mine.fd, closed: false });
      mine.close();
      peer.close();
      await waitUntil(async () => {
        const items = await luod.takeBack();
        for (const h of items) h.fd.close();
        return items.length === 0;
      }, 'the dead fd dropped');
    } finally {
      luod.close();
    }
  });
});

test('isClientId (held names) and the clientId schema (commands) agree on any string', () => {
  const idChars = fc.constantFrom(...'abcXYZ019_-.:/ é'.split(''));
  const near = fc.oneof(
    fc.string(),
    fc.string({ unit: idChars, maxLength: MAX_ID_LENGTH + 3 }),
    fc.constantFrom('', INTERNAL_SESSION, 'a'.repeat(MAX_ID_LENGTH), 'a'.repeat(MAX_ID_LENGTH + 1), 'vm-1'),
  );
  let accepted = 0;
  fc.assert(
    fc.property(near, (text) => {
      const ok = isClientId(text);
      if (ok) accepted++;
      assert.equal(ok, clientId.safeParse(text).success, JSON.stringify(text));
    }),
    { numRuns: 3000 },
  );
  assert.ok(accepted > 100, `the check accepted ids too (${accepted}): it can fail both ways`);
});
