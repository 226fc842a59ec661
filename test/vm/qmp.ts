/**
 * A small client for QEMU's machine protocol (QMP) over a unix socket, for the real-kernel
 * bench (docs/vm.md): the capture part asks QEMU for `dump-guest-memory` while the guest
 * waits.
 *
 * Lifecycle: QEMU listens on the socket (`-qmp unix:PATH,server=on,wait=off`) from its
 * start; connect() retries until the socket accepts, reads the greeting ({"QMP": ...}) and
 * negotiates capabilities (`qmp_capabilities`); execute() sends one command with an id and
 * resolves with its `return` (rejects with QmpError for an `error` answer); asynchronous
 * events ({"event": ...}) are kept in `events`. Messages are JSON objects, one per line.
 * Every wait is bounded; close() ends the connection and fails what is still pending.
 */
import * as net from 'node:net';
import * as readline from 'node:readline';

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
  data?: unknown;
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
}

export class QmpClient {
  readonly events: QmpEvent[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closed = false;
  private closeReason = 'the QMP connection is closed';

  private constructor(private readonly socket: net.Socket) {
    readline.createInterface({ input: socket }).on('line', (line) => this.onLine(line));
    socket.on('close', () => this.fail('QEMU closed the QMP connection'));
    socket.on('error', (error) => this.fail(`QMP socket error: ${error.message}`));
  }

  /** Connects to QEMU's QMP socket, reads the greeting and enters command mode. */
  static async connect(socketPath: string, options: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = options.timeoutMs ?? 10_000;
    const deadline = performance.now() + timeoutMs;
    let lastError = 'no attempt';
    for (;;) {
      try {
        const socket = await openSocket(socketPath);
        const greeting = await firstLine(socket, Math.max(1, deadline - performance.now()));
        if (!isObject(greeting) || !('QMP' in greeting)) {
          socket.destroy();
          throw new Error(`${socketPath}: not a QMP greeting: ${JSON.stringify(greeting).slice(0, 200)}`);
        }
        const client = new QmpClient(socket);
        await client.execute('qmp_capabilities', undefined, Math.max(1, deadline - performance.now()));
        return client;
      } catch (error) {
        lastError = (error as Error).message;
        if (error instanceof QmpError || /not a QMP greeting/.test(lastError)) throw error;
      }
      if (performance.now() + (options.retryMs ?? 100) > deadline) {
        throw new Error(`cannot connect to QMP at ${socketPath} within ${timeoutMs} ms: ${lastError}`);
      }
      await new Promise((resolve) => setTimeout(resolve, options.retryMs ?? 100));
    }
  }

  /** Runs one command; resolves with QEMU's `return` value. */
  execute(command: string, args?: Record<string, unknown>, timeoutMs = 60_000): Promise<unknown> {
    if (this.closed) return Promise.reject(new Error(`QMP ${command}: ${this.closeReason}`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`QMP ${command}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { command, resolve, reject, timer });
      const message = { execute: command, ...(args !== undefined ? { arguments: args } : {}), id };
      this.socket.write(`${JSON.stringify(message)}\n`);
    });
  }

  close(): void {
    this.fail('the QMP connection was closed by the bench');
    this.socket.destroy();
  }

  private onLine(line: string): void {
    if (line.trim() === '') return;
    let message: unknown;
    try {
      message = JSON.parse(line);
    } catch {
      this.fail(`QEMU sent something that is not JSON on QMP: ${line.slice(0, 200)}`);
      this.socket.destroy();
      return;
    }
    if (!isObject(message)) return;
    if (typeof message.event === 'string') {
      this.events.push(message as unknown as QmpEvent);
      return;
    }
    const id = typeof message.id === 'number' ? message.id : undefined;
    const waiting = id === undefined ? undefined : this.pending.get(id);
    if (waiting === undefined) return;
    this.pending.delete(id!);
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

  private fail(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.closeReason = reason;
    for (const [id, waiting] of this.pending) {
      clearTimeout(waiting.timer);
      waiting.reject(new Error(`QMP ${waiting.command}: ${reason}`));
      this.pending.delete(id);
    }
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function openSocket(socketPath: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(socketPath);
    socket.once('connect', () => {
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

/** The first JSON line on a fresh connection (the greeting), without consuming what follows. */
function firstLine(socket: net.Socket, timeoutMs: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    const done = (error: Error | undefined, value?: unknown): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      if (error) {
        socket.destroy();
        reject(error);
      } else resolve(value);
    };
    const onData = (chunk: Buffer): void => {
      buffered += chunk.toString('utf8');
      const end = buffered.indexOf('\n');
      if (end < 0) return;
      // Anything after the greeting would be lost here; QEMU sends nothing before a command.
      socket.pause();
      try {
        done(undefined, JSON.parse(buffered.slice(0, end)));
      } catch {
        done(new Error(`not a QMP greeting: ${buffered.slice(0, 200)}`));
      }
    };
    const onClose = (): void => done(new Error('closed before the QMP greeting'));
    const timer = setTimeout(() => done(new Error(`no QMP greeting within ${timeoutMs} ms`)), timeoutMs);
    socket.on('data', onData);
    socket.once('close', onClose);
  });
}
