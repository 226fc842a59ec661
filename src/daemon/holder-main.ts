#!/usr/bin/env node
/**
 * luod-holder: keeps copies of luod's session fds on hosts without systemd,
 * so that a luod killed at any moment loses no session (fd-holder.ts).
 *
 * Lifecycle:
 *  1. luod starts it detached (its own session and process group: a signal
 *     to luod's group does not reach it) with `--socket PATH`, the
 *     well-known path next to luod's socket. A live holder already there
 *     wins: this one exits.
 *  2. luod connects and sends, one JSON line each: `hold` (name, one fd
 *     attached: the holder keeps it), `release` (name), `list` (every held
 *     fd comes back as an `item` line with its fd, then the reply; with
 *     `batch: N`, as `items` lines of up to N names and their fds, in order),
 *     `release-many` (names: one reply for them all; an older holder answers
 *     ENOTSUP, and luod sends one `release` per name instead), `hold-many`
 *     (names, one fd each in the same order, up to 16: one reply; ENOTSUP
 *     from an older holder, and luod sends one `hold` per name instead).
 *     A request with `events: true` marks a luod that takes `event` lines
 *     (level, pid, code, message: what went wrong in the holder), sent
 *     between replies; an older luod never gets one.
 *  3. luod dies: the holder keeps everything; the next luod connects, lists,
 *     and carries on.
 *  4. The holder drops an fd whose peer hung up (POLLHUP: an emulated
 *     session whose kernel went away; a real LUO session never reports it),
 *     and exits when it holds nothing and no luod is connected.
 * Only its own uid (and root) may connect: it hands out session fds.
 *
 * It must not die while it holds anything: its death closes every copy, and
 * a luod killed before it has given a new holder its fds again loses them.
 * So no error of its own ends it: the periodic sweep and every handler
 * report what failed to each connected luod (an `event` line with the errno
 * name and a sentence, which luod logs) and the holder carries on. (Once a
 * poll(2) interrupted by a signal, EINTR, escaped the sweep and killed it
 * under a sampling profiler: docs/operations.md.)
 */
import * as fs from 'node:fs';
import { LineChannel } from '../protocol/lines.js';
import { errorCode } from '../sys/error.js';
import type { OwnedFd } from '../sys/fd.js';
import { peersClosed } from '../sys/mm.js';
import { MAX_FDS_PER_MESSAGE } from '../sys/socket.js';
import { UnixServer, UnixSocket } from '../sys/unix-socket.js';

/** How long a fresh holder waits for its first luod before giving up. */
const FIRST_CONNECTION_MS = 15_000;
/** How often dead fds are looked for ($LUOKIT_HOLDER_SWEEP_MS: tests run many sweeps in a short time). */
const SWEEP_MS =
  Number(process.env.LUOKIT_HOLDER_SWEEP_MS) > 0 ? Number(process.env.LUOKIT_HOLDER_SWEEP_MS) : 1000;

function argument(name: string): string {
  const i = process.argv.indexOf(name);
  const value = i >= 0 ? process.argv[i + 1] : undefined;
  if (!value) {
    process.stderr.write(`luod-holder: EINVAL: ${name} PATH is required\n`);
    process.exit(2);
  }
  return value;
}

const socketPath = argument('--socket');
const held = new Map<string, OwnedFd>();
const connections = new Set<LineChannel>();
let everConnected = false;
const started = Date.now();
/** The inode of the socket file this holder bound: it removes the path only while it is still its own. */
let boundInode: number | null = null;

/** Tell every connected luod (its log has the line); the holder itself has no log. */
function report(level: 'warn' | 'error', code: string, message: string): void {
  for (const channel of connections)
    if (listening.has(channel))
      void channel.send({ op: 'event', level, pid: process.pid, code, message }).catch(() => {});
}

/** Connections whose luod said it takes `event` lines (`events: true` on a request): an older one would take them for replies. */
const listening = new WeakSet<LineChannel>();

function drop(name: string): void {
  held.get(name)?.close();
  held.delete(name);
}

function listenOnce(): UnixServer | null {
  if (fs.existsSync(socketPath)) {
    try {
      UnixSocket.connect(socketPath).close();
      return null; // a live holder owns the path
    } catch {
      fs.rmSync(socketPath, { force: true });
    }
  }
  const previous = process.umask(0o077);
  try {
    const server = UnixServer.listen(socketPath);
    boundInode = fs.statSync(socketPath).ino;
    return server;
  } finally {
    process.umask(previous);
  }
}

function exit(): void {
  for (const name of [...held.keys()]) drop(name);
  // A holder that lost its path to another (one started while this one was
  // slow to listen) must not remove the other's: that one may hold everything.
  try {
    if (fs.statSync(socketPath).ino === boundInode) fs.rmSync(socketPath, { force: true });
  } catch {
    // gone already
  }
  process.exit(0);
}

function serve(channel: LineChannel): void {
  const me = process.getuid?.() ?? 0;
  let peer: ReturnType<typeof channel.socket.peerCredentials>;
  try {
    peer = channel.socket.peerCredentials();
  } catch {
    channel.close(); // gone already
    return;
  }
  if (peer.uid !== me && peer.uid !== 0) {
    channel
      .send({ ok: false, error: { code: 'EPERM', message: `the holder serves uid ${me} only` } })
      .catch(() => {})
      .finally(() => channel.close());
    return;
  }
  everConnected = true;
  connections.add(channel);
  channel.on('close', () => {
    connections.delete(channel);
    check();
  });
  channel.on('malformed', (reason) => {
    void channel.send({ ok: false, error: { code: reason.code, message: reason.message } }).catch(() => {});
  });
  channel.on('message', (value, fds) => {
    const message = value as { op?: unknown; name?: unknown; events?: unknown };
    if (message.events === true) listening.add(channel);
    const name = typeof message.name === 'string' ? message.name : '';
    const reply = (body: object) => channel.send({ op: message.op, ...body }).catch(() => {});
    switch (message.op) {
      case 'hold':
        if (fds.length !== 1 || name === '') {
          for (const fd of fds) fd.close();
          void reply({
            ok: false,
            error: { code: 'EINVAL', message: 'hold takes a name and exactly one fd' },
          });
          return;
        }
        drop(name);
        held.set(name, fds[0]!);
        void reply({ ok: true, name });
        return;
      case 'hold-many': {
        // Many holds in one line (a luod batches those of one turn of its event loop):
        // the names in the order of the fds.
        const names = (message as { names?: unknown }).names;
        if (
          !Array.isArray(names) ||
          names.length !== fds.length ||
          !names.every((n) => typeof n === 'string' && n !== '')
        ) {
          for (const fd of fds) fd.close();
          void reply({
            ok: false,
            error: { code: 'EINVAL', message: 'hold-many takes `names`, one name per fd, in order' },
          });
          return;
        }
        for (let i = 0; i < fds.length; i++) {
          drop(names[i] as string);
          held.set(names[i] as string, fds[i]!);
        }
        void reply({ ok: true, count: fds.length });
        return;
      }
      case 'release':
        for (const fd of fds) fd.close();
        drop(name);
        void reply({ ok: true, name });
        return;
      case 'release-many': {
        // Many releases in one line (a luod batches those of one turn of its event loop).
        for (const fd of fds) fd.close();
        const names = (message as { names?: unknown }).names;
        if (!Array.isArray(names) || !names.every((n) => typeof n === 'string' && n !== '')) {
          void reply({
            ok: false,
            error: { code: 'EINVAL', message: 'release-many takes `names`, a list of names' },
          });
          return;
        }
        for (const n of names as string[]) drop(n);
        void reply({ ok: true, count: names.length });
        return;
      }
      case 'list': {
        for (const fd of fds) fd.close();
        const batch = (message as { batch?: unknown }).batch;
        if (Number.isInteger(batch) && (batch as number) > 1) {
          for (const group of batches([...held], Math.min(batch as number, MAX_FDS_PER_MESSAGE)))
            void channel
              .send(
                { op: 'items', names: group.map(([n]) => n) },
                group.map(([, fd]) => fd),
              )
              .catch(() => {});
        } else {
          for (const [n, fd] of held) void channel.send({ op: 'item', name: n }, [fd]).catch(() => {});
        }
        void reply({ ok: true, count: held.size });
        return;
      }
      default:
        for (const fd of fds) fd.close();
        void reply({
          ok: false,
          error: { code: 'ENOTSUP', message: 'unknown op' },
        });
    }
  });
}

/** Names one `items` line carries at most, in bytes: far below the line limit (64 KiB). */
const BATCH_NAME_BYTES = 32 * 1024;

/**
 * `list` with `batch: N` (a luod that takes batches): the held fds in groups
 * of at most N (and the kernel's SCM_MAX_FD), one sendmsg each instead of one
 * per fd: a thousand sessions come back to a restarted luod in four messages.
 */
function batches<T extends [string, OwnedFd]>(entries: T[], size: number): T[][] {
  const out: T[][] = [];
  let group: T[] = [];
  let bytes = 0;
  for (const entry of entries) {
    if (group.length > 0 && (group.length >= size || bytes + entry[0].length + 3 > BATCH_NAME_BYTES)) {
      out.push(group);
      group = [];
      bytes = 0;
    }
    group.push(entry);
    bytes += entry[0].length + 3;
  }
  if (group.length > 0) out.push(group);
  return out;
}

/** Drop the fds nobody can use any more; exit when there is nothing left to do. */
function check(): void {
  try {
    const byFd = new Map([...held].map(([name, fd]) => [fd.fd, name]));
    for (const fd of peersClosed([...byFd.keys()])) drop(byFd.get(fd)!);
  } catch (err) {
    // Dropping dead fds can wait for the next sweep; the live ones must not go.
    report(
      'warn',
      errorCode(err),
      `the sweep for dead fds failed (it runs again in ${SWEEP_MS} ms): ${(err as Error).message}`,
    );
  }
  if (held.size > 0 || connections.size > 0) return;
  if (everConnected || Date.now() - started > FIRST_CONNECTION_MS) exit();
}

const server = listenOnce();
if (server === null) process.exit(0);
server.on('connection', (socket) => serve(new LineChannel(socket)));
process.on('SIGHUP', () => {});
process.on('SIGINT', () => {});
process.on('SIGTERM', exit);
// The holder's state is a map of fds, consistent between any two calls: carrying on
// after a bug keeps every session's copy; exiting would close them all.
process.on('uncaughtException', (err) => {
  report(
    'error',
    errorCode(err),
    `the fd holder caught an error it did not expect and carries on: ${err.message}`,
  );
});
setInterval(check, SWEEP_MS);
