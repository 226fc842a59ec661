/**
 * A hostile or faulty local client of luod, below the client library: raw
 * bytes and fds on the socket, as an attacker would send them, and what luod
 * answers. Plus what a test watches luod with: its fd count, its memory, and
 * whether a well-behaved bystander still gets an answer in time.
 */
import * as fs from 'node:fs';
import { LuoClient } from '../../src/client/index.js';
import { LineFramer } from '../../src/protocol/framing.js';
import { type OwnedFd, setNonBlocking } from '../../src/sys/index.js';
import { connect, receiveWithFds, sendWithFds, socket } from '../../src/sys/socket.js';

export class RawPeer {
  readonly fd: OwnedFd;
  readonly #framer = new LineFramer(1 << 20);
  readonly replies: Record<string, unknown>[] = [];
  #eof = false;

  private constructor(fd: OwnedFd) {
    this.fd = fd;
  }

  /** Connected, non-blocking; throws what connect() throws (EAGAIN when the backlog is full). */
  static connect(path: string): RawPeer {
    const fd = socket('stream');
    try {
      connect(fd, path);
      setNonBlocking(fd, true);
    } catch (err) {
      fd.close();
      throw err;
    }
    return new RawPeer(fd);
  }

  /** Send what the kernel takes now: the byte count, -1 when the buffer is full or luod hung up. */
  trySend(data: string | Uint8Array, fds: readonly OwnedFd[] = []): number {
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    try {
      return sendWithFds(this.fd, bytes, fds);
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'EPIPE' || code === 'ECONNRESET') return -1;
      throw err;
    }
  }

  /** Send all of it, waiting while luod does not read. */
  async send(data: string | Uint8Array, fds: readonly OwnedFd[] = [], timeoutMs = 10_000): Promise<void> {
    let rest = typeof data === 'string' ? Buffer.from(data) : Buffer.from(data);
    let first = true;
    const deadline = Date.now() + timeoutMs;
    while (rest.length > 0) {
      const n = sendWithFds(this.fd, rest, first ? fds : []);
      if (n > 0) {
        first = false;
        rest = rest.subarray(n);
      } else {
        if (Date.now() > deadline) throw new Error('luod did not read within the time');
        await sleep(5);
      }
    }
  }

  /** Read whatever arrived (non-blocking); true once luod closed the connection. */
  poll(): boolean {
    while (!this.#eof) {
      let got: ReturnType<typeof receiveWithFds>;
      try {
        got = receiveWithFds(this.fd);
      } catch {
        this.#eof = true; // ECONNRESET: closed by luod
        break;
      }
      if (got === null) break;
      for (const fd of got.fds) fd.close();
      if (got.eof) {
        this.#eof = true;
        break;
      }
      for (const { line } of this.#framer.push(got.data, [])) this.replies.push(JSON.parse(line));
    }
    return this.#eof;
  }

  /** The next reply (in order), waiting up to `timeoutMs`. */
  async reply(timeoutMs = 10_000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      this.poll();
      const next = this.replies.shift();
      if (next) return next;
      if (this.#eof) throw new Error('luod closed the connection');
      if (Date.now() > deadline) throw new Error(`no reply within ${timeoutMs} ms`);
      await sleep(5);
    }
  }

  /** Resolves true when luod closes the connection within `timeoutMs`. */
  async closedByLuod(timeoutMs = 10_000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.poll()) return true;
      await sleep(10);
    }
    return false;
  }

  close(): void {
    this.fd.close();
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Open fds of a process. */
export function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/** Resident memory of a process, in bytes. */
export function rssBytes(pid: number): number {
  const line = fs
    .readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('VmRSS:'));
  return Number(line?.match(/(\d+)/)?.[1] ?? 0) * 1024;
}

/**
 * A well-behaved client's STATUS, timed: how long a VMM or an operator waits
 * for luod while the hostile clients do their worst. Throws if it takes
 * longer than `boundMs`.
 */
export async function bystander(socketPath: string, boundMs: number): Promise<number> {
  const start = performance.now();
  const client = await withTimeout(LuoClient.connect(socketPath), boundMs, 'connect');
  try {
    const status = await withTimeout(client.status(), boundMs, 'STATUS');
    if (typeof status.phase !== 'string')
      throw new Error(`STATUS without a phase: ${JSON.stringify(status)}`);
  } finally {
    client.close();
  }
  return performance.now() - start;
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`the bystander's ${what} took over ${ms} ms`)), ms);
    }),
  ]);
}
