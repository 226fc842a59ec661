/**
 * Receiving protocol lines (docs/protocol.md) with the fds that belong to them.
 *
 * A sender attaches fds to the first byte of a line, sent with one sendmsg().
 * On an AF_UNIX stream socket one recvmsg() may return the unread tail of
 * earlier, fd-less messages followed by the message that carries fds: the
 * kernel (unix_stream_read_generic) glues fd-less data in front of an skb
 * with fds, then stops right after that skb. So the fds that arrive with a
 * chunk belong to the line holding the chunk's LAST byte, not the line being
 * accumulated when the chunk arrives (two back-to-back lines, a reply and
 * then START_PRESERVATION with its fds, arrive in one recvmsg()).
 */
import { CodedError } from '../sys/error.js';
import type { OwnedFd } from '../sys/fd.js';

export interface ReceivedLine {
  readonly line: string;
  readonly fds: OwnedFd[];
}

export class LineFramer {
  readonly maxLine: number;
  /**
   * fds the line being accumulated may collect. A peer that sends fds with
   * a byte at a time and never ends the line would otherwise make us keep
   * every one of them (luod ran out of fds that way).
   */
  readonly maxFds: number;
  #parts: Buffer[] = [];
  #partBytes = 0;
  #fds: OwnedFd[] = [];

  constructor(maxLine: number, maxFds = Number.POSITIVE_INFINITY) {
    this.maxLine = maxLine;
    this.maxFds = maxFds;
  }

  /** Bytes of the line being accumulated. */
  get pendingBytes(): number {
    return this.#partBytes;
  }

  /**
   * Feed one recvmsg() worth of bytes and fds; returns the complete lines.
   * Throws (after closing every fd it holds) when a line exceeds `maxLine`
   * bytes (code E2BIG), or the unfinished line holds more than `maxFds` fds
   * (code ETOOMANYREFS).
   */
  push(data: Buffer, fds: OwnedFd[]): ReceivedLine[] {
    const out: ReceivedLine[] = [];
    // Which line gets this chunk's fds: the one holding its last byte.
    const fdsGoToLastCompleted = fds.length > 0 && data.length > 0 && data[data.length - 1] === 0x0a;
    let start = 0;
    for (;;) {
      const newline = data.indexOf(0x0a, start);
      if (newline < 0) break;
      const piece = data.subarray(start, newline);
      start = newline + 1;
      const bytes = this.#partBytes + piece.length;
      const line = this.#parts.length === 0 ? piece : Buffer.concat([...this.#parts, piece], bytes);
      const lineFds = this.#fds;
      this.#parts = [];
      this.#partBytes = 0;
      this.#fds = [];
      if (fdsGoToLastCompleted && start === data.length) lineFds.push(...fds);
      if (bytes > this.maxLine) this.#failLong(out, [...lineFds, ...fds]);
      out.push({ line: line.toString('utf8'), fds: lineFds });
    }
    if (start < data.length) {
      this.#parts.push(Buffer.from(data.subarray(start)));
      this.#partBytes += data.length - start;
    }
    if (!fdsGoToLastCompleted) this.#fds.push(...fds);
    if (this.#partBytes > this.maxLine) this.#failLong(out, fds);
    if (this.#fds.length > this.maxFds)
      this.#fail(out, fds, 'ETOOMANYREFS', `more than ${this.maxFds} fds on an unfinished line`);
    return out;
  }

  /** Close every fd held for lines not yet complete (the connection is gone). */
  dispose(): void {
    for (const fd of this.#fds) fd.close();
    this.#fds = [];
    this.#parts = [];
    this.#partBytes = 0;
  }

  #failLong(delivered: ReceivedLine[], more: OwnedFd[]): never {
    this.#fail(delivered, more, 'E2BIG', `line longer than ${this.maxLine} bytes`);
  }

  /** Close every fd this chunk brought or the framer holds (closing twice is harmless), then throw. */
  #fail(delivered: ReceivedLine[], more: OwnedFd[], code: string, message: string): never {
    for (const entry of delivered) for (const fd of entry.fds) fd.close();
    for (const fd of more) fd.close();
    this.dispose();
    throw new CodedError(code, message);
  }
}
