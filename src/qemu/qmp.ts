/**
 * A client for QEMU's machine protocol (QMP) on a unix socket, able to pass
 * fds: luo-qemu hands QEMU the device-state memfd with `getfd` (SCM_RIGHTS
 * on the command's line), which is how QEMU takes an fd from its manager.
 * The real-kernel bench uses it too, to dump a guest's memory.
 *
 * Lifecycle: QEMU listens on the socket (`-qmp unix:PATH,server=on,wait=off`)
 * from its start; connect() retries until the socket accepts, reads the
 * greeting ({"QMP": ...}) and negotiates capabilities; execute() sends one
 * command with an id and resolves with its `return` (rejects with QmpError
 * for an `error` answer); asynchronous events ({"event": ...}) are kept in
 * `events` and announced to waitEvent(). Every wait is bounded; close() ends
 * the connection and fails what is still pending.
 */
import { LineFramer } from '../protocol/framing.js';
import type { FdLike } from '../sys/fd.js';
import { UnixSocket } from '../sys/unix-socket.js';

/** QMP lines can be long (a query-* answer): far more than luod's 64 KiB. */
const MAX_QMP_LINE = 16 << 20;

/** An `error` answer from QEMU: its class (e.g. GenericError) and description. */
export class QmpError extends Error {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`QMP ${command}: ${errorClass}: ${desc}`);
    this.name = 'QmpError';
  }
}

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

export interface QmpConnectOptions {
  /** How long to keep trying to connect (QEMU may not have created the socket yet). */
  timeoutMs?: number;
  /** Between two connection attempts. */
  retryMs?: number;
  /** Give up at once when this says QEMU is gone (its exit), instead of at the timeout. */
  gone?: () => string | null;
}

/** Events kept: a VM that runs for months must not grow its manager's memory. */
const MAX_EVENTS = 1024;

export class QmpClient {
  /** The most recent events (at most MAX_EVENTS), oldest first. */
  readonly events: QmpEvent[] = [];
  /** Events let go of to keep `events` short: eventCount counts them too. */
  #droppedEvents = 0;
  readonly #socket: UnixSocket;
  readonly #framer = new LineFramer(MAX_QMP_LINE);
  readonly #pending = new Map<number, Pending>();
  readonly #eventWaiters = new Set<(event: QmpEvent) => void>();
  #greeting: ((value: unknown) => void) | null = null;
  #nextId = 1;
  #closed = false;
  #closeReason = 'the QMP connection is closed';

  private constructor(socket: UnixSocket) {
    this.#socket = socket;
    socket.on('data', (data, fds) => {
      for (const fd of fds) fd.close(); // QEMU sends none
      let lines: ReturnType<LineFramer['push']>;
      try {
        lines = this.#framer.push(data, []);
      } catch {
        this.#fail('QEMU sent a QMP line over 16 MiB');
        socket.close();
        return;
      }
      for (const { line } of lines) this.#onLine(line);
    });
    socket.on('end', () => this.#fail('QEMU closed the QMP connection'));
    socket.on('close', () => this.#fail('QEMU closed the QMP connection'));
    socket.on('error', (error) => this.#fail(`QMP socket error: ${error.message}`));
  }

  /** Connects to QEMU's QMP socket, reads the greeting and enters command mode. */
  static async connect(socketPath: string, options: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = options.timeoutMs ?? 10_000;
    const deadline = performance.now() + timeoutMs;
    let lastError = 'no attempt';
    for (;;) {
      const gone = options.gone?.();
      if (gone) throw new Error(`QEMU is gone before its QMP socket answered: ${gone}`);
      let client: QmpClient | null = null;
      try {
        client = new QmpClient(UnixSocket.connect(socketPath));
        const greeting = await client.#readGreeting(Math.max(1, deadline - performance.now()));
        if (!isObject(greeting) || !('QMP' in greeting)) {
          throw new QmpError(
            'greeting',
            'Protocol',
            `not a QMP greeting: ${JSON.stringify(greeting).slice(0, 200)}`,
          );
        }
        await client.execute('qmp_capabilities', undefined, Math.max(1, deadline - performance.now()));
        return client;
      } catch (error) {
        client?.close();
        lastError = (error as Error).message;
        if (error instanceof QmpError) throw error;
      }
      if (performance.now() + (options.retryMs ?? 50) > deadline) {
        throw new Error(`cannot connect to QMP at ${socketPath} within ${timeoutMs} ms: ${lastError}`);
      }
      await new Promise((resolve) => setTimeout(resolve, options.retryMs ?? 50));
    }
  }

  /**
   * Runs one command; resolves with QEMU's `return` value. `fds` ride on the
   * command's line (getfd, add-fd).
   */
  execute(
    command: string,
    args?: Record<string, unknown>,
    timeoutMs = 60_000,
    fds: readonly FdLike[] = [],
  ): Promise<unknown> {
    if (this.#closed) return Promise.reject(new Error(`QMP ${command}: ${this.#closeReason}`));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`QMP ${command}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { command, resolve, reject, timer });
      const message = { execute: command, ...(args !== undefined ? { arguments: args } : {}), id };
      this.#socket.send(Buffer.from(`${JSON.stringify(message)}\n`), fds).catch((error: Error) => {
        clearTimeout(timer);
        this.#pending.delete(id);
        reject(new Error(`QMP ${command}: ${error.message}`));
      });
    });
  }

  /**
   * The first event that `match` accepts, among those received since
   * `eventCount` was `from` (0: every one kept), or to come.
   */
  waitEvent(
    match: (event: QmpEvent) => boolean,
    timeoutMs: number,
    what: string,
    from = 0,
  ): Promise<QmpEvent> {
    const seen = this.events.slice(Math.max(0, from - this.#droppedEvents)).find(match);
    if (seen) return Promise.resolve(seen);
    if (this.#closed) return Promise.reject(new Error(`waiting for ${what}: ${this.#closeReason}`));
    return new Promise((resolve, reject) => {
      const onEvent = (event: QmpEvent) => {
        if (!match(event)) return;
        done();
        resolve(event);
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no ${what} from QEMU within ${timeoutMs} ms`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.#eventWaiters.delete(onEvent);
        this.#eventWaiters.delete(onClose);
      };
      const onClose = (event: QmpEvent) => {
        if (event.event !== '') return;
        done();
        reject(new Error(`waiting for ${what}: ${this.#closeReason}`));
      };
      this.#eventWaiters.add(onEvent);
      this.#eventWaiters.add(onClose);
    });
  }

  /** How many events arrived so far: a mark for waitEvent's `from`. */
  get eventCount(): number {
    return this.#droppedEvents + this.events.length;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** QEMU's pid, as the kernel tells it (SO_PEERCRED). */
  get peerPid(): number {
    return this.#socket.peerCredentials().pid;
  }

  /** Settles when the connection is gone (QEMU exited, or close()). */
  whenClosed(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return new Promise((resolve) => this.#eventWaiters.add((e) => e.event === '' && resolve()));
  }

  close(): void {
    this.#fail('the QMP connection was closed');
    this.#socket.close();
  }

  #readGreeting(timeoutMs: number): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#greeting = null;
        reject(new Error(`no QMP greeting within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#greeting = (value) => {
        clearTimeout(timer);
        this.#greeting = null;
        if (value instanceof Error) reject(value);
        else resolve(value);
      };
    });
  }

  #onLine(line: string): void {
    if (line.trim() === '') return;
    let message: unknown;
    try {
      message = JSON.parse(line);
    } catch {
      this.#fail(`QEMU sent something that is not JSON on QMP: ${line.slice(0, 200)}`);
      this.#socket.close();
      return;
    }
    if (!isObject(message)) return;
    if (this.#greeting) {
      this.#greeting(message);
      return;
    }
    if (typeof message.event === 'string') {
      const event = message as unknown as QmpEvent;
      this.events.push(event);
      if (this.events.length > MAX_EVENTS) {
        this.events.shift();
        this.#droppedEvents++;
      }
      for (const waiter of [...this.#eventWaiters]) waiter(event);
      return;
    }
    const id = typeof message.id === 'number' ? message.id : undefined;
    const waiting = id === undefined ? undefined : this.#pending.get(id);
    if (waiting === undefined) return;
    this.#pending.delete(id!);
    clearTimeout(waiting.timer);
    if ('return' in message) {
      waiting.resolve(message.return);
      return;
    }
    const error = isObject(message.error) ? message.error : {};
    waiting.reject(
      new QmpError(
        waiting.command,
        typeof error.class === 'string' ? error.class : 'UnknownError',
        typeof error.desc === 'string' ? error.desc : JSON.stringify(message).slice(0, 200),
      ),
    );
  }

  #fail(reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closeReason = reason;
    this.#greeting?.(new Error(reason));
    for (const [id, waiting] of this.#pending) {
      clearTimeout(waiting.timer);
      waiting.reject(new Error(`QMP ${waiting.command}: ${reason}`));
      this.#pending.delete(id);
    }
    for (const waiter of [...this.#eventWaiters]) waiter({ event: '' });
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
