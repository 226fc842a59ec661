/**
 * luod's side of the holder process (holder-main.ts), the FdHolder of hosts
 * without systemd.
 *
 * Supervision: luod connects to the holder at the well-known path next to
 * its socket, starting one when none answers. If the connection drops while
 * luod runs, the holder died: luod starts a new one and gives it a copy of
 * every fd it still holds itself, so a holder that died holding fds costs
 * nothing as long as luod lives (and luod dying as long as the holder lives).
 */
import { spawn } from 'node:child_process';
import type { Logger } from 'pino';
import { LineChannel } from '../protocol/lines.js';
import { Errno } from '../sys/errno.js';
import { CodedError, errorCode, SysError } from '../sys/error.js';
import type { OwnedFd } from '../sys/fd.js';
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

/** How long luod waits for a holder it started to listen. */
const START_TIMEOUT_MS = 20_000;

interface Waiter {
  readonly op: string;
  readonly resolve: (reply: Record<string, unknown>) => void;
  readonly reject: (err: Error) => void;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export class HolderProcess implements FdHolder {
  readonly kind = 'holder-process';
  readonly socketPath: string;
  readonly #log: Logger;
  readonly #held = new Map<string, FdSource>();
  #channel: LineChannel | null = null;
  #connecting: Promise<LineChannel> | null = null;
  #waiters: Waiter[] = [];
  #items: HeldFd[] = [];
  #closing = false;

  constructor(socketPath: string, log: Logger) {
    this.socketPath = socketPath;
    this.#log = log;
  }

  /** The pid of a holder started by this luod (for tests and logs). */
  lastStartedPid: number | undefined;

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
        // A holder that was exiting (nothing held, no luod) as we connected: the next one will do.
        if ((err as SysError).code !== 'ECONNRESET' || attempt >= 3) throw err;
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
    await this.#request('hold', { name }, [source.fd]);
  }

  async release(name: string): Promise<void> {
    this.#held.delete(name);
    await this.#request('release', { name });
  }

  warm(): void {
    if (this.#closing) return;
    this.#connected().catch((err) =>
      this.#log.warn({ err }, 'the fd holder did not start; the first hold starts another'),
    );
  }

  close(): void {
    this.#closing = true;
    this.#channel?.close();
  }

  async #request(op: string, fields: object, fds: number[] = []): Promise<Record<string, unknown>> {
    const channel = await this.#connected();
    return new Promise((resolve, reject) => {
      this.#waiters.push({ op, resolve, reject });
      channel.send({ op, ...fields }, fds).catch((err) => reject(err));
    });
  }

  #connected(): Promise<LineChannel> {
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
      const deadline = Date.now() + START_TIMEOUT_MS;
      while (!channel) {
        if (started.exit !== null) {
          // It could not bind (its directory gone, no permission): say so now, not in 20 s.
          throw new SysError(
            'holder',
            Errno.EIO,
            `the fd holder exited (${started.exit}) before listening at ${this.socketPath}: is its directory there and writable?`,
          );
        }
        if (Date.now() > deadline) {
          throw new SysError(
            'holder',
            Errno.ETIMEDOUT,
            `the fd holder did not listen at ${this.socketPath} within ${START_TIMEOUT_MS} ms`,
          );
        }
        await delay(25);
        channel = this.#tryConnect();
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
  #start(): { exit: string | null } {
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
    const started: { exit: string | null } = { exit: null };
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
    channel.on('message', (value, fds) => this.#onMessage(value as Record<string, unknown>, fds));
    channel.on('close', () => this.#onClose(channel));
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

  #onClose(channel: LineChannel): void {
    if (this.#channel === channel) this.#channel = null;
    for (const item of this.#items.splice(0)) item.fd.close();
    for (const waiter of this.#waiters.splice(0)) {
      waiter.reject(new SysError('holder', Errno.ECONNRESET, `the fd holder went away during ${waiter.op}`));
    }
    if (this.#closing) return;
    // The holder died: a new one gets a copy of every fd luod still holds.
    this.#log.warn({ held: this.#held.size }, 'the fd holder process went away; starting a new one');
    void this.#rehold();
  }

  async #rehold(): Promise<void> {
    try {
      const live: [string, FdSource][] = [];
      for (const [name, source] of [...this.#held]) {
        if (source.closed) this.#held.delete(name);
        else live.push([name, source]);
      }
      // A window at a time, as the keeper holds (keeper.ts #holdAll).
      for (let i = 0; i < live.length; i += REHOLDS_IN_FLIGHT) {
        await settleAll(
          live
            .slice(i, i + REHOLDS_IN_FLIGHT)
            .map(([name, source]) => this.#request('hold', { name }, [source.fd])),
        );
      }
      this.#log.info({ held: this.#held.size }, 'the new fd holder has every session fd again');
    } catch (err) {
      this.#log.error({ err }, 'could not give the new fd holder its fds');
    }
  }
}
