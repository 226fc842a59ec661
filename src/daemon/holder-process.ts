/**
 * luod's side of the holder process (holder-main.ts), the FdHolder of hosts
 * without systemd.
 *
 * Supervision: luod connects to the holder at the well-known path next to
 * its socket, starting one when none answers. If the connection drops while
 * luod runs, luod connects again (to the same holder when it still runs,
 * else to a new one it starts) and gives it a copy of every fd it still
 * holds, so a holder that died holding fds costs nothing as long as luod
 * lives (and luod dying as long as the holder lives).
 *
 * Liveness is the connection, never a clock: the holder's death closes its
 * end (the kernel does it, however the process ends), and nothing else
 * does. A holder that is slow (starved of CPU, stopped) is waited for, with
 * a warning naming its pid and state every `slowAfterMs`; a timeout would
 * take a slow holder for a dead one and abort an update for nothing.
 *
 * Every way the connection can end (docs/operations.md, "When the holder's
 * connection fails"), all handled the same way:
 *  - the holder exited or was killed: EOF or ECONNRESET; /proc says it is gone;
 *  - a send or receive failed on luod's side (ENOBUFS, ENOMEM, EMSGSIZE when
 *    luod cannot take the fds it is sent...): luod closes it, the holder runs on;
 *  - the holder closed it after a line it could not parse (a bug): EOF, it runs on.
 * The log says which (errno name, sentence, the holder's pid and whether it
 * still runs). Holds and releases that were on their way are sent again on
 * the next connection (both are idempotent: a name's last operation wins),
 * so an update does not fail because its holder was replaced; only a holder
 * that cannot be reached LOST_CONNECTIONS times in a row fails them.
 */
import { spawn } from 'node:child_process';
import type { Logger } from 'pino';
import { type ChannelCloseReason, LineChannel, MAX_FDS_PER_LINE } from '../protocol/lines.js';
import { Errno } from '../sys/errno.js';
import { CodedError, errorCode, SysError } from '../sys/error.js';
import type { OwnedFd } from '../sys/fd.js';
import { dup } from '../sys/file.js';
import { describeState, type ProcessStatus, processStatus, stillRunning } from '../sys/proc.js';
import { MAX_FDS_PER_MESSAGE } from '../sys/socket.js';
import { type FdHolder, type FdSource, type HeldFd, settleAll } from './fd-holder.js';

/** Where the holder of the luod listening at `luodSocket` listens. */
export function holderSocketPath(luodSocket: string): string {
  return `${luodSocket}.holder`;
}

/** The holder hands fds back up to the kernel's SCM_MAX_FD per line (holder-main.ts `items`). */
const CHANNEL = { maxFdsPerLine: MAX_FDS_PER_MESSAGE };

/** Holds sent again to a new holder before their replies are awaited. */
const REHOLDS_IN_FLIGHT = 64;

/** Bytes of names one `release-many` line carries at most: far below the holder's line limit (64 KiB). */
const RELEASE_NAME_BYTES = 16 * 1024;

/**
 * fds one `hold-many` line carries at most: what every holder's channel
 * takes on a line (its default, luod's protocol limit), so a holder older
 * than `hold-many` reads the line whole and answers ENOTSUP rather than
 * taking it for a malformed one.
 */
const HOLD_MANY_FDS = MAX_FDS_PER_LINE;

/**
 * How long a holder luod started may take to listen before luod warns (and
 * warns again). It is waited for as long as it runs: under CPU starvation a
 * Node start took longer than the 20 s that used to fail the update.
 */
const START_WARNING_MS = 20_000;

/** How often a request waiting for a live holder is reported (it is never given up for that). */
const SLOW_AFTER_MS = 10_000;

/**
 * Connections a hold or release may see lost before it fails: each loss
 * means a holder died or a connection failed, and a new one was tried.
 */
const LOST_CONNECTIONS = 5;

/** A hold waiting for the end of this turn of the event loop (#flushSoon). */
interface PendingHold {
  readonly name: string;
  readonly source: FdSource;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

interface Waiter {
  readonly op: string;
  readonly since: number;
  readonly resolve: (reply: Record<string, unknown>) => void;
  readonly reject: (err: Error) => void;
}

/** A request that did not get its reply because the connection ended: worth sending again. */
class ConnectionLost extends SysError {
  constructor(message: string) {
    super('holder', Errno.ECONNRESET, message);
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export interface HolderProcessOptions {
  /** How long a request waits for a live holder before luod warns (and warns again). */
  slowAfterMs?: number;
  /** How long a holder luod started may take to listen before luod warns (and warns again). */
  startWarningMs?: number;
}

export class HolderProcess implements FdHolder {
  readonly kind = 'holder-process';
  readonly socketPath: string;
  readonly #log: Logger;
  readonly #slowAfterMs: number;
  readonly #startWarningMs: number;
  readonly #held = new Map<string, FdSource>();
  #channel: LineChannel | null = null;
  /** The process at the other end of #channel (SO_PEERCRED), to tell its death from a failed connection. */
  #peer: ProcessStatus | null = null;
  #connecting: Promise<LineChannel> | null = null;
  #waiters: Waiter[] = [];
  #items: HeldFd[] = [];
  #closing = false;
  /** Counts lost connections: a rehold stops once a newer one has begun. */
  #generation = 0;
  #slowTimer: NodeJS.Timeout | null = null;
  /**
   * The releases asked for in this turn of the event loop, sent as one
   * `release-many` line when it ends: a thousand claims each releasing
   * their sessions were four thousand round trips through the holder, on
   * the cores the VMMs claim with (bench/scale.ts, the restart).
   */
  #releases: {
    names: string[];
    sent: Promise<void>;
    resolve: () => void;
    reject: (err: Error) => void;
  } | null = null;
  /** False once a holder answered `release-many` with ENOTSUP (an older one): a `release` per name. */
  #releaseMany = true;
  /**
   * The holds asked for in this turn, sent as `hold-many` lines of up to
   * HOLD_MANY_FDS fds when it ends: a hold per line was a sendmsg(2) and a
   * reply per session, twice per update of a thousand VMMs (the barrier's
   * sessions, then the incoming ones after the kexec).
   */
  #holds: PendingHold[] = [];
  /** False once a holder answered `hold-many` with ENOTSUP (an older one): a `hold` per name. */
  #holdMany = true;
  /** A flush of this turn's holds and releases is scheduled. */
  #flushing = false;

  constructor(socketPath: string, log: Logger, options: HolderProcessOptions = {}) {
    this.socketPath = socketPath;
    this.#log = log;
    this.#slowAfterMs = options.slowAfterMs ?? SLOW_AFTER_MS;
    this.#startWarningMs = options.startWarningMs ?? START_WARNING_MS;
  }

  /** The pid of a holder started by this luod (for tests and logs). */
  lastStartedPid: number | undefined;

  /** The pid of the holder luod is connected to, if any (for tests and logs). */
  get holderPid(): number | undefined {
    return this.#channel && !this.#channel.closed ? this.#peer?.pid : undefined;
  }

  /** Connections to a holder that ended while luod ran (each followed by a new one). */
  connectionsLost = 0;

  /** Bytes of requests queued in luod, not yet taken by the kernel (the holder is not reading). */
  get queuedBytes(): number {
    return this.#channel?.socket.pendingBytes ?? 0;
  }

  /**
   * No holder listening means nothing is held (a holder holding fds never
   * exits): there is nothing to take back, and luod need not wait for a
   * second Node process to start before it listens. warm() starts one once
   * luod listens; the first hold() waits for it (#connected shares the start).
   */
  async takeBack(): Promise<HeldFd[]> {
    if (!this.#channel && !this.#connecting && this.#absent()) return [];
    let reply: Record<string, unknown>;
    for (let attempt = 1; ; attempt++) {
      try {
        reply = await this.#request('list', { batch: MAX_FDS_PER_MESSAGE });
        break;
      } catch (err) {
        // A holder that was exiting (nothing held, no luod) as we connected, or a
        // connection that failed while the holder runs on: ask again. The items of
        // the failed attempt were closed with it (#onClose): the holder still has them.
        if (!(err instanceof ConnectionLost) || attempt >= 3) throw err;
      }
    }
    const items = this.#items;
    this.#items = [];
    if (items.length !== reply.count) {
      this.#log.warn(
        { listed: reply.count, received: items.length },
        'the holder listed fds it did not send',
      );
    }
    return items;
  }

  async hold(name: string, source: FdSource): Promise<void> {
    this.#held.set(name, source);
    await this.#lasting('hold', name, source);
  }

  async release(name: string): Promise<void> {
    this.#held.delete(name);
    await this.#lasting('release', name);
  }

  warm(): void {
    if (this.#closing) return;
    this.#connected().catch((err) =>
      this.#log.warn(
        { err, code: errorCode(err) },
        'the fd holder did not start; the first hold starts another',
      ),
    );
  }

  close(): void {
    this.#closing = true;
    if (this.#slowTimer) clearInterval(this.#slowTimer);
    this.#slowTimer = null;
    this.#channel?.close();
  }

  /**
   * A hold or release that outlives lost connections: sent again on the
   * next one, unless a later operation on the same name decided since (it
   * is on its way itself). Throws only when the holder cannot be reached.
   */
  async #lasting(op: 'hold' | 'release', name: string, source?: FdSource): Promise<void> {
    for (let lost = 0; ; ) {
      if (op === 'hold' ? this.#held.get(name) !== source : this.#held.has(name)) return;
      // luod closed its copy meanwhile (a claim delivered, an abort): nothing to give.
      if (source?.closed) return;
      try {
        if (op === 'release') await this.#batchedRelease(name);
        else await this.#batchedHold(name, source!);
        return;
      } catch (err) {
        if (!(err instanceof ConnectionLost) || ++lost >= LOST_CONNECTIONS || this.#closing) throw err;
      }
    }
  }

  /** Joins this turn's `hold-many` lines (sent when the turn ends); settles with its line's reply. */
  #batchedHold(name: string, source: FdSource): Promise<unknown> {
    if (!this.#holdMany) return this.#request('hold', { name }, [source]);
    return new Promise<void>((resolve, reject) => {
      this.#holds.push({ name, source, resolve, reject });
      this.#flushSoon();
    });
  }

  /** Joins this turn's `release-many` (sent when the turn ends); settles with its reply. */
  #batchedRelease(name: string): Promise<unknown> {
    if (!this.#releaseMany) return this.#request('release', { name });
    if (!this.#releases) {
      let settle!: { resolve: () => void; reject: (err: Error) => void };
      const sent = new Promise<void>((resolve, reject) => {
        settle = { resolve, reject };
      });
      this.#releases = { names: [], sent, ...settle };
      this.#flushSoon();
    }
    this.#releases.names.push(name);
    return this.#releases.sent;
  }

  /**
   * Send this turn's holds, then its releases, once the turn ends. The order
   * of a name's operations is kept: one held and released in the same turn
   * is skipped by #sendHolds (no longer current) and released; one released
   * and held again is skipped by #sendReleases and held.
   */
  #flushSoon(): void {
    if (this.#flushing) return;
    this.#flushing = true;
    setImmediate(() => {
      this.#flushing = false;
      const holds = this.#holds;
      this.#holds = [];
      const releases = this.#releases;
      this.#releases = null;
      if (holds.length > 0) this.#sendHolds(holds);
      if (releases) this.#sendReleases(releases.names).then(releases.resolve, releases.reject);
    });
  }

  /** A hold still to be made: no later operation on its name decided since, and luod's copy is open. */
  #current(hold: { name: string; source: FdSource }): boolean {
    return this.#held.get(hold.name) === hold.source && !hold.source.closed;
  }

  #sendHolds(pending: PendingHold[]): void {
    const holds: PendingHold[] = [];
    for (const hold of pending) {
      if (this.#current(hold)) holds.push(hold);
      else hold.resolve(); // a later operation on the name is on its way itself
    }
    for (let i = 0; i < holds.length; i += HOLD_MANY_FDS) {
      const line = holds.slice(i, i + HOLD_MANY_FDS);
      this.#request(
        'hold-many',
        { names: line.map((h) => h.name) },
        line.map((h) => h.source),
      ).then(
        () => {
          for (const hold of line) hold.resolve();
        },
        (err: Error) => {
          if (errorCode(err) !== 'ENOTSUP') {
            for (const hold of line) hold.reject(err);
            return;
          }
          // A holder older than hold-many (it outlives luod's upgrades): one line per name,
          // for those still current (a release asked for since went out after this line).
          if (this.#holdMany)
            this.#log.info('the fd holder predates hold-many: holding one name per request');
          this.#holdMany = false;
          for (const hold of line) {
            if (!this.#current(hold)) hold.resolve();
            else
              this.#request('hold', { name: hold.name }, [hold.source]).then(
                () => hold.resolve(),
                hold.reject,
              );
          }
        },
      );
    }
  }

  async #sendReleases(asked: string[]): Promise<void> {
    // A name held again since its release was asked for: that hold went out already,
    // and is its last word (the order of a name's operations is kept).
    const names = [...new Set(asked)].filter((n) => !this.#held.has(n));
    if (names.length === 0) return;
    if (!this.#releaseMany) {
      await settleAll(names.map((name) => this.#request('release', { name })));
      return;
    }
    const groups: string[][] = [[]];
    let bytes = 0;
    for (const name of names) {
      if (bytes + name.length + 3 > RELEASE_NAME_BYTES && groups[groups.length - 1]!.length > 0) {
        groups.push([]);
        bytes = 0;
      }
      groups[groups.length - 1]!.push(name);
      bytes += name.length + 3;
    }
    try {
      await settleAll(groups.map((group) => this.#request('release-many', { names: group })));
    } catch (err) {
      if (errorCode(err) !== 'ENOTSUP') throw err;
      // A holder older than release-many (it outlives luod's upgrades): one line per name.
      this.#releaseMany = false;
      this.#log.info('the fd holder predates release-many: releasing one name per request');
      await settleAll(names.map((name) => this.#request('release', { name })));
    }
  }

  async #request(op: string, fields: object, sources: FdSource[] = []): Promise<Record<string, unknown>> {
    const channel = await this.#connected();
    if (channel.closed) throw new ConnectionLost(`the connection to the fd holder closed before ${op}`);
    // Copies of our own ride in the message: the caller may close its fds while
    // the message waits for room in the socket (a holder that does not read),
    // and their numbers could by then name other files.
    const copies: OwnedFd[] = [];
    for (const source of sources) {
      try {
        copies.push(dup(source.fd));
      } catch (err) {
        for (const copy of copies) copy.close();
        throw new SysError('holder', Errno.EBADF, `cannot hand the fd holder a copy (${errorCode(err)})`);
      }
    }
    return new Promise((resolve, reject) => {
      this.#waiters.push({ op, since: Date.now(), resolve, reject });
      this.#watchSlow();
      channel
        // `events`: this luod takes the holder's `event` lines (an older one would
        // take them for replies).
        .send({ op, ...fields, events: true }, copies)
        .catch(() => {
          // The socket failed: the channel closes, and #onClose rejects every waiter, this one included.
        })
        .finally(() => {
          for (const copy of copies) copy.close();
        });
    });
  }

  /**
   * The channel, through the connection under way while there is one:
   * #connect attaches the channel before its promise settles, and a request
   * made in between must not be sent before the ones waiting on that promise
   * (a name's operations reach the holder in the order they were asked).
   */
  #connected(): Promise<LineChannel> {
    if (this.#connecting) return this.#connecting;
    if (this.#channel && !this.#channel.closed) return Promise.resolve(this.#channel);
    this.#connecting ??= this.#connect().finally(() => {
      this.#connecting = null;
    });
    return this.#connecting;
  }

  async #connect(): Promise<LineChannel> {
    let channel = this.#tryConnect();
    if (!channel) {
      const started = this.#start();
      const since = Date.now();
      let warnAt = since + this.#startWarningMs;
      while (!channel) {
        await delay(25);
        // Another holder may own the path (this one then exits at once): connect first.
        channel = this.#tryConnect();
        if (channel) break;
        if (this.#closing) throw new SysError('holder', Errno.ECANCELED, 'luod is stopping');
        if (started.exit !== null) {
          // It could not bind (its directory gone, no permission): say so now.
          throw new SysError(
            'holder',
            Errno.EIO,
            `the fd holder exited (${started.exit}) before listening at ${this.socketPath}: is its directory there and writable?`,
          );
        }
        if (Date.now() >= warnAt) {
          // Still starting: slow (a starved or stopped process), not dead. Its exit ends the wait.
          warnAt += this.#startWarningMs;
          const state = started.pid ? processStatus(started.pid)?.state : undefined;
          this.#log.warn(
            { holder: started.pid, state, waitedMs: Date.now() - since },
            `the fd holder luod started (pid ${started.pid}, ${describeState(state ?? '?')}) has not listened at ${this.socketPath} for ${Math.round((Date.now() - since) / 1000)} s; luod waits for it as long as it runs`,
          );
        }
      }
    }
    this.#attach(channel);
    return channel;
  }

  /**
   * Nobody listens at the holder's path: no socket file, or a stale one
   * (ECONNREFUSED). A holder that answers keeps this connection.
   */
  #absent(): boolean {
    try {
      this.#attach(LineChannel.connect(this.socketPath, CHANNEL));
      return false;
    } catch (err) {
      const code = errorCode(err);
      return code === 'ENOENT' || code === 'ECONNREFUSED';
    }
  }

  #tryConnect(): LineChannel | null {
    try {
      return LineChannel.connect(this.socketPath, CHANNEL);
    } catch {
      return null;
    }
  }

  /** Start a holder in its own session, so that it outlives luod and luod's process group. */
  #start(): { exit: string | null; pid: number | undefined } {
    const here = import.meta.url;
    // Built: holder-bin.cjs, which runs the holder's bundle (a faster start). Under tsx: the source.
    const entry = new URL(here.endsWith('.ts') ? './holder-main.ts' : './holder-bin.cjs', here);
    const child = spawn(
      process.execPath,
      [...process.execArgv, entry.pathname, '--socket', this.socketPath],
      {
        detached: true,
        stdio: 'ignore',
      },
    );
    const started: { exit: string | null; pid: number | undefined } = { exit: null, pid: child.pid };
    child.once('exit', (code, signal) => {
      started.exit = signal ? `signal ${signal}` : `status ${code}`;
    });
    child.once('error', (err) => {
      started.exit = errorCode(err, err.message);
    });
    child.unref();
    this.lastStartedPid = child.pid;
    this.#log.info({ pid: child.pid, socket: this.socketPath }, 'started the fd holder process');
    return started;
  }

  #attach(channel: LineChannel): void {
    this.#channel = channel;
    try {
      this.#peer = processStatus(channel.socket.peerCredentials().pid);
    } catch {
      this.#peer = null; // gone already: its close follows
    }
    channel.on('message', (value, fds) => this.#onMessage(value as Record<string, unknown>, fds));
    channel.on('close', (reason) => this.#onClose(channel, reason));
  }

  #onMessage(message: Record<string, unknown>, fds: OwnedFd[]): void {
    if (message.op === 'item' && typeof message.name === 'string' && fds.length === 1) {
      this.#items.push({ name: message.name, fd: fds[0]! });
      return;
    }
    // A batch (list with `batch`): names in the order of the fds. A holder older
    // than batches ignores `batch` and sends `item` lines: both are taken.
    const names = message.names;
    if (
      message.op === 'items' &&
      Array.isArray(names) &&
      names.length === fds.length &&
      names.every((n) => typeof n === 'string')
    ) {
      for (let i = 0; i < fds.length; i++) this.#items.push({ name: names[i] as string, fd: fds[i]! });
      return;
    }
    for (const fd of fds) fd.close();
    if (message.op === 'event') {
      // The holder has no log of its own: what went wrong in it is told here.
      const level = message.level === 'error' ? 'error' : 'warn';
      this.#log[level](
        { holder: message.pid, code: message.code },
        `the fd holder reports: ${String(message.code)}: ${String(message.message)}`,
      );
      return;
    }
    const waiter = this.#waiters.shift();
    if (!waiter) return;
    if (message.ok === true) waiter.resolve(message);
    else {
      const error = (message.error ?? {}) as { code?: string; message?: string };
      waiter.reject(
        new CodedError(errorCode(error), `fd holder refused ${waiter.op}: ${error.code}: ${error.message}`),
      );
    }
  }

  #onClose(channel: LineChannel, reason: ChannelCloseReason | null): void {
    if (this.#channel === channel) this.#channel = null;
    const peer = this.#peer;
    for (const item of this.#items.splice(0)) item.fd.close();
    const pending = this.#waiters.splice(0);
    const why = reason ? `${reason.code}: ${reason.message}` : 'luod closed it';
    for (const waiter of pending) {
      waiter.reject(new ConnectionLost(`the connection to the fd holder ended during ${waiter.op} (${why})`));
    }
    if (this.#closing) return;
    this.connectionsLost++;
    this.#generation++;
    // Whether the holder died or only this connection failed is known once luod has
    // connected again: to the same process, or to a new one it had to start. (Right
    // after the connection closes, /proc may still show a killed holder running: its
    // fds are closed before it becomes a zombie.)
    void this.#rehold({
      peer,
      why,
      fields: {
        holder: peer?.pid,
        code: reason?.code ?? 'ECONNRESET',
        reason: why,
        held: this.#held.size,
        pending: pending.map((w) => w.op),
      },
    });
  }

  /** Warn, every slowAfterMs, while the oldest request waits for a holder that still runs. */
  #watchSlow(): void {
    if (this.#slowTimer) return;
    this.#slowTimer = setInterval(() => {
      const oldest = this.#waiters[0];
      if (!oldest) {
        if (this.#slowTimer) clearInterval(this.#slowTimer);
        this.#slowTimer = null;
        return;
      }
      const waited = Date.now() - oldest.since;
      if (waited < this.#slowAfterMs) return;
      const peer = this.#peer ? processStatus(this.#peer.pid) : null;
      this.#log.warn(
        {
          holder: this.#peer?.pid,
          state: peer?.state,
          waitedMs: waited,
          waiting: this.#waiters.length,
          queuedBytes: this.queuedBytes,
        },
        `the fd holder${this.#peer ? ` (pid ${this.#peer.pid}, ${describeState(peer?.state ?? '?')})` : ''} has not answered a ${oldest.op} for ${Math.round(waited / 1000)} s; luod waits: a slow holder is not a dead one (a dead one's connection closes)`,
      );
    }, this.#slowAfterMs);
    this.#slowTimer.unref();
  }

  async #rehold(lost: {
    peer: ProcessStatus | null;
    why: string;
    fields: Record<string, unknown>;
  }): Promise<void> {
    const generation = this.#generation;
    try {
      // What luod holds when the connection ended; each is checked again before it is sent.
      const live: [string, FdSource][] = [];
      for (const [name, source] of [...this.#held]) {
        if (source.closed) this.#held.delete(name);
        else live.push([name, source]);
      }
      const old = lost.peer;
      try {
        await this.#connected();
      } catch (err) {
        if (generation !== this.#generation) return;
        this.#log.error(
          { ...lost.fields, holderRunning: old !== null && stillRunning(old), err },
          `the connection to the fd holder${old ? ` (pid ${old.pid})` : ''} ended (${lost.why}) and no holder can be reached (${errorCode(err)}: ${(err as Error).message}): luod is the only holder of ${this.#held.size} session fds`,
        );
        return;
      }
      if (generation !== this.#generation) return;
      const now = this.#peer;
      const same = old !== null && now !== null && now.pid === old.pid && now.startTime === old.startTime;
      if (same) {
        this.#log.warn(
          { ...lost.fields, holderRunning: true },
          `the connection to the fd holder (pid ${old.pid}) failed (${lost.why}) while the holder runs on (${describeState(processStatus(old.pid)?.state ?? '?')}): connected again, giving it every session fd again`,
        );
      } else {
        this.#log.warn(
          { ...lost.fields, holderRunning: false, newHolder: now?.pid },
          `the fd holder process${old ? ` (pid ${old.pid})` : ''} went away (${lost.why}): giving the new one${now ? ` (pid ${now.pid})` : ''} a copy of every session fd luod holds`,
        );
      }
      // A window at a time, as the keeper holds (keeper.ts #holdAll). Each goes
      // through #lasting: skipped if released meanwhile, sent again if this
      // connection is lost too.
      for (let i = 0; i < live.length; i += REHOLDS_IN_FLIGHT) {
        if (generation !== this.#generation) return; // a newer rehold took over
        await settleAll(
          live.slice(i, i + REHOLDS_IN_FLIGHT).map(([name, source]) => this.#lasting('hold', name, source)),
        );
      }
      if (generation !== this.#generation) return;
      this.#log.info({ held: this.#held.size }, 'the fd holder has every session fd again');
    } catch (err) {
      if (this.#closing || generation !== this.#generation) return;
      this.#log.error(
        { err, code: errorCode(err), held: this.#held.size },
        `could not give the fd holder its fds again (${errorCode(err)}: ${(err as Error).message}); each hold still pending fails with this error`,
      );
    }
  }
}
