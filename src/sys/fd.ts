import { Errno } from './errno.js';
import { SysError } from './error.js';
import { closeRaw } from './libc.js';

/**
 * Ownership of one file descriptor.
 *
 * A raw fd number is an easy thing to close twice, and closing twice is worse
 * than leaking: the second close may hit an unrelated fd that reused the
 * number (for LUO, perhaps a session fd, which would abort a live update).
 * Every fd luokit creates lives in an OwnedFd, which closes it exactly once,
 * and refuses to hand out the number after that.
 */
export class OwnedFd implements Disposable {
  #fd: number;
  #closeHooks: Array<() => void> = [];

  constructor(fd: number) {
    if (!Number.isInteger(fd) || fd < 0) {
      throw new SysError('OwnedFd', Errno.EBADF, `not a file descriptor: ${String(fd)}`);
    }
    this.#fd = fd;
  }

  /** The fd number; throws EBADF once closed. */
  get fd(): number {
    if (this.#fd < 0) throw new SysError('fd', Errno.EBADF, 'file descriptor already closed');
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  /** Run `hook` just before the fd is closed (used to stop event-loop polling first). */
  onClose(hook: () => void): void {
    this.#closeHooks.push(hook);
  }

  /** Give up ownership without closing: the caller now owns the number. */
  release(): number {
    const fd = this.fd;
    this.#fd = -1;
    this.#closeHooks = [];
    return fd;
  }

  /** Close the fd; safe to call more than once (later calls do nothing). */
  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    const hooks = this.#closeHooks;
    this.#closeHooks = [];
    for (const hook of hooks) hook();
    closeRaw(fd);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  toString(): string {
    return this.#fd < 0 ? 'OwnedFd(closed)' : `OwnedFd(${this.#fd})`;
  }
}

/** A caller may pass either an owned fd or a bare number it manages itself. */
export type FdLike = number | OwnedFd;

export function rawFd(fd: FdLike): number {
  if (typeof fd === 'number') {
    if (!Number.isInteger(fd) || fd < 0 || fd > 0x7fffffff) {
      throw new SysError('fd', Errno.EBADF, `not a file descriptor: ${String(fd)}`);
    }
    return fd;
  }
  return fd.fd;
}
