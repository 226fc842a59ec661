/**
 * Event-loop driven AF_UNIX sockets that carry fds.
 *
 * A non-blocking socket fd is watched with libuv's poll (through koffi), so
 * reading and writing never block the event loop; the bytes and fds move with
 * sendmsg/recvmsg from `socket.ts`. On a stream socket the kernel delivers
 * the fds of one sendmsg() together with the first byte of its data, and
 * `UnixSocket` preserves that pairing: each 'data' event carries the bytes and
 * the fds that arrived with them.
 *
 * Ownership: fds received are OwnedFd objects handed to the 'data' listener,
 * which must close or keep them (with no listener they are closed at once).
 * fds given to `send()` stay owned by the caller; the kernel duplicates them
 * into the message, so the caller may close them once `send()` resolves.
 */
import { EventEmitter } from 'node:events';
import { Errno } from './errno.js';
import { SysError } from './error.js';
import type { FdLike, OwnedFd } from './fd.js';
import { setNonBlocking } from './file.js';
import { type FdWatcher, type ReadyEvents, watchFd } from './libc.js';
import {
  accept,
  bind,
  connect,
  listen,
  MAX_FDS_PER_MESSAGE,
  type PeerCredentials,
  peerCredentials,
  receiveWithFds,
  type SocketType,
  sendWithFds,
  shutdown,
  socket,
  socketError,
} from './socket.js';

interface PendingWrite {
  data: Uint8Array;
  fds: readonly FdLike[];
  offset: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

/** How many recvmsg() calls one readiness callback may make before yielding to other work. */
const READS_PER_TICK = 64;

/**
 * How many connections one readiness callback accepts before yielding, so
 * that closes and reads of the connections already accepted are processed
 * between batches (a burst of connects otherwise drains the whole backlog
 * first).
 */
const ACCEPTS_PER_TICK = 16;

/** How long a server waits before accepting again after accept() failed (e.g. out of fds). */
const ACCEPT_RETRY_MS = 100;

export interface UnixSocketEvents {
  data: [data: Buffer, fds: OwnedFd[]];
  /** Every queued message went out to the kernel. */
  drain: [];
  end: [];
  error: [err: Error];
  close: [];
}

export class UnixSocket extends EventEmitter<UnixSocketEvents> {
  readonly type: SocketType;
  readonly #fd: OwnedFd;
  readonly #watcher: FdWatcher;
  /** What #watcher watches: 1 readable, 2 writable, 0 nothing, -1 not started yet. */
  #interest = -1;
  readonly #onReadyBound = (ev: ReadyEvents) => this.#onReady(ev);
  readonly #maxRead: number;
  #writes: PendingWrite[] = [];
  /** Bytes in #writes not yet taken by the kernel, kept as it changes (not summed on each ask). */
  #pendingBytes = 0;
  #reading = true;
  #ended = false;
  #closed = false;

  /** Take ownership of a connected socket fd (it is made non-blocking). */
  constructor(fd: OwnedFd, type: SocketType = 'stream', options: { maxRead?: number } = {}) {
    super();
    this.type = type;
    this.#fd = fd;
    this.#maxRead = options.maxRead ?? 64 * 1024;
    setNonBlocking(fd, true);
    this.#watcher = watchFd(fd.fd);
    // libuv must stop watching before the number can be reused by another fd.
    fd.onClose(() => this.#watcher.close());
    this.#updateInterest();
  }

  /** Connect to a listening socket at `path` (a leading '\0' means the abstract namespace). */
  static connect(path: string, type: SocketType = 'stream'): UnixSocket {
    const fd = socket(type);
    try {
      connect(fd, path);
    } catch (err) {
      fd.close();
      throw err;
    }
    return new UnixSocket(fd, type);
  }

  get fd(): number {
    return this.#fd.fd;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Bytes queued but not yet accepted by the kernel. */
  get pendingBytes(): number {
    return this.#pendingBytes;
  }

  peerCredentials(): PeerCredentials {
    return peerCredentials(this.#fd);
  }

  /**
   * Send `data` with `fds` attached to its first byte. Resolves when the
   * kernel has taken every byte; messages go out in call order.
   */
  send(data: Uint8Array, fds: readonly FdLike[] = []): Promise<void> {
    if (this.#closed) return Promise.reject(new SysError('send', Errno.EPIPE, 'send: socket is closed'));
    if (fds.length > MAX_FDS_PER_MESSAGE) {
      return Promise.reject(
        new SysError(
          'send',
          Errno.EINVAL,
          `send: at most ${MAX_FDS_PER_MESSAGE} fds per message, got ${fds.length}`,
        ),
      );
    }
    return new Promise<void>((resolve, reject) => {
      this.#writes.push({ data, fds, offset: 0, resolve, reject });
      this.#pendingBytes += data.length;
      if (this.#writes.length === 1) this.#flush();
    });
  }

  /** Stop emitting 'data' (back-pressure); bytes wait in the kernel's buffer. */
  pause(): void {
    this.#reading = false;
    this.#updateInterest();
  }

  resume(): void {
    this.#reading = true;
    this.#updateInterest();
  }

  /** Let the process exit while this socket is open (like net.Socket#unref). */
  unref(): void {
    this.#watcher.unref();
  }

  ref(): void {
    this.#watcher.ref();
  }

  /** Half-close: the peer reads EOF, we can still read. */
  end(): void {
    if (!this.#closed) shutdown(this.#fd, 'write');
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const writes = this.#writes;
    this.#writes = [];
    this.#pendingBytes = 0;
    this.#fd.close();
    for (const w of writes)
      w.reject(new SysError('send', Errno.EPIPE, 'send: socket closed before the message went out'));
    this.emit('close');
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * Watch for what the socket waits for now. Unchanged interest is left
   * alone: each start is an epoll_ctl(2), and most sends complete at once,
   * leaving the interest as it was (a tenth of luod's time in its own code
   * with a thousand VMMs, bench/scale.ts).
   */
  #updateInterest(): void {
    if (this.#closed) return;
    const readable = this.#reading && !this.#ended;
    const writable = this.#writes.length > 0;
    const interest = (readable ? 1 : 0) | (writable ? 2 : 0);
    if (interest === this.#interest) return;
    this.#interest = interest;
    if (interest === 0) this.#watcher.stop();
    else this.#watcher.start({ readable, writable }, this.#onReadyBound);
  }

  #onReady(ev: ReadyEvents): void {
    if (this.#closed) return;
    if (ev.status < 0) {
      this.#fail(this.#pendingError() ?? new SysError('poll', -ev.status));
      return;
    }
    if (ev.writable) this.#flush();
    if ((ev.readable || ev.disconnect) && this.#reading && !this.#ended) this.#drain();
  }

  /**
   * libuv reports POLLERR as EBADF; the socket's own error (ECONNRESET when a
   * listener died with this connection in its backlog) says what happened.
   */
  #pendingError(): SysError | null {
    try {
      const errno = socketError(this.#fd);
      return errno === 0 ? null : new SysError('recvmsg', errno);
    } catch {
      return null;
    }
  }

  #drain(): void {
    for (let i = 0; i < READS_PER_TICK && this.#reading && !this.#closed; i++) {
      let got: ReturnType<typeof receiveWithFds>;
      try {
        got = receiveWithFds(this.#fd, this.#maxRead);
      } catch (err) {
        this.#fail(err as Error);
        return;
      }
      if (got === null) return;
      if (got.fdsTruncated) {
        for (const fd of got.fds) fd.close();
        this.#fail(
          // MSG_CTRUNC: the kernel could not hand over every fd, because the peer sent more
          // than one message carries, or this process reached its RLIMIT_NOFILE.
          new SysError(
            'recvmsg',
            Errno.EMSGSIZE,
            'recvmsg: fds that came with a message were dropped (MSG_CTRUNC): the peer sent more than one message may carry, or this process is out of fds (RLIMIT_NOFILE)',
          ),
        );
        return;
      }
      if (got.eof) {
        this.#ended = true;
        this.#updateInterest();
        this.emit('end');
        return;
      }
      if (this.listenerCount('data') === 0) {
        for (const fd of got.fds) fd.close();
      } else {
        this.emit('data', got.data, got.fds);
      }
    }
  }

  #flush(): void {
    const hadWrites = this.#writes.length > 0;
    while (this.#writes.length > 0 && !this.#closed) {
      const w = this.#writes[0]!;
      let n: number;
      try {
        n = sendWithFds(this.#fd, w.data.subarray(w.offset), w.offset === 0 ? w.fds : []);
      } catch (err) {
        this.#writes.shift();
        this.#pendingBytes -= w.data.length - w.offset;
        w.reject(err as Error);
        this.#fail(err as Error);
        return;
      }
      if (n < 0) break; // EAGAIN: wait for writability
      w.offset += n;
      this.#pendingBytes -= n;
      if (w.offset >= w.data.length) {
        this.#writes.shift();
        w.resolve();
      }
    }
    this.#updateInterest();
    if (hadWrites && this.#writes.length === 0 && !this.#closed) this.emit('drain');
  }

  #fail(err: Error): void {
    if (this.#closed) return;
    if (this.listenerCount('error') > 0) this.emit('error', err);
    this.close();
  }
}

export interface UnixServerEvents {
  connection: [socket: UnixSocket];
  error: [err: Error];
  close: [];
}

/** A listening AF_UNIX socket whose connections arrive as UnixSocket objects. */
export class UnixServer extends EventEmitter<UnixServerEvents> {
  readonly path: string;
  readonly type: SocketType;
  readonly #fd: OwnedFd;
  readonly #watcher: FdWatcher;
  #closed = false;

  private constructor(fd: OwnedFd, path: string, type: SocketType) {
    super();
    this.#fd = fd;
    this.path = path;
    this.type = type;
    this.#watcher = watchFd(fd.fd);
    fd.onClose(() => this.#watcher.close());
    this.#watcher.start({ readable: true }, (ev) => this.#onReady(ev));
  }

  /** Bind and listen at `path`; the path must not exist (remove a stale one first). */
  static listen(path: string, options: { type?: SocketType; backlog?: number } = {}): UnixServer {
    const type = options.type ?? 'stream';
    const fd = socket(type, { nonBlocking: true });
    try {
      bind(fd, path);
      listen(fd, options.backlog ?? 128);
    } catch (err) {
      fd.close();
      throw err;
    }
    return new UnixServer(fd, path, type);
  }

  get fd(): number {
    return this.#fd.fd;
  }

  unref(): void {
    this.#watcher.unref();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#fd.close();
    this.emit('close');
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #onReady(ev: ReadyEvents): void {
    if (this.#closed) return;
    if (ev.status < 0) {
      if (this.listenerCount('error') > 0) this.emit('error', new SysError('poll', -ev.status));
      return;
    }
    for (let i = 0; i < ACCEPTS_PER_TICK && !this.#closed; i++) {
      let conn: OwnedFd | null;
      try {
        conn = accept(this.#fd);
      } catch (err) {
        // EMFILE/ENFILE/ECONNABORTED: report, and keep listening after a pause,
        // since the pending connection keeps the socket readable and would spin.
        if (this.listenerCount('error') > 0) this.emit('error', err as Error);
        this.#watcher.stop();
        setTimeout(() => {
          if (!this.#closed) this.#watcher.start({ readable: true }, (next) => this.#onReady(next));
        }, ACCEPT_RETRY_MS).unref();
        return;
      }
      if (conn === null) return;
      let sock: UnixSocket;
      try {
        sock = new UnixSocket(conn, this.type);
      } catch (err) {
        conn.close();
        if (this.listenerCount('error') > 0) this.emit('error', err as Error);
        continue;
      }
      if (this.listenerCount('connection') === 0) sock.close();
      else this.emit('connection', sock);
    }
  }
}
