/**
 * LuoClient: luod's protocol (docs/protocol.md) for VMMs written in TypeScript.
 *
 *   const luo = await LuoClient.connect();          // $LUOD_SOCKET or /run/luod/liveupdate.sock
 *   await luo.hello();
 *   luo.onPreserve(async (sessions, update) => {     // START_PRESERVATION, fds adopted as Sessions
 *     sessions[0].preserveFd(guestRam, 1n);
 *     pauseVcpus();
 *   });                                              // resolves: READY is sent; throws: FAILED
 *   luo.onAborted(() => resumeVcpus());
 *   await luo.subscribe('vm-42');
 *   ...after the reboot, on a new connection:
 *   const [session] = await luo.claim('vm-42');     // incoming: retrieveFd(token), finish(), close()
 *   resumeVcpus();
 *   await luo.resumed({ id: 'vm-42', update: session.update, pausedAt, resumedAt });  // the blackout, recorded
 *
 * Every command waits for its reply (matched by `seq`); a refusal rejects
 * with a LuoClientError whose `code` is luod's errno name and whose message
 * is luod's sentence. When the connection drops, pending commands reject
 * with ECONNRESET.
 *
 * Ownership of session fds: the Sessions given to the preserve handler
 * belong to the client, which keeps them open until the update ends (as the
 * protocol asks) and closes them on ABORTED or disconnect. Sessions returned
 * by claim() belong to the caller.
 */
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import type { z } from 'zod';
import { adoptSession, type Session, sessionBackend } from '../kernel/index.js';
import {
  type AbortedEvent as AbortedMessage,
  AbortedEvent as AbortedSchema,
  KexecEvent as KexecSchema,
  ProgressEvent,
  StartPreservationEvent,
} from '../protocol/events.js';
import { LineChannel } from '../protocol/lines.js';
import { wholeList } from '../protocol/list-page.js';
import { checkMessage, PROTOCOL_VERSION, socketPath } from '../protocol/messages.js';
import {
  ClaimReply,
  type ClientsReply,
  HelloReply,
  type LoadReply,
  ResumedReply,
  type SessionsReply,
  type StatusReply,
  SubscribeReply,
  type UpdateReply,
} from '../protocol/replies.js';
import { wholeStatus } from '../protocol/status-page.js';
import { CodedError, errorCode } from '../sys/error.js';
import type { OwnedFd } from '../sys/fd.js';
import { fdTarget } from '../sys/proc.js';
import { UnixSocket } from '../sys/unix-socket.js';

/** A refusal from luod, or a failure to reach it. `code` is an errno name. */
export class LuoClientError extends CodedError {
  /** The command that failed (e.g. 'CLAIM'), when one did. */
  readonly command: string | undefined;

  constructor(code: string, message: string, command?: string) {
    super(code, message);
    this.name = 'LuoClientError';
    this.command = command;
  }
}

/** What START_PRESERVATION asks of this client. */
export interface PreservationRequest {
  readonly update: string;
  readonly id: string;
  /** Session names, in the order of the Sessions handed to the handler. */
  readonly sessions: readonly string[];
  readonly deadline: Date;
  /** Milliseconds luod gave when it sent the event. */
  readonly deadlineMs: number;
  /** Aborted when the update is cancelled (ABORTED) or the connection drops. */
  readonly signal: AbortSignal;
  /** The event as luod sent it. */
  readonly event: Readonly<Reply<StartPreservationEvent>>;
}

/** What ABORTED tells the handler (protocol/events.ts); `update` is '' when luod's event was malformed. */
export type AbortedEvent = Readonly<Pick<AbortedMessage, 'update' | 'reason'>>;

export interface KexecEvent {
  readonly update: string;
}

export interface DisconnectInfo {
  /** close() was called. */
  readonly byClient: boolean;
  /** A KEXEC event came before the connection dropped: the host is rebooting (emulated: has rebooted). */
  readonly afterKexec: boolean;
  /** Why, when it was an error (an EMFILE refusal from luod, a read failure). */
  readonly error?: LuoClientError;
}

/**
 * A reply as luod sent it: the fields its schema (protocol/replies.ts) names,
 * typed, and any others. Replies the client acts on (HELLO, SUBSCRIBE, CLAIM)
 * are checked against the schema; the others are handed over unchecked.
 */
export type Reply<T> = T & { readonly [field: string]: unknown };

export type HelloResult = Reply<HelloReply>;

export type SubscribeResult = SubscribeReply;

/** claim()'s sessions, with the update they come from. */
export type ClaimedSessions = Session[] & { readonly update: string; readonly id: string };

export type PreserveHandler = (sessions: Session[], update: PreservationRequest) => void | Promise<void>;
export type AbortedHandler = (event: AbortedEvent) => void | Promise<void>;
export type KexecHandler = (event: KexecEvent) => void | Promise<void>;
export type DisconnectHandler = (info: DisconnectInfo) => void;

export interface LuoClientEvents {
  /** Every event line luod sends (START_PRESERVATION, ABORTED, KEXEC, PROGRESS, ...). */
  event: [event: Record<string, unknown>];
  /** PROGRESS events of an UPDATE this connection sent. */
  progress: [event: Reply<ProgressEvent>];
  /** Something went wrong outside any command (a handler threw, READY was refused...). */
  warning: [error: Error];
  close: [info: DisconnectInfo];
}

export interface ConnectOptions {
  /** Reject a command whose reply takes longer than this (0, the default: wait for ever). */
  commandTimeoutMs?: number;
}

export interface RetryOptions extends ConnectOptions {
  /** Give up after this long (default 60 s). */
  timeoutMs?: number;
  /** Pause between attempts (default 100 ms). */
  intervalMs?: number;
  signal?: AbortSignal;
}

interface Pending {
  readonly seq: number;
  readonly cmd: string;
  readonly resolve: (reply: { body: Record<string, unknown>; fds: OwnedFd[] }) => void;
  readonly reject: (err: LuoClientError) => void;
  timer: NodeJS.Timeout | null;
}

interface CurrentUpdate {
  readonly request: PreservationRequest;
  readonly sessions: Session[];
  readonly controller: AbortController;
  /** READY or FAILED went out (from the handler's outcome or by hand). */
  answered: boolean;
  kexec: boolean;
  /** Settles when the preserve handler has returned (immediately without one). */
  handled: Promise<void>;
}

/**
 * A session fd luod sent, named `name`: adopted by the kernel layer. An fd
 * that is no session at all is luod breaking the protocol (EPROTO).
 */
function adoptSent(fd: OwnedFd, name: string): Session {
  if (sessionBackend(fd) === null)
    throw new LuoClientError(
      'EPROTO',
      `luod sent fd ${fd.fd} (${fdTarget(fd)}) as session ${name}, but it is not one`,
    );
  return adoptSession(fd, { name });
}

/** The session fds a message carried, one per name, adopted; on any problem every fd is closed. */
function adoptCarried(what: string, names: readonly string[], fds: OwnedFd[], command?: string): Session[] {
  try {
    if (fds.length !== names.length)
      throw new LuoClientError(
        'EPROTO',
        `${what}: luod named ${names.length} session(s) but sent ${fds.length} fd(s)`,
        command,
      );
    return fds.map((fd, i) => adoptSent(fd, names[i]!));
  } catch (err) {
    for (const fd of fds) fd.close();
    throw errorOf(err);
  }
}

/** A reply or event checked against its schema; a malformed one is luod's protocol error (EPROTO). */
function checked<T>(schema: z.ZodType<T>, value: unknown, what: string, command?: string): T {
  const result = checkMessage(schema, value);
  if (result.ok) return result.value;
  throw new LuoClientError('EPROTO', `luod sent a malformed ${what}: ${result.problem}`, command);
}

function errorOf(err: unknown, fallbackCode = 'EIO'): LuoClientError {
  if (err instanceof LuoClientError) return err;
  return new LuoClientError(errorCode(err, fallbackCode), (err as Error)?.message ?? String(err));
}

/**
 * Wait `ms`, or less: with `appears`, until a file of that path is created (inotify on
 * its directory). A VMM waiting for luod after a reboot then connects as soon as luod
 * binds its socket, not up to a retry interval later: that wait is the VM's blackout.
 * A directory that cannot be watched (missing yet, no inotify) leaves the plain wait.
 */
function sleep(ms: number, signal?: AbortSignal, appears?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new LuoClientError('ECANCELED', 'cancelled'));
      return;
    }
    let watcher: fs.FSWatcher | undefined;
    const done = (): void => {
      clearTimeout(timer);
      watcher?.close();
      signal?.removeEventListener('abort', onAbort);
    };
    const timer = setTimeout(() => {
      done();
      resolve();
    }, ms);
    const onAbort = () => {
      done();
      reject(new LuoClientError('ECANCELED', 'cancelled'));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    if (appears !== undefined) {
      try {
        const name = nodePath.basename(appears);
        watcher = fs.watch(nodePath.dirname(appears), { persistent: false }, (_event, file) => {
          if (file === name) {
            done();
            resolve();
          }
        });
        watcher.on('error', () => watcher?.close());
      } catch {
        watcher = undefined;
      }
    }
  });
}

export class LuoClient extends EventEmitter<LuoClientEvents> {
  /** The socket path this client connected to. */
  readonly path: string;
  readonly #channel: LineChannel;
  readonly #commandTimeoutMs: number;
  readonly #pending: Pending[] = [];
  #seq = 0;
  #closed = false;
  #closeInfo: DisconnectInfo | null = null;
  #refusal: LuoClientError | null = null;
  #current: CurrentUpdate | null = null;
  #sawKexec = false;
  #events: Promise<void> = Promise.resolve();
  #preserveHandler: PreserveHandler | null = null;
  #abortedHandler: AbortedHandler | null = null;
  #kexecHandler: KexecHandler | null = null;
  /** The optional commands luod listed in its HELLO reply; null: no HELLO (or not answered yet). */
  #luodCommands: readonly string[] | null = null;
  #resolveClosed!: (info: DisconnectInfo) => void;
  /** Settles when the connection is gone, for whatever reason. */
  readonly closed: Promise<DisconnectInfo>;

  private constructor(socket: UnixSocket, path: string, options: ConnectOptions) {
    super();
    this.path = path;
    this.#commandTimeoutMs = options.commandTimeoutMs ?? 0;
    this.closed = new Promise((resolve) => {
      this.#resolveClosed = resolve;
    });
    // Before the channel's own listener, which closes it without saying why.
    socket.on('error', (err) => this.#shutdown(false, errorOf(err)));
    this.#channel = new LineChannel(socket);
    this.#channel.on('message', (message, fds) => this.#onMessage(message as Record<string, unknown>, fds));
    this.#channel.on('malformed', (reason) => {
      const error = new LuoClientError(reason.code, `luod sent a malformed line: ${reason.message}`);
      if (reason.fatal) this.#shutdown(false, error);
      else this.#warn(error);
    });
    this.#channel.on('close', () => this.#shutdown(false));
  }

  /** Connect to luod (default: $LUOD_SOCKET, else /run/luod/liveupdate.sock). */
  static async connect(path: string = socketPath(), options: ConnectOptions = {}): Promise<LuoClient> {
    let socket: UnixSocket;
    try {
      socket = UnixSocket.connect(path);
    } catch (err) {
      const e = errorOf(err, 'ECONNREFUSED');
      throw new LuoClientError(e.code, `cannot connect to luod at ${path}: ${e.message}`);
    }
    return new LuoClient(socket, path, options);
  }

  /**
   * Connect, retrying while luod is not listening (ENOENT, ECONNREFUSED,
   * EAGAIN): what a VMM does after a reboot, when luod may not be up yet.
   * With `hello`, an attempt counts only once HELLO is answered.
   */
  static async connectWithRetry(
    path: string = socketPath(),
    options: RetryOptions & { hello?: boolean; client?: string } = {},
  ): Promise<LuoClient> {
    const deadline = Date.now() + (options.timeoutMs ?? 60_000);
    const interval = options.intervalMs ?? 100;
    let last: LuoClientError | null = null;
    while (Date.now() < deadline) {
      try {
        const client = await LuoClient.connect(path, options);
        if (!options.hello) return client;
        try {
          await client.hello(options.client !== undefined ? { client: options.client } : {});
          return client;
        } catch (err) {
          client.close();
          throw err;
        }
      } catch (err) {
        last = errorOf(err);
        if (!['ENOENT', 'ECONNREFUSED', 'EAGAIN', 'ECONNRESET', 'EPIPE', 'EMFILE'].includes(last.code))
          throw last;
      }
      // Not there yet (ENOENT): woken as soon as luod creates its socket.
      await sleep(
        Math.min(interval, Math.max(0, deadline - Date.now())),
        options.signal,
        last?.code === 'ENOENT' ? path : undefined,
      );
    }
    throw new LuoClientError(
      'ETIMEDOUT',
      `luod did not answer at ${path} within ${options.timeoutMs ?? 60_000} ms${last ? ` (${last.code}: ${last.message})` : ''}`,
    );
  }

  get isClosed(): boolean {
    return this.#closed;
  }

  /** The update this client is taking part in (between START_PRESERVATION and its end). */
  get currentUpdate(): PreservationRequest | null {
    return this.#current?.request ?? null;
  }

  /** Let the process exit while this connection is open. */
  unref(): this {
    this.#channel.socket.unref();
    return this;
  }

  ref(): this {
    this.#channel.socket.ref();
    return this;
  }

  // ---- handlers --------------------------------------------------------

  /**
   * Called on START_PRESERVATION with the session fds adopted as Sessions.
   * When it resolves the client sends READY; when it throws, FAILED with the
   * error's message. (Call ready()/failed() yourself instead by not setting
   * one.) `update.signal` aborts if the update is cancelled meanwhile.
   */
  onPreserve(handler: PreserveHandler | null): this {
    this.#preserveHandler = handler;
    return this;
  }

  /** Called on ABORTED, after the preserve handler has returned; the sessions are closed by then. */
  onAborted(handler: AbortedHandler | null): this {
    this.#abortedHandler = handler;
    return this;
  }

  /** Called on KEXEC (the host reboots next). */
  onKexec(handler: KexecHandler | null): this {
    this.#kexecHandler = handler;
    return this;
  }

  /** Called once when the connection is gone. */
  onDisconnect(handler: DisconnectHandler): this {
    void this.closed.then(handler);
    return this;
  }

  // ---- commands --------------------------------------------------------

  /** Protocol negotiation (optional; version 1 is assumed without it). */
  async hello(options: { versions?: number[]; client?: string } = {}): Promise<HelloResult> {
    const { body } = await this.request('HELLO', {
      versions: options.versions ?? [PROTOCOL_VERSION],
      client: options.client ?? `luokit-client/${PROTOCOL_VERSION}`,
    });
    const reply = checked(HelloReply, body, 'HELLO reply', 'HELLO') as HelloResult;
    this.#luodCommands = reply.commands ?? [];
    return reply;
  }

  /** Join the barrier of every live update as `id`, with `sessions` LUO sessions (1 to 8). */
  async subscribe(id: string, options: { sessions?: number } = {}): Promise<SubscribeResult> {
    const { body } = await this.request('SUBSCRIBE', {
      id,
      ...(options.sessions !== undefined && { sessions: options.sessions }),
    });
    const reply = checked(SubscribeReply, body, 'SUBSCRIBE reply', 'SUBSCRIBE');
    return { id: reply.id, sessions: reply.sessions };
  }

  async unsubscribe(): Promise<void> {
    await this.request('UNSUBSCRIBE');
  }

  /** Tell luod this client has preserved everything (done for you when a preserve handler resolves). */
  async ready(): Promise<void> {
    const current = this.#current;
    if (current) current.answered = true;
    await this.request('READY', current ? { update: current.request.update } : {});
  }

  /** Tell luod this client cannot preserve: the update is aborted for everyone. */
  async failed(reason: string): Promise<void> {
    const current = this.#current;
    if (current) current.answered = true;
    await this.request('FAILED', {
      ...(current && { update: current.request.update }),
      reason: reason.slice(0, 1024),
    });
  }

  /**
   * After the reboot: take the sessions `id` had, as incoming Sessions, in
   * order. The caller owns them: retrieveFd(token) each file, finish(), close().
   * `force` lets root claim another uid's sessions.
   */
  async claim(id: string, options: { force?: boolean } = {}): Promise<ClaimedSessions> {
    const { body, fds } = await this.request(
      'CLAIM',
      { id, ...(options.force && { force: true }) },
      { keepFds: true },
    );
    let reply: ClaimReply;
    try {
      reply = checked(ClaimReply, body, `CLAIM reply for ${id}`, 'CLAIM');
    } catch (err) {
      for (const fd of fds) fd.close();
      throw err;
    }
    const sessions = adoptCarried(`CLAIM of ${id}`, reply.sessions, fds, 'CLAIM');
    return Object.assign(sessions, { update: reply.update, id: reply.id });
  }

  /**
   * After resuming the VM (once its memory is back from CLAIM, or after ABORTED): tell
   * luod the VM's blackout, from pausing it to resuming it, as wall-clock epoch ms
   * (Date.now()). luod keeps it in the update's record; it is the blackout `luoctl
   * report`, the metrics and the demo show. Resolves with luod's figure in ms, or null
   * when this luod predates RESUMED (its HELLO did not list it, or it answered ENOTSUP):
   * the VM is fine either way, only the record lacks it. Other refusals reject (ENOENT:
   * luod has no record of that update or id; EPERM; EEXIST: a different report came first).
   */
  async resumed(report: {
    id: string;
    update: string;
    pausedAt: number;
    resumedAt: number;
  }): Promise<number | null> {
    if (this.#luodCommands !== null && !this.#luodCommands.includes('RESUMED')) return null;
    let body: Record<string, unknown>;
    try {
      ({ body } = await this.request('RESUMED', {
        id: report.id,
        update: report.update,
        paused_at: report.pausedAt,
        resumed_at: report.resumedAt,
      }));
    } catch (err) {
      if (errorCode(err) === 'ENOTSUP') return null;
      throw err;
    }
    return checked(ResumedReply, body, 'RESUMED reply', 'RESUMED').blackout_ms;
  }

  /** luod's STATUS, whole: a luod with many clients sends it in pages, joined here (status-page.ts). */
  async status(): Promise<Reply<StatusReply>> {
    return wholeStatus(async (page) => (await this.request('STATUS', page ?? {})).body as Reply<StatusReply>);
  }

  // Admin commands (root or luod's uid).

  /** Run a live update; resolves with luod's outcome when it is over. */
  async update(
    options: {
      timeoutMs?: number;
      dryRun?: boolean;
      onProgress?: (event: Reply<ProgressEvent>) => void;
    } = {},
  ): Promise<Reply<UpdateReply>> {
    const listener = options.onProgress;
    if (listener) this.on('progress', listener);
    try {
      return (
        await this.request('UPDATE', {
          ...(options.timeoutMs !== undefined && { timeout_ms: options.timeoutMs }),
          ...(options.dryRun && { dry_run: true }),
        })
      ).body as Reply<UpdateReply>;
    } finally {
      if (listener) this.off('progress', listener);
    }
  }

  async abort(reason?: string): Promise<void> {
    await this.request('ABORT', reason !== undefined ? { reason } : {});
  }

  /** Every connected client (the pages of a long list joined: list-page.ts). */
  async clients(): Promise<ClientsReply['clients']> {
    const reply = await wholeList(
      'clients',
      (c: ClientsReply['clients'][number]) => (c.id === null ? null : `id:${c.id}`),
      async (page) => ({
        clients: [],
        ...((await this.request('CLIENTS', page ?? {})).body as Partial<ClientsReply>),
      }),
    );
    return reply.clients;
  }

  /** Every session luod holds (the pages of a long list joined: list-page.ts). */
  async sessions(): Promise<SessionsReply['sessions']> {
    const reply = await wholeList(
      'sessions',
      (s: SessionsReply['sessions'][number]) => s.name,
      async (page) => ({
        sessions: [],
        ...((await this.request('SESSIONS', page ?? {})).body as Partial<SessionsReply>),
      }),
    );
    return reply.sessions;
  }

  async load(
    options: { kernel?: string; initrd?: string; cmdline?: string; emuVersion?: string } = {},
  ): Promise<Reply<LoadReply>> {
    return (
      await this.request('LOAD', {
        ...(options.kernel !== undefined && { kernel: options.kernel }),
        ...(options.initrd !== undefined && { initrd: options.initrd }),
        ...(options.cmdline !== undefined && { cmdline: options.cmdline }),
        ...(options.emuVersion !== undefined && { emu_version: options.emuVersion }),
      })
    ).body as Reply<LoadReply>;
  }

  /**
   * Send any command and wait for its reply. Resolves with the reply's fields
   * (and its fds with `keepFds`; otherwise they are closed); rejects with a
   * LuoClientError when luod refuses or the connection drops.
   */
  request(
    cmd: string,
    fields: Record<string, unknown> = {},
    options: { keepFds?: boolean; timeoutMs?: number } = {},
  ): Promise<{ body: Record<string, unknown>; fds: OwnedFd[] }> {
    if (this.#closed) return Promise.reject(this.#goneError(cmd));
    const seq = ++this.#seq;
    return new Promise((resolve, reject) => {
      const pending: Pending = {
        seq,
        cmd,
        timer: null,
        resolve: (reply) => {
          if (!options.keepFds) {
            for (const fd of reply.fds) fd.close();
            resolve({ body: reply.body, fds: [] });
          } else {
            resolve(reply);
          }
        },
        reject,
      };
      const timeoutMs = options.timeoutMs ?? this.#commandTimeoutMs;
      if (timeoutMs > 0) {
        pending.timer = setTimeout(() => {
          this.#drop(pending);
          reject(new LuoClientError('ETIMEDOUT', `${cmd}: luod did not answer within ${timeoutMs} ms`, cmd));
        }, timeoutMs);
      }
      this.#pending.push(pending);
      this.#channel.send({ ...fields, cmd, seq }).catch((err) => {
        if (this.#drop(pending)) reject(this.#goneError(cmd, errorOf(err)));
      });
    });
  }

  /** Close the connection. Sessions of an update in progress are closed (after the preserve handler returns). */
  close(): void {
    this.#shutdown(true);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  // ---- receiving -------------------------------------------------------

  /** One JSON object from luod (LineChannel has framed and parsed it, and attached its fds). */
  #onMessage(message: Record<string, unknown>, fds: OwnedFd[]): void {
    if ('ok' in message) this.#onReply(message, fds);
    else if (typeof message.event === 'string') this.#onEvent(message, fds);
    else {
      for (const fd of fds) fd.close();
      this.#warn(
        new LuoClientError(
          'EPROTO',
          `luod sent a line that is neither a reply nor an event: ${JSON.stringify(message).slice(0, 80)}`,
        ),
      );
    }
  }

  #onReply(reply: Record<string, unknown>, fds: OwnedFd[]): void {
    let pending: Pending | undefined;
    if (reply.seq !== undefined) {
      pending = this.#pending.find((p) => p.seq === reply.seq);
    } else if (reply.ok === false) {
      // A reply without seq answers no command of ours: luod refused the
      // connection (EMFILE) or a line it could not parse.
      for (const fd of fds) fd.close();
      const error = this.#errorFrom(reply, undefined);
      this.#refusal = error;
      this.#warn(error);
      return;
    } else {
      pending = this.#pending[0];
    }
    if (!pending) {
      for (const fd of fds) fd.close();
      this.#warn(new LuoClientError('EPROTO', `a reply for no pending command (seq ${String(reply.seq)})`));
      return;
    }
    this.#drop(pending);
    if (reply.ok === true) {
      const { ok: _ok, seq: _seq, ...body } = reply;
      pending.resolve({ body, fds });
    } else {
      for (const fd of fds) fd.close();
      pending.reject(this.#errorFrom(reply, pending.cmd));
    }
  }

  #errorFrom(reply: Record<string, unknown>, cmd: string | undefined): LuoClientError {
    const error = (reply.error ?? {}) as { code?: unknown; message?: unknown };
    const code = errorCode(error);
    const message = typeof error.message === 'string' ? error.message : `${cmd ?? 'luod'} failed (${code})`;
    return new LuoClientError(code, message, cmd);
  }

  #onEvent(event: Record<string, unknown>, fds: OwnedFd[]): void {
    if (event.event !== 'START_PRESERVATION') for (const fd of fds) fd.close();
    this.emit('event', event);
    switch (event.event) {
      case 'START_PRESERVATION':
        this.#onStartPreservation(event, fds);
        break;
      case 'ABORTED':
        this.#onAbortedEvent(event);
        break;
      case 'KEXEC':
        this.#onKexecEvent(event);
        break;
      case 'PROGRESS': {
        const progress = this.#checkEvent(ProgressEvent, event, 'PROGRESS');
        if (progress) this.emit('progress', progress);
        break;
      }
      default:
        break; // events this client does not know are ignored, as the protocol allows
    }
  }

  #onStartPreservation(event: Record<string, unknown>, fds: OwnedFd[]): void {
    const previous = this.#current;
    if (previous) {
      // A new update while the last one is open: luod has given up on it.
      previous.controller.abort();
      void previous.handled.then(() => this.#closeSessions(previous));
    }
    let message: StartPreservationEvent;
    let sessions: Session[];
    try {
      message = checked(StartPreservationEvent, event, 'START_PRESERVATION');
      sessions = adoptCarried('START_PRESERVATION', message.sessions, fds);
    } catch (err) {
      for (const fd of fds) fd.close();
      this.#current = null;
      const reason = `the session fds could not be used: ${errorOf(err).message}`;
      this.#warn(errorOf(err));
      const update = typeof event.update === 'string' ? { update: event.update } : {};
      this.request('FAILED', { ...update, reason }).catch((e) => this.#warn(errorOf(e)));
      return;
    }
    const controller = new AbortController();
    const request: PreservationRequest = {
      update: message.update,
      id: message.id,
      sessions: message.sessions,
      deadline: new Date(message.deadline),
      deadlineMs: message.deadline_ms,
      signal: controller.signal,
      event: event as Reply<StartPreservationEvent>,
    };
    const current: CurrentUpdate = {
      request,
      sessions,
      controller,
      answered: false,
      kexec: false,
      handled: Promise.resolve(),
    };
    this.#current = current;
    const handler = this.#preserveHandler;
    if (!handler) return;
    current.handled = (async () => {
      let failure: Error | null = null;
      try {
        await handler(sessions, request);
      } catch (err) {
        failure = err instanceof Error ? err : new Error(String(err));
      }
      if (current.answered || controller.signal.aborted || this.#closed) return;
      try {
        if (failure) await this.failed(failure.message || 'the preserve handler failed');
        else await this.ready();
      } catch (err) {
        // e.g. EBUSY: the update was aborted while the handler ran (ABORTED follows).
        this.#warn(errorOf(err));
      }
    })();
  }

  #onAbortedEvent(event: Record<string, unknown>): void {
    // A malformed ABORTED still ends the update in progress: resuming the VM is the safe side.
    const message = this.#checkEvent(AbortedSchema, event, 'ABORTED');
    const info: AbortedEvent = message
      ? { update: message.update, reason: message.reason }
      : { update: '', reason: 'luod sent a malformed ABORTED' };
    const current = this.#current;
    if (current && (info.update === '' || info.update === current.request.update)) {
      this.#current = null;
      current.controller.abort();
    }
    this.#queue(async () => {
      if (current) {
        await current.handled;
        this.#closeSessions(current);
      }
      await this.#abortedHandler?.(info);
    });
  }

  #onKexecEvent(event: Record<string, unknown>): void {
    // Acted on even when malformed: the host reboots either way.
    const info: KexecEvent = { update: this.#checkEvent(KexecSchema, event, 'KEXEC')?.update ?? '' };
    this.#sawKexec = true;
    if (this.#current) this.#current.kexec = true;
    this.#queue(async () => {
      await this.#kexecHandler?.(info);
    });
  }

  /** An event checked against its schema; a malformed one is a warning, and null. */
  #checkEvent<T>(schema: z.ZodType<T>, event: unknown, name: string): T | null {
    try {
      return checked(schema, event, name);
    } catch (err) {
      this.#warn(errorOf(err));
      return null;
    }
  }

  /** Run event handlers one after another, in the order the events came. */
  #queue(step: () => Promise<void>): void {
    this.#events = this.#events.then(step).catch((err) => this.#warn(errorOf(err)));
  }

  #closeSessions(current: CurrentUpdate): void {
    for (const session of current.sessions) session.close();
  }

  #warn(error: Error): void {
    if (this.listenerCount('warning') > 0) this.emit('warning', error);
  }

  #drop(pending: Pending): boolean {
    const i = this.#pending.indexOf(pending);
    if (i < 0) return false;
    this.#pending.splice(i, 1);
    if (pending.timer) clearTimeout(pending.timer);
    return true;
  }

  #goneError(cmd: string, cause?: LuoClientError): LuoClientError {
    const refusal = this.#refusal ?? this.#closeInfo?.error;
    if (refusal) return new LuoClientError(refusal.code, `${cmd}: ${refusal.message}`, cmd);
    const why = this.#closeInfo?.byClient ? 'the client closed the connection' : 'luod closed the connection';
    return new LuoClientError(
      'ECONNRESET',
      `${cmd}: ${why}${cause ? ` (${cause.code}: ${cause.message})` : ''}${this.#sawKexec ? ' (the host rebooted: KEXEC)' : ''}`,
      cmd,
    );
  }

  #shutdown(byClient: boolean, error?: LuoClientError): void {
    if (this.#closed) return;
    this.#closed = true;
    const info: DisconnectInfo = {
      byClient,
      afterKexec: this.#sawKexec,
      ...((error ?? this.#refusal) && { error: (error ?? this.#refusal)! }),
    };
    this.#closeInfo = info;
    this.#channel.close();
    const pending = this.#pending.splice(0);
    for (const p of pending) {
      if (p.timer) clearTimeout(p.timer);
      p.reject(this.#goneError(p.cmd));
    }
    const current = this.#current;
    this.#current = null;
    if (current) {
      current.controller.abort();
      void current.handled.then(() => this.#closeSessions(current));
    }
    // After the handlers of events already received.
    this.#queue(async () => {
      this.#resolveClosed(info);
      this.emit('close', info);
    });
  }
}
