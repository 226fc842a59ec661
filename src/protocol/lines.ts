/**
 * Newline-delimited JSON over an fd-carrying Unix stream socket: the framing
 * of luod's protocol (docs/protocol.md), shared by luod and its clients.
 *
 * fds sent with a line ride on its first byte; which line a received chunk's
 * fds belong to is decided by LineFramer (framing.ts).
 */
import { EventEmitter } from 'node:events';
import { errorCode } from '../sys/error.js';
import type { FdLike, OwnedFd } from '../sys/fd.js';
import { UnixSocket } from '../sys/unix-socket.js';
import { LineFramer, type ReceivedLine } from './framing.js';

export const MAX_LINE_BYTES = 64 * 1024;
export const MAX_FDS_PER_LINE = 16;

export interface LineChannelEvents {
  message: [value: unknown, fds: OwnedFd[]];
  /** A line that is not JSON, too long, or carries too many fds; `fatal` means the channel is being closed. */
  malformed: [reason: { code: string; message: string; fatal: boolean }];
  /** `reason`: why the channel closed (closeReason), null when this side closed it. */
  close: [reason: ChannelCloseReason | null];
}

/**
 * Why a channel closed, when this side did not close it on purpose: the
 * errno name and a sentence. `eof` (code ECONNRESET): the peer closed its end.
 */
export interface ChannelCloseReason {
  readonly code: string;
  readonly message: string;
}

export interface LineChannelOptions {
  /**
   * Close the channel when a line stays unfinished this long (a peer that
   * sends part of a line and then nothing holds a slot forever otherwise).
   * Not counted while the channel is paused. Default: no limit.
   */
  lineTimeoutMs?: number;
  /**
   * fds one line may carry (default MAX_FDS_PER_LINE, luod's protocol). The
   * fd holder's channel takes up to the kernel's SCM_MAX_FD (253): it hands
   * a restarted luod its fds in batches (holder-main.ts).
   */
  maxFdsPerLine?: number;
}

export class LineChannel extends EventEmitter<LineChannelEvents> {
  readonly socket: UnixSocket;
  readonly #framer: LineFramer;
  readonly #maxFds: number;
  readonly #lineTimeoutMs: number | undefined;
  /** Lines received but not yet delivered: delivery stops while paused. */
  #queue: ReceivedLine[] = [];
  #paused = false;
  #lineTimer: NodeJS.Timeout | null = null;
  #closed = false;
  #closeReason: ChannelCloseReason | null = null;

  constructor(socket: UnixSocket, options: LineChannelOptions = {}) {
    super();
    this.socket = socket;
    this.#lineTimeoutMs = options.lineTimeoutMs;
    this.#maxFds = options.maxFdsPerLine ?? MAX_FDS_PER_LINE;
    this.#framer = new LineFramer(MAX_LINE_BYTES, this.#maxFds);
    socket.on('data', (data, fds) => this.#onData(data, fds));
    socket.on('end', () => this.#onEnd());
    socket.on('close', () => this.close());
    socket.on('error', (err) => this.#closeWith(errorCode(err), err.message));
  }

  static connect(path: string, options: LineChannelOptions = {}): LineChannel {
    return new LineChannel(UnixSocket.connect(path), options);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Why the channel closed (null while open, or when this side closed it). */
  get closeReason(): ChannelCloseReason | null {
    return this.#closeReason;
  }

  /** Send one message, with fds on its first byte. */
  send(value: object, fds: readonly FdLike[] = []): Promise<void> {
    return this.socket.send(Buffer.from(`${JSON.stringify(value)}\n`), fds);
  }

  get paused(): boolean {
    return this.#paused;
  }

  /**
   * Back-pressure: stop delivering messages (those already received wait
   * here, at most one read's worth) and stop reading the socket, so the
   * peer's further bytes wait in its own send buffer.
   */
  pause(): void {
    if (this.#paused || this.#closed) return;
    this.#paused = true;
    this.socket.pause();
    this.#armLineTimer();
  }

  resume(): void {
    if (!this.#paused || this.#closed) return;
    this.#paused = false;
    this.#pump();
    if (!this.#paused && !this.#closed) {
      this.socket.resume();
      this.#armLineTimer();
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#lineTimer) clearTimeout(this.#lineTimer);
    this.#framer.dispose();
    for (const entry of this.#queue) for (const fd of entry.fds) fd.close();
    this.#queue = [];
    this.socket.close();
    this.emit('close', this.#closeReason);
  }

  #closeWith(code: string, message: string): void {
    if (this.#closed) return;
    this.#closeReason = { code, message };
    this.close();
  }

  #onData(data: Buffer, fds: OwnedFd[]): void {
    if (this.#closed) {
      for (const fd of fds) fd.close();
      return;
    }
    let lines: ReturnType<LineFramer['push']>;
    try {
      lines = this.#framer.push(data, fds);
    } catch (err) {
      this.emit('malformed', {
        code: errorCode(err),
        message: (err as Error).message,
        fatal: true,
      });
      this.#closeWith(errorCode(err), (err as Error).message);
      return;
    }
    this.#queue.push(...lines);
    this.#pump();
    this.#armLineTimer();
  }

  /** The peer half-closed: what it sent before still counts, then the channel closes. */
  #onEnd(): void {
    this.#pump();
    this.#closeWith('ECONNRESET', 'the peer closed the connection');
  }

  #pump(): void {
    while (this.#queue.length > 0 && !this.#paused && !this.#closed) {
      const { line, fds } = this.#queue.shift()!;
      this.#deliver(line, fds);
    }
  }

  #armLineTimer(): void {
    const waiting = !this.#paused && !this.#closed && this.#framer.pendingBytes > 0;
    if (!waiting || this.#lineTimeoutMs === undefined) {
      if (this.#lineTimer) clearTimeout(this.#lineTimer);
      this.#lineTimer = null;
      return;
    }
    if (this.#lineTimer) return; // counted from the line's first byte, not its last
    const ms = this.#lineTimeoutMs;
    this.#lineTimer = setTimeout(() => {
      this.#lineTimer = null;
      this.emit('malformed', {
        code: 'ETIMEDOUT',
        message: `a line was left unfinished for ${ms} ms`,
        fatal: true,
      });
      this.#closeWith('ETIMEDOUT', `a line was left unfinished for ${ms} ms`);
    }, ms);
    this.#lineTimer.unref();
  }

  #deliver(line: string, fds: OwnedFd[]): void {
    if (fds.length > this.#maxFds) {
      for (const fd of fds) fd.close();
      this.emit('malformed', {
        code: 'EINVAL',
        message: `more than ${this.#maxFds} fds on one line`,
        fatal: false,
      });
      return;
    }
    if (line.trim() === '') {
      for (const fd of fds) fd.close();
      return;
    }
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      for (const fd of fds) fd.close();
      this.emit('malformed', { code: 'EPROTO', message: 'not JSON', fatal: false });
      return;
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      for (const fd of fds) fd.close();
      this.emit('malformed', { code: 'EPROTO', message: 'a message must be a JSON object', fatal: false });
      return;
    }
    if (this.listenerCount('message') === 0) {
      for (const fd of fds) fd.close();
      return;
    }
    this.emit('message', value, fds);
  }
}
