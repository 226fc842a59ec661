/**
 * The emulated kernel's process: sockets in, LUO semantics out.
 *
 * Every device open and every session is its own SOCK_SEQPACKET
 * connection, so the caller holds real fds whose lifetime is the kernel's:
 * EOF on a connection is the release of the last reference (docs/emulator.md).
 * Requests are handled one at a time on the event loop, which stands in for
 * the kernel's locks. Nothing a client sends can crash the process: a
 * malformed message gets an EPROTO reply, and every handler is guarded.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import type { Logger } from 'pino';
import { writeFileAtomic } from '../../../sys/atomic-file.js';
import { Errno, errnoName, errnoNumber } from '../../../sys/errno.js';
import { SysError } from '../../../sys/error.js';
import type { OwnedFd } from '../../../sys/fd.js';
import { peersClosed } from '../../../sys/mm.js';
import { socketpair } from '../../../sys/socket.js';
import { UnixServer, UnixSocket } from '../../../sys/unix-socket.js';
import type { StatePaths } from '../paths.js';
import {
  decodeRequest,
  encodeReply,
  KIND_FROZEN_QUERY,
  KIND_IOCTL,
  KIND_SYNC,
  ProtocolError,
} from '../protocol.js';
import { deviceIoctl, type IoctlOutcome, sessionIoctl } from './dispatch.js';
import { KernelError } from './errors.js';
import type { EmuSession, Luo } from './luo.js';
import { checkEmulatedVersion } from './versions.js';

const EPROTO = 71;

export interface KernelIdentity {
  version: string;
  bootId: number;
  liveupdateNum: number;
}

/** What the reboot path (kexec.ts) provides: serialize on the way down, restore on the way up. */
export interface RebootHooks {
  /** Freeze and write the handover; throws KernelError when the kernel would refuse to reboot. */
  serialize(luo: Luo, identity: KernelIdentity, nextVersion: string): void;
  /** Boot `version`: rebuild the incoming sessions from the handover bytes only. */
  boot(
    version: string,
    identity: KernelIdentity | null,
  ): { luo: Luo; identity: KernelIdentity; report: BootReport };
}

export interface BootReport {
  outcome: 'cold' | 'restored' | 'handover-ignored' | 'panic';
  detail: string;
  sessions: number;
}

export class EmulatorServer {
  readonly paths: StatePaths;
  readonly #log: Logger;
  readonly #hooks: RebootHooks;
  #luo: Luo;
  #identity: KernelIdentity;
  #boot: BootReport;
  /** Every connection of the running kernel, dropped at kexec as processes die in a real one. */
  #connections = new Map<UnixSocket, () => void>();
  #device: UnixServer | null = null;
  #query: UnixServer | null = null;
  #control: net.Server | null = null;
  readonly #controlConnections = new Set<net.Socket>();
  #stopping = false;
  /** Set while connections are dropped wholesale (kexec, stop): their release must not touch the new kernel. */
  #dropping = false;

  constructor(paths: StatePaths, hooks: RebootHooks, version: string, log: Logger) {
    this.paths = paths;
    this.#log = log;
    this.#hooks = hooks;
    const booted = hooks.boot(version, readIdentity(paths));
    this.#luo = booted.luo;
    this.#identity = booted.identity;
    this.#boot = booted.report;
    writeIdentity(paths, this.#identity, this.#boot);
    log.info({ kernel: this.#identity, boot: this.#boot }, 'emulated kernel booted');
  }

  /**
   * Listen on all three sockets. query.sock comes last: clients take its
   * existence as "the emulator is ready", so everything else must be up.
   */
  async listen(): Promise<void> {
    for (const path of [this.paths.deviceSocket, this.paths.querySocket, this.paths.controlSocket]) {
      fs.rmSync(path, { force: true });
    }
    const control = net.createServer((conn) => this.#onControl(conn));
    this.#control = control;
    await new Promise<void>((resolve, reject) => {
      control.once('error', reject);
      control.listen(this.paths.controlSocket, () => resolve());
    });
    this.#device = UnixServer.listen(this.paths.deviceSocket, { type: 'seqpacket' });
    this.#device.on('connection', (sock) => this.#guard('device open', () => this.#onDeviceOpen(sock)));
    this.#device.on('error', (err) => this.#log.warn({ err }, 'device socket'));
    this.#query = UnixServer.listen(this.paths.querySocket, { type: 'seqpacket' });
    this.#query.on('connection', (sock) => this.#onQueryConnection(sock));
  }

  async close(): Promise<void> {
    this.#stopping = true;
    this.#dropConnections();
    this.#luo.shutdown();
    this.#device?.close();
    this.#query?.close();
    for (const conn of this.#controlConnections) conn.destroy();
    await new Promise<void>((resolve) => (this.#control ? this.#control.close(() => resolve()) : resolve()));
    for (const path of [this.paths.deviceSocket, this.paths.querySocket, this.paths.controlSocket]) {
      fs.rmSync(path, { force: true });
    }
  }

  #guard(what: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.#log.error({ err }, `${what} failed`);
    }
  }

  #track(sock: UnixSocket, onRelease: () => void): void {
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.#connections.delete(sock);
      sock.close();
      if (!this.#dropping && !this.#stopping) this.#guard('release', onRelease);
    };
    this.#connections.set(sock, release);
    sock.on('end', release);
    sock.on('close', release);
    sock.on('error', (err) => this.#log.debug({ err }, 'connection error'));
  }

  /**
   * Release every connection whose peer already closed. The kernel releases
   * a file when its last fd closes, before the caller's next syscall; our
   * event loop may not have read that EOF yet, so requests whose answer
   * depends on it (an exclusive open, a name or file still in use) reap first.
   */
  #reapClosed(): void {
    const byFd = new Map<number, UnixSocket>();
    for (const sock of this.#connections.keys()) if (!sock.closed) byFd.set(sock.fd, sock);
    for (const fd of peersClosed([...byFd.keys()])) this.#connections.get(byFd.get(fd)!)?.();
  }

  #onDeviceOpen(sock: UnixSocket): void {
    if (this.#boot.outcome === 'panic') {
      sock.close();
      return;
    }
    this.#reapClosed();
    try {
      this.#luo.openDevice();
    } catch (err) {
      const errno = err instanceof KernelError ? err.errno : err instanceof SysError ? err.errno : Errno.EIO;
      void sock
        .send(encodeReply({ kind: KIND_IOCTL, result: -errno, arg: Buffer.alloc(0) }))
        .finally(() => sock.close());
      return;
    }
    const luo = this.#luo;
    this.#track(sock, () => luo.releaseDevice());
    sock.on('data', (data, fds) => this.#onRequest(sock, data, fds, (raw) => deviceIoctl(luo, raw)));
    void sock.send(encodeReply({ kind: KIND_IOCTL, result: 0, arg: Buffer.alloc(0) })).catch(() => {});
  }

  #onSession(sock: UnixSocket, session: EmuSession): void {
    const luo = this.#luo;
    this.#track(sock, () =>
      session.kind === 'outgoing' ? luo.releaseOutgoing(session) : luo.releaseIncoming(session),
    );
    sock.on('data', (data, fds) =>
      this.#onRequest(sock, data, fds, (raw) => sessionIoctl(luo, session, raw)),
    );
  }

  #onRequest(
    sock: UnixSocket,
    data: Buffer,
    fds: OwnedFd[],
    handle: (raw: Parameters<typeof deviceIoctl>[1]) => IoctlOutcome,
  ): void {
    let kind = KIND_IOCTL;
    let outcome: IoctlOutcome | undefined;
    let result = 0;
    try {
      const req = decodeRequest(data);
      kind = req.kind;
      if (req.kind !== KIND_IOCTL) throw new ProtocolError(`kind ${req.kind} is not valid on this socket`);
      this.#reapClosed();
      if (fds.length > 1) throw new ProtocolError(`${fds.length} fds attached; at most one is allowed`);
      outcome = handle({
        request: req.request,
        flags: req.flags,
        arg: Buffer.from(req.arg),
        file: fds[0] ?? null,
      });
      fds.length = 0;
    } catch (err) {
      for (const fd of fds) fd.close();
      result = this.#errnoOf(err);
    }
    this.#reply(sock, kind, result, outcome);
  }

  #reply(sock: UnixSocket, kind: number, result: number, outcome: IoctlOutcome | undefined): void {
    const arg = outcome?.arg ?? Buffer.alloc(0);
    let sessionEnd: OwnedFd | undefined;
    let toSend: OwnedFd | undefined = outcome?.fd?.file;
    if (outcome?.session) {
      const [kernelEnd, userEnd] = socketpair('seqpacket');
      this.#onSession(new UnixSocket(kernelEnd, 'seqpacket'), outcome.session);
      sessionEnd = userEnd;
      toSend = userEnd;
    }
    const reply = encodeReply({ kind, result, arg });
    const sent = sock
      .send(reply, toSend ? [toSend] : [])
      .catch((err) => this.#log.debug({ err }, 'reply not delivered'));
    // Our copy of the caller's session end must go as soon as the kernel has
    // duplicated it into the message: while it is open, a close by the
    // caller is invisible to #reapClosed and the session would seem alive.
    if (sock.pendingBytes === 0) sessionEnd?.close();
    else void sent.finally(() => sessionEnd?.close());
  }

  #errnoOf(err: unknown): number {
    if (err instanceof KernelError) return -err.errno;
    if (err instanceof ProtocolError) {
      this.#log.warn({ reason: err.message }, 'malformed request');
      return -EPROTO;
    }
    const code = (err as { errno?: unknown }).errno;
    this.#log.error({ err }, 'request failed unexpectedly');
    return typeof code === 'number' && code > 0 ? -code : -Errno.EIO;
  }

  #onQueryConnection(sock: UnixSocket): void {
    sock.on('data', (data, fds) => {
      let result = 0;
      let kind = KIND_FROZEN_QUERY;
      try {
        const req = decodeRequest(data);
        kind = req.kind;
        // A file's release by a process that just closed its last fd (or exited) happens
        // before that process's next system call: every answer here sees it.
        this.#reapClosed();
        if (req.kind === KIND_SYNC && fds.length === 0) {
          result = 0;
        } else if (req.kind === KIND_FROZEN_QUERY && fds.length === 1) {
          result = this.#luo.sizeFrozen(fds[0]!) ? 1 : 0;
        } else {
          throw new ProtocolError('expected FROZEN_QUERY with one fd or SYNC with none');
        }
      } catch (err) {
        result = this.#errnoOf(err);
      }
      for (const fd of fds) fd.close();
      void sock.send(encodeReply({ kind, result, arg: Buffer.alloc(0) })).catch(() => {});
    });
    sock.on('end', () => sock.close());
    sock.on('error', () => sock.close());
  }

  /** The state a `luoctl emu status` shows. */
  status(): object {
    return {
      pid: process.pid,
      kernel: this.#identity,
      boot: this.#boot,
      deviceOpen: this.#luo.deviceOpen,
      outgoing: this.#luo.outgoing.map((s) => ({
        name: Buffer.from(s.name, 'latin1').toString('utf8'),
        nameHex: Buffer.from(s.name, 'latin1').toString('hex'),
        files: s.files.map((f) => ({
          token: f.token.toString(),
          compatible: f.compatible,
          size: f.memfd.record.size,
        })),
      })),
      incoming: this.#luo.incoming.map((s) => ({
        name: Buffer.from(s.name, 'latin1').toString('utf8'),
        nameHex: Buffer.from(s.name, 'latin1').toString('hex'),
        retrieved: s.retrieved,
        files: s.files.length,
      })),
    };
  }

  /**
   * The emulated kexec: serialize (a refusal leaves everything running and
   * is returned as the kernel's errno), then drop every connection and boot
   * the next kernel from the handover bytes alone.
   */
  kexec(
    nextVersion: string,
  ): { ok: true; boot: BootReport; kernel: KernelIdentity } | { ok: false; errno: string; message: string } {
    try {
      // Before anything is serialized: past this point the old kernel is gone, so a next
      // kernel that cannot boot would leave no kernel at all.
      checkEmulatedVersion(nextVersion);
      this.#hooks.serialize(this.#luo, this.#identity, nextVersion);
    } catch (err) {
      const errno = err instanceof KernelError ? err.errno : err instanceof SysError ? err.errno : Errno.EIO;
      this.#log.warn({ err, errno: errnoName(errno) }, 'kexec refused');
      return {
        ok: false,
        errno: errnoName(errno),
        message: err instanceof Error ? err.message : String(err),
      };
    }
    this.#dropConnections();
    this.#luo.shutdown();
    const booted = this.#hooks.boot(nextVersion, this.#identity);
    this.#luo = booted.luo;
    this.#identity = booted.identity;
    this.#boot = booted.report;
    writeIdentity(this.paths, this.#identity, this.#boot);
    this.#log.info({ kernel: this.#identity, boot: this.#boot }, 'emulated kexec: next kernel booted');
    return { ok: true, boot: this.#boot, kernel: this.#identity };
  }

  #dropConnections(): void {
    const all = [...this.#connections.keys()];
    this.#connections.clear();
    this.#dropping = true;
    for (const sock of all) sock.close();
    this.#dropping = false;
  }

  #onControl(conn: net.Socket): void {
    let buffered = '';
    this.#controlConnections.add(conn);
    conn.on('close', () => this.#controlConnections.delete(conn));
    conn.setEncoding('utf8');
    conn.on('error', () => conn.destroy());
    conn.on('data', (chunk: string) => {
      buffered += chunk;
      if (buffered.length > 64 * 1024) {
        conn.end(
          `${JSON.stringify({ ok: false, error: { code: 'E2BIG', message: 'request too large' } })}\n`,
        );
        return;
      }
      let newline = buffered.indexOf('\n');
      while (newline >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        conn.write(`${JSON.stringify(this.#control_(line))}\n`);
        newline = buffered.indexOf('\n');
      }
    });
  }

  #control_(line: string): object {
    let msg: { cmd?: unknown; to?: unknown; op?: unknown; errno?: unknown };
    try {
      msg = JSON.parse(line);
    } catch {
      return { ok: false, error: { code: 'EINVAL', message: 'not JSON' } };
    }
    switch (msg.cmd) {
      case 'status':
        return { ok: true, ...this.status() };
      case 'kexec': {
        const to = typeof msg.to === 'string' ? msg.to : this.#identity.version;
        const result = this.kexec(to);
        return result.ok ? result : { ok: false, error: { code: result.errno, message: result.message } };
      }
      case 'fault': {
        // Fault injection: the next file retrieve fails with this errno (and keeps failing, as in the kernel).
        const errno = typeof msg.errno === 'string' ? errnoNumber(msg.errno) : undefined;
        if (msg.op !== 'retrieve-fd' || errno === undefined) {
          return {
            ok: false,
            error: { code: 'EINVAL', message: 'fault needs op "retrieve-fd" and an errno name' },
          };
        }
        this.#luo.injectRetrieveFault(errno);
        return { ok: true };
      }
      case 'stop':
        if (!this.#stopping) setImmediate(() => this.#onStop?.());
        return { ok: true };
      default:
        return {
          ok: false,
          error: { code: 'EINVAL', message: `unknown command ${JSON.stringify(msg.cmd)}` },
        };
    }
  }

  #onStop: (() => void) | undefined;

  onStop(fn: () => void): void {
    this.#onStop = fn;
  }
}

function readIdentity(paths: StatePaths): KernelIdentity | null {
  try {
    const parsed = JSON.parse(fs.readFileSync(paths.kernelFile, 'utf8'));
    return parsed?.kernel ?? null;
  } catch {
    return null;
  }
}

/** Written atomically: a reader never sees half a file. */
function writeIdentity(paths: StatePaths, identity: KernelIdentity, boot: BootReport): void {
  writeFileAtomic(paths.kernelFile, `${JSON.stringify({ kernel: identity, boot }, null, 2)}\n`);
}
