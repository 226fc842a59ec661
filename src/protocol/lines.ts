/**
 * Newline-delimited JSON over an fd-carrying Unix stream socket: the framing
 * of luod's protocol (docs/protocol.md), shared by luod and its clients.
 *
 * fds sent with a line ride on its first byte; which line a received chunk's
 * fds belong to is decided by LineFramer (framing.ts).
 */
import { EventEmitter } from 'node:events';
import type { FdLike, OwnedFd } from '../sys/fd.js';
import { UnixSocket } from '../sys/unix-socket.js';
import { LineFramer } from './framing.js';

export const MAX_LINE_BYTES = 64 * 1024;
export const MAX_FDS_PER_LINE = 16;

export interface LineChannelEvents {
  message: [value: unknown, fds: OwnedFd[]];
  /** A line that is not JSON, too long, or carries too many fds; `fatal` means the channel is being closed. */
  malformed: [reason: { code: string; message: string; fatal: boolean }];
  close: [];
}

export class LineChannel extends EventEmitter<LineChannelEvents> {
  readonly socket: UnixSocket;
  readonly #framer = new LineFramer(MAX_LINE_BYTES);
  #closed = false;

  constructor(socket: UnixSocket) {
    super();
    this.socket = socket;
    socket.on('data', (data, fds) => this.#onData(data, fds));
    socket.on('end', () => this.close());
    socket.on('close', () => this.close());
    socket.on('error', () => this.close());
  }

  static connect(path: string): LineChannel {
    return new LineChannel(UnixSocket.connect(path));
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Send one message, with fds on its first byte. */
  send(value: object, fds: readonly FdLike[] = []): Promise<void> {
    return this.socket.send(Buffer.from(`${JSON.stringify(value)}\n`), fds);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#framer.dispose();
    this.socket.close();
    this.emit('close');
  }

  #onData(data: Buffer, fds: OwnedFd[]): void {
    if (this.#closed) {
      for (const fd of fds) fd.close();
      return;
    }
    let lines: ReturnType<LineFramer['push']>;
    try {
      lines = this.#framer.push(data, fds);
    } catch {
      this.emit('malformed', {
        code: 'E2BIG',
        message: `line longer than ${MAX_LINE_BYTES} bytes`,
        fatal: true,
      });
      this.close();
      return;
    }
    for (const { line, fds: lineFds } of lines) {
      if (this.#closed) {
        for (const fd of lineFds) fd.close();
        continue;
      }
      this.#deliver(line, lineFds);
    }
  }

  #deliver(line: string, fds: OwnedFd[]): void {
    if (fds.length > MAX_FDS_PER_LINE) {
      for (const fd of fds) fd.close();
      this.emit('malformed', {
        code: 'EINVAL',
        message: `more than ${MAX_FDS_PER_LINE} fds on one line`,
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
