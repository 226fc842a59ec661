/**
 * luod: the host's live update agent (delegation architecture).
 *
 * Lifecycle of one live update:
 *  1. idle: VMMs connect and SUBSCRIBE with an id; luod records their uid.
 *  2. LOAD: the next kernel is loaded (kexec_file_load) or, emulated, chosen.
 *  3. UPDATE: luod opens /dev/liveupdate, creates each subscriber's sessions,
 *     sends START_PRESERVATION with the session fds, and waits for every
 *     READY (the barrier). luod keeps its own copy of every session fd: a
 *     session lives as long as any fd refers to it.
 *  4. Barrier failure (disconnect, FAILED, deadline, ABORT): luod closes
 *     every session (the kernel unpreserves), sends ABORTED, kexecs nothing.
 *  5. Success: luod writes its own state into the `luod-internal` session,
 *     releases the device, sends KEXEC, and reboots. A refusal (freeze
 *     failure) aborts as in 4, with the host still running.
 *  6. After the reboot luod starts early, reads `luod-internal`, retrieves
 *     every session, and hands each to the client that CLAIMs it (same uid).
 *     Sessions not claimed by the claim deadline are finished and released,
 *     loudly.
 * The device is held only while needed: the session fds keep sessions alive.
 *
 * Crash safety (keeper.ts): luod is never the only holder of a session fd.
 * A SessionKeeper gives a copy of each to systemd's fd store or to the holder
 * process, and a restarted luod takes them back (adoptRecovered): an update
 * cut before its kexec is aborted (its clients get ABORTED when they
 * subscribe again), one cut after its kexec goes on serving CLAIMs.
 *
 * Where each step lives:
 *  - this file: connections, admission (#refusal), back-pressure, and
 *    command dispatch (#execute); SUBSCRIBE, READY, LOAD, STATUS;
 *  - update-run.ts: steps 3 to 5, an UpdateRun with its endings;
 *  - claims.ts: step 6 and adoptRecovered, recovery and claims;
 *  - update-records.ts: the update record, from UPDATE to the last claim;
 *  - context.ts: what they share (the phase, the run, the last outcome).
 */
import type { Logger } from 'pino';
import { gateVerdict } from '../image/gate.js';
import type { Session } from '../kernel/device.js';
import type { AbortedEvent, ProgressEvent } from '../protocol/events.js';
import { type LineChannel, MAX_FDS_PER_LINE, MAX_LINE_BYTES } from '../protocol/lines.js';
import { pageList } from '../protocol/list-page.js';
import {
  ADMIN_COMMANDS,
  Command,
  DEFAULT_MAX_CLIENTS,
  describeInvalid,
  MAX_ID_LENGTH,
  OPTIONAL_COMMANDS,
  PROTOCOL_VERSION,
  parseHotCommand,
  sessionNames,
} from '../protocol/messages.js';
import type {
  ClientsReply,
  GateReport,
  HelloReply,
  LoadReply,
  ResumedReply,
  SessionsReply,
  StatusReply,
  SubscribeReply,
  UpdateReply,
} from '../protocol/replies.js';
import { pageStatus } from '../protocol/status-page.js';
import type { RecordStore } from '../record/store.js';
import { errorCode } from '../sys/error.js';
import type { OwnedFd } from '../sys/fd.js';
import { tieredSafeParse } from '../sys/tiered-parse.js';
import { capacity } from './capacity.js';
import { Claims } from './claims.js';
import {
  type Client,
  type CommandResult,
  fail,
  type LuodContext,
  type Phase,
  type PhaseEvent,
  type UpdateOutcome,
} from './context.js';
import type { PhaseMark } from './handover-state.js';
import { IdOwners } from './id-owners.js';
import type { Recovered, SessionKeeper } from './keeper.js';
import type { LoadRequest, LuodKernel } from './kernel.js';
import type { LuodGauges, LuodMetrics } from './metrics.js';
import { UpdateRecords } from './update-records.js';
import { newUpdateId, UpdateRun } from './update-run.js';

export { LuodError } from './context.js';
export type { Phase, PhaseEvent, UpdateOutcome };

/** What the Command schema accepts as `seq`: the only part of a bad message ever echoed. */
function validSeq(seq: unknown): seq is number | string {
  return (typeof seq === 'number' && Number.isFinite(seq)) || (typeof seq === 'string' && seq.length <= 64);
}

/** Unread output luod keeps for one client before it gives up on that client. */
const MAX_QUEUED_BYTES = 4 << 20;

/**
 * Back-pressure: luod stops reading a client's commands while this many are
 * unanswered, or while this much of its output is unread. A client that
 * pipelines commands without reading the replies then waits in its own
 * send buffer instead of growing luod's memory.
 */
const MAX_INFLIGHT = 8;
const OUTPUT_HIGH_WATER = 256 << 10;

/** Commands that change nothing: answered even while the holder takes the incoming sessions. */
const QUERIES = new Set(['HELLO', 'STATUS', 'CLIENTS', 'SESSIONS']);
/**
 * Connection slots only root, luod's own uid, and uids with sessions to
 * claim may take: after a kexec a VMM must reach luod before its claim
 * deadline, however many other connections are open.
 */
export const RESERVED_SLOTS = 16;
/** Connections one (non-admin) uid may keep open without having subscribed an id. */
export const MAX_ANONYMOUS_PER_UID = 32;

export interface LuodOptions {
  kernel: LuodKernel;
  log: Logger;
  claimTimeoutMs?: number;
  version?: string;
  /** Where each update's record is written (record/store.ts); none: records are only logged. */
  records?: RecordStore;
  metrics?: LuodMetrics;
  /**
   * Told of every phase mark as it happens (before a kexec, before the
   * reboot call), for observers outside luod: a benchmark or a tracer.
   * It must be quick and must not throw; luod ignores what it throws.
   */
  onPhase?: (mark: PhaseEvent) => void;
  /** Who else holds the session fds (none: luod alone, as in unit tests). */
  keeper?: SessionKeeper;
  /** Which uid owns which client id (id-owners.ts); default: kept in memory only. */
  owners?: IdOwners;
  /** Connections served at once (luod --max-clients); default DEFAULT_MAX_CLIENTS. */
  maxClients?: number;
  /**
   * luod --require-qualified DIR: LOAD (and so UPDATE) also refuses a pair with no passing
   * qualification record in DIR (qualify/policy.ts; docs/qualify.md).
   */
  requireQualified?: string;
}

export class Luod {
  readonly #clients = new Set<Client>();
  readonly #ctx: LuodContext;
  readonly #claims: Claims;
  readonly #version: string;
  readonly #maxClients: number;
  readonly #onPhase: ((mark: PhaseEvent) => void) | undefined;
  readonly #requireQualified: string | undefined;
  /** A LOAD is running (kexec_file_load takes a while): no UPDATE or second LOAD meanwhile. */
  #loading = false;

  constructor(options: LuodOptions) {
    const log = options.log;
    const metrics = options.metrics ?? null;
    this.#version = options.version ?? '0.1.0';
    this.#maxClients = options.maxClients ?? DEFAULT_MAX_CLIENTS;
    this.#onPhase = options.onPhase;
    this.#requireQualified = options.requireQualified;
    this.#ctx = {
      kernel: options.kernel,
      log,
      claimTimeoutMs: options.claimTimeoutMs ?? 60_000,
      keeper: options.keeper ?? null,
      metrics,
      owners: options.owners ?? new IdOwners(null, log),
      records: new UpdateRecords({ store: options.records ?? null, metrics, log, kernel: options.kernel }),
      phase: 'idle',
      run: null,
      lastUpdate: null,
      loaded: null,
      loadSpan: null,
      mark: (timeline, update, phase, client) => this.#mark(timeline, update, phase, client),
      notify: (client, event) => this.#notify(client, event),
    };
    this.#claims = new Claims(this.#ctx);
    metrics?.watch(() => this.gauges());
  }

  /** The update's logger while one is in progress (every line carries its id), else luod's. */
  get #activeLog(): Logger {
    return this.#ctx.records.log;
  }

  /** The id of the update in progress (until every claim), or null. */
  get updateId(): string | null {
    return this.#ctx.records.current?.update ?? null;
  }

  /** Record a phase mark in `timeline` (when given) and tell the observer. */
  #mark(
    timeline: PhaseMark[] | undefined,
    update: string | undefined,
    phase: string,
    client?: string,
  ): PhaseMark {
    const mark: PhaseMark = { phase, at: Date.now(), ...(client !== undefined && { client }) };
    timeline?.push(mark);
    try {
      this.#onPhase?.({ ...mark, ...(update !== undefined && { update }) });
    } catch (err) {
      this.#ctx.log.warn({ err, phase }, 'the phase observer failed');
    }
    return mark;
  }

  get phase(): Phase {
    return this.#ctx.phase;
  }

  /**
   * A restarted luod: what its keeper took back from the fd holder. Runs
   * before recover(), which it makes unnecessary when sessions came back.
   */
  adoptRecovered(recovered: Recovered): void {
    this.#claims.adoptRecovered(recovered);
  }

  /** On the emulated kernel, after each kexec: take back what the previous kernel handed over. */
  recover(): Promise<void> {
    return this.#claims.recover();
  }

  /**
   * luod's start: recover() until the sessions are back in luod; the holder's
   * copies follow while luod listens, and only queries are answered until then.
   */
  restore(): Promise<void> {
    return this.#claims.restore();
  }

  /** Settles once no update record is being written (luod's stop). */
  recordsWritten(): Promise<void> {
    return this.#ctx.records.idle();
  }

  /** A new connection: admitted (see #refusal), or told why not and closed. */
  accept(channel: LineChannel): void {
    let cred: ReturnType<LineChannel['socket']['peerCredentials']>;
    try {
      cred = channel.socket.peerCredentials();
    } catch {
      channel.close(); // the peer is already gone
      return;
    }
    const refusal = this.#refusal(cred.uid);
    if (refusal) {
      this.#ctx.metrics?.protocolError('refused-connection');
      // The peer may have hung up already (EPIPE): nothing to tell it then.
      channel
        .send({ ok: false, error: { code: 'EMFILE', message: refusal } })
        .catch(() => {})
        .finally(() => channel.close());
      return;
    }
    const client: Client = {
      channel,
      uid: cred.uid,
      pid: cred.pid,
      id: null,
      sessionCount: 1,
      malformed: 0,
      inflight: 0,
    };
    this.#clients.add(client);
    channel.on('message', (value, fds) => {
      for (const fd of fds) fd.close(); // luod never takes fds from clients
      this.#received(client, value);
    });
    channel.on('malformed', (reason) => {
      client.malformed++;
      this.#ctx.metrics?.protocolError('malformed-line');
      // A fatal one closes the channel right after: the reply goes out if the socket takes it now.
      void channel.send({ ok: false, error: { code: reason.code, message: reason.message } }).catch(() => {});
      if (reason.fatal)
        this.#activeLog.warn({ pid: client.pid, uid: client.uid, code: reason.code }, reason.message);
      if (client.malformed > 16) {
        this.#activeLog.warn(
          { pid: client.pid, uid: client.uid },
          'disconnecting a client that keeps sending malformed lines',
        );
        channel.close();
      }
    });
    channel.socket.on('drain', () => this.#maybeResume(client));
    channel.on('close', () => this.#onClose(client));
  }

  /** accept() failed (out of fds, most likely): the server retries; this is worth a line in the log. */
  acceptFailed(err: Error): void {
    this.#activeLog.warn({ err, clients: this.#clients.size }, 'cannot accept a connection');
  }

  #isAdmin(uid: number): boolean {
    return uid === 0 || uid === process.getuid?.();
  }

  /** Why a connection from `uid` is not admitted, or null. */
  #refusal(uid: number): string | null {
    const open = this.#clients.size;
    const max = this.#maxClients;
    if (open >= max) return `luod serves at most ${max} clients (luod --max-clients)`;
    if (this.#isAdmin(uid)) return null;
    if (this.#claims.hasPendingFor(uid)) return null;
    if (open >= max - RESERVED_SLOTS)
      return `luod's last ${RESERVED_SLOTS} connection slots are kept for root and for VMMs with sessions to claim`;
    let anonymous = 0;
    for (const c of this.#clients) if (c.uid === uid && c.id === null) anonymous++;
    if (anonymous >= MAX_ANONYMOUS_PER_UID)
      return `uid ${uid} already has ${anonymous} connections that have not subscribed (at most ${MAX_ANONYMOUS_PER_UID})`;
    return null;
  }

  /** One command in: counted for back-pressure, handled, and never a source of an unhandled rejection. */
  #received(client: Client, value: unknown): void {
    client.inflight++;
    this.#maybePause(client);
    this.#onMessage(client, value)
      .catch((err) => this.#activeLog.error({ err, pid: client.pid }, 'a command failed unexpectedly'))
      .finally(() => {
        client.inflight--;
        this.#maybeResume(client);
      });
  }

  #maybePause(client: Client): void {
    if (client.inflight >= MAX_INFLIGHT || client.channel.socket.pendingBytes > OUTPUT_HIGH_WATER)
      client.channel.pause();
  }

  #maybeResume(client: Client): void {
    if (!client.channel.paused) return;
    if (client.inflight < MAX_INFLIGHT && client.channel.socket.pendingBytes <= OUTPUT_HIGH_WATER / 2)
      client.channel.resume();
  }

  async #onMessage(client: Client, value: unknown): Promise<void> {
    // Echo `seq` only when it is one: a reply never repeats what failed validation.
    const rawSeq = (value as { seq?: unknown }).seq;
    const seq = validSeq(rawSeq) ? rawSeq : undefined;
    if (this.#dropIfNotReading(client)) return;
    const reply = (body: object, fds: OwnedFd[] | Session[] = []) =>
      client.channel
        .send(
          { ...(seq !== undefined && { seq }), ...body },
          fds.map((f) => f.fd),
        )
        .catch(() => {});
    // The hot commands by hand (parseHotCommand), every other message through the schema.
    const hot = parseHotCommand(value);
    const parsed = hot ? { success: true as const, data: hot } : tieredSafeParse(Command, value);
    if (!parsed.success) {
      client.malformed++;
      const cmd = (value as { cmd?: unknown }).cmd;
      const known = typeof cmd === 'string' && Command.options.some((o) => o.shape.cmd.value === cmd);
      this.#ctx.metrics?.protocolError(known ? 'invalid-command' : 'unknown-command');
      await reply({
        ok: false,
        error: known
          ? { code: 'EINVAL', message: `${cmd}: ${describeInvalid(parsed.error)}` }
          : {
              code: 'ENOTSUP',
              message:
                typeof cmd === 'string' && /^[A-Z_]{1,32}$/.test(cmd)
                  ? `unknown command ${cmd}`
                  : 'the message has no "cmd" naming a command',
            },
      });
      if (client.malformed > 16) client.channel.close();
      return;
    }
    const command = parsed.data;
    // Started after a kexec, luod listens while the holder takes the incoming sessions
    // (claims.ts, restore()): until it has them all, only queries are answered.
    if (this.#claims.keeping && !QUERIES.has(command.cmd)) await this.#claims.kept;
    try {
      if (ADMIN_COMMANDS.has(command.cmd) && !this.#isAdmin(client.uid)) {
        throw fail('EPERM', `${command.cmd} is an admin command: only root or luod's own uid may send it`);
      }
      const result = await this.#execute(client, command, reply);
      if (result === undefined) return;
      const delivered = await client.channel
        .send(
          { ...(seq !== undefined && { seq }), ok: true, ...result.body },
          (result.fds ?? []).map((f) => f.fd),
        )
        .then(
          () => true,
          () => false,
        );
      if (delivered) result.delivered?.();
      else result.undelivered?.();
    } catch (err) {
      await reply({ ok: false, error: { code: errorCode(err), message: (err as Error).message } });
    }
  }

  async #execute(
    client: Client,
    command: Command,
    reply: (body: object) => Promise<void>,
  ): Promise<CommandResult | undefined> {
    switch (command.cmd) {
      case 'HELLO': {
        const offered = command.versions ?? [PROTOCOL_VERSION];
        if (!offered.includes(PROTOCOL_VERSION)) {
          throw fail(
            'ENOTSUP',
            `luod speaks protocol version ${PROTOCOL_VERSION}; the client offered ${offered.join(', ')}`,
          );
        }
        return {
          body: {
            version: PROTOCOL_VERSION,
            server: `luod/${this.#version}`,
            backend: this.#ctx.kernel.backend,
            limits: {
              max_line: MAX_LINE_BYTES,
              max_fds: MAX_FDS_PER_LINE,
              max_clients: this.#maxClients,
              max_id: MAX_ID_LENGTH,
            },
            commands: [...OPTIONAL_COMMANDS],
          } satisfies HelloReply,
        };
      }
      case 'SUBSCRIBE':
        return { body: this.#subscribe(client, command.id, command.sessions ?? 1) };
      case 'UNSUBSCRIBE':
        if (this.#ctx.run && client.id && this.#ctx.run.participants.has(client.id)) {
          this.#ctx.run.fail(`${client.id} unsubscribed during the update`);
        }
        client.id = null;
        return { body: {} };
      case 'READY':
        return { body: this.#ready(client, command.update) };
      case 'FAILED': {
        const update = this.#ctx.run;
        if (!update || !client.id || !update.participants.has(client.id))
          throw fail('EBUSY', 'no update is waiting for this client');
        update.fail(`${client.id} failed: ${command.reason ?? 'no reason given'}`);
        return { body: {} };
      }
      case 'CLAIM':
        return await this.#claims.claim(client.uid, command.id, command.force === true);
      case 'RESUMED': {
        const ms = await this.#ctx.records.resumed(
          {
            id: command.id,
            update: command.update,
            pausedAt: command.paused_at,
            resumedAt: command.resumed_at,
          },
          { uid: client.uid, admin: this.#isAdmin(client.uid) },
        );
        return { body: { blackout_ms: ms } satisfies ResumedReply };
      }
      case 'STATUS': {
        const full = this.#isAdmin(client.uid) ? this.status() : this.#statusFor(client.uid);
        // Whole when it fits a line, else a page (status-page.ts); room left for `seq` and `ok`.
        return {
          body: pageStatus(
            full as StatusReply,
            { offset: command.offset, limit: command.limit },
            MAX_LINE_BYTES - 256,
          ),
        };
      }
      // Whole when they fit a line, else a page (list-page.ts), as STATUS.
      case 'CLIENTS':
        return {
          body: pageList('clients', this.#clientList(), command, MAX_LINE_BYTES - 256) satisfies ClientsReply,
        };
      case 'SESSIONS':
        return {
          body: pageList(
            'sessions',
            this.#sessionList(),
            command,
            MAX_LINE_BYTES - 256,
          ) satisfies SessionsReply,
        };
      case 'LOAD':
        return { body: await this.#load(command) };
      case 'UPDATE': {
        const progress = (phase: string, detail: object = {}) =>
          reply({ event: 'PROGRESS', phase, ...detail } satisfies ProgressEvent);
        return {
          body: (await this.update({
            timeoutMs: command.timeout_ms ?? 30_000,
            dryRun: command.dry_run === true,
            progress,
          })) satisfies UpdateReply,
        };
      }
      case 'ABORT': {
        if (!this.#ctx.run) throw fail('EBUSY', 'no update is in progress');
        this.#ctx.run.fail(`aborted by the operator${command.reason ? `: ${command.reason}` : ''}`);
        return { body: {} };
      }
    }
  }

  #subscribe(client: Client, id: string, sessions: number): object {
    if (client.id !== null && client.id !== id)
      throw fail('EINVAL', `this connection already subscribed as ${client.id}`);
    for (const other of this.#clients) {
      if (other !== client && other.id === id)
        throw fail('EEXIST', `another connection is subscribed as ${id}`);
    }
    if (this.#ctx.run) throw fail('EBUSY', 'an update is in progress; subscribe after it');
    const owned = this.#ctx.owners.claim(id, client.uid, (other) => this.#idBusy(other));
    if (!owned.ok)
      throw fail(
        'EPERM',
        `the id ${id} belongs to uid ${owned.owner} (the first to subscribe it); uid ${client.uid} must use another id`,
      );
    client.id = id;
    client.sessionCount = sessions;
    this.#ctx.log.info({ client: id, uid: client.uid, pid: client.pid, sessions }, 'client subscribed');
    const interrupted = this.#claims.takeInterrupted(id);
    if (interrupted) {
      // After the SUBSCRIBE reply: the client learns its update was aborted.
      setImmediate(() => this.#notify(client, { event: 'ABORTED', ...interrupted } satisfies AbortedEvent));
    }
    return { id, sessions: sessionNames(id, sessions) } satisfies SubscribeReply;
  }

  /** Subscribed now, or with sessions to claim: an id its owner must not lose. */
  #idBusy(id: string): boolean {
    for (const c of this.#clients) if (c.id === id) return true;
    return this.#claims.isPending(id);
  }

  #ready(client: Client, updateId: string | undefined): object {
    const update = this.#ctx.run;
    if (!update || !client.id || !update.participants.has(client.id))
      throw fail('EBUSY', 'no update is waiting for this client');
    if (updateId !== undefined && updateId !== update.id)
      throw fail('EINVAL', `READY for ${updateId}, but the update is ${update.id}`);
    update.ready(client.id);
    return {};
  }

  async #load(command: Extract<Command, { cmd: 'LOAD' }>): Promise<object> {
    const ctx = this.#ctx;
    // Checked and taken before the first await: two LOADs, or an UPDATE, in one read must not both pass.
    if (ctx.phase === 'preserving' || ctx.phase === 'kexec') throw fail('EBUSY', 'an update is in progress');
    if (this.#loading) throw fail('EBUSY', 'a kernel is being loaded');
    this.#loading = true;
    const start = Date.now();
    this.#mark(undefined, undefined, 'load');
    try {
      const request = {
        ...(command.kernel !== undefined && { kernel: command.kernel }),
        ...(command.initrd !== undefined && { initrd: command.initrd }),
        ...(command.cmdline !== undefined && { cmdline: command.cmdline }),
        ...(command.emu_version !== undefined && { emuVersion: command.emu_version }),
      };
      // The gate, before the kernel is even loaded: nothing is preserved yet.
      const gate = await this.#gate(request, command.force === true);
      ctx.loaded = { ...(await ctx.kernel.load(request)), gate };
    } finally {
      this.#loading = false;
    }
    this.#mark(undefined, undefined, 'loaded');
    ctx.loadSpan = { start, end: Date.now() };
    ctx.log.info({ loaded: ctx.loaded, ms: ctx.loadSpan.end - start }, 'next kernel loaded');
    return { loaded: ctx.loaded } satisfies LoadReply;
  }

  /**
   * Compare what this kernel writes with what the next one reads; refuse a mismatch
   * (EPROTO, the consequence in one sentence) unless forced. The verdict, forced or not,
   * goes with the loaded kernel into STATUS, doctor and the update record.
   */
  async #gate(request: LoadRequest, force: boolean): Promise<GateReport> {
    const ctx = this.#ctx;
    const [current, next] = await Promise.all([ctx.kernel.currentFormats(), ctx.kernel.nextFormats(request)]);
    const verdict = gateVerdict(current, next);
    let report: GateReport = { ...verdict, forced: !verdict.ok && force };
    if (!verdict.ok && !force) {
      ctx.log.warn({ gate: report }, 'next kernel refused by the gate');
      throw fail('EPROTO', `refused: ${verdict.sentence} (luoctl load --force loads it anyway)`);
    }
    // The policy, once the formats agree: has this pair passed a qualification?
    if (verdict.ok && this.#requireQualified !== undefined) {
      // Imported when used: luod's start after a kexec compiles only what it needs.
      const { qualificationVerdict } = await import('../qualify/policy.js');
      const qualification = qualificationVerdict(this.#requireQualified, current, next, request.kernel);
      report = qualification.qualified
        ? { ...report, qualification }
        : { ...report, qualification, ok: false, forced: force, sentence: qualification.sentence };
      if (!qualification.qualified && !force) {
        ctx.log.warn({ gate: report }, 'next kernel refused: the pair is not qualified');
        throw fail('EPERM', `refused: ${qualification.sentence} (luoctl load --force loads it anyway)`);
      }
    }
    if (report.forced) ctx.log.warn({ gate: report }, 'next kernel loaded despite the gate (--force)');
    else ctx.log.info({ gate: report }, 'gate: the next kernel reads what this kernel writes');
    return report;
  }

  /** Run one live update: barrier, then kexec or abort. */
  async update(options: {
    timeoutMs: number;
    dryRun?: boolean;
    progress?: (phase: string, detail?: object) => Promise<void> | void;
  }): Promise<UpdateOutcome> {
    const ctx = this.#ctx;
    if (ctx.phase !== 'idle') throw fail('EBUSY', `luod is busy (${ctx.phase})`);
    if (this.#loading) throw fail('EBUSY', 'a kernel is being loaded; update once it is');
    if (!ctx.loaded && ctx.kernel.backend === 'real')
      throw fail('EINVAL', 'no kernel is loaded: run luoctl load first');
    if (options.dryRun) return this.#dryRun();
    // Taken before the first await: a second UPDATE in the same read gets EBUSY,
    // instead of running beside this one and, aborting, releasing its sessions.
    ctx.phase = 'preserving';
    if (!ctx.loaded) {
      const start = Date.now();
      try {
        const gate = await this.#gate({}, false);
        ctx.loaded = { ...(await ctx.kernel.load({})), gate };
      } catch (err) {
        ctx.phase = 'idle';
        throw err;
      }
      ctx.loadSpan = { start, end: Date.now() };
    }
    const gate = ctx.loaded?.gate;
    if (gate && !gate.ok && !gate.forced) {
      ctx.phase = 'idle';
      throw fail('EPROTO', `refused: ${gate.sentence}`);
    }
    try {
      return await new UpdateRun(ctx, this.#claims, this.#clients, options).run();
    } catch (err) {
      // The run ends every update it started itself (abort); this is a bug's last stop.
      this.#activeLog.error({ err }, 'the update failed outside its own error handling; luod is idle again');
      ctx.run = null;
      ctx.phase = 'idle';
      throw err;
    }
  }

  /** What an update would do now: who would take part. Not an update: the observer does not hear of it. */
  #dryRun(): UpdateOutcome {
    let participants = 0;
    for (const client of this.#clients) if (client.id) participants++;
    const id = newUpdateId();
    return {
      update: id,
      outcome: 'dry-run',
      timeline: [{ phase: 'update-start', at: Date.now() }],
      reason: `${participants} client(s) would take part`,
    };
  }

  /**
   * A client whose unread output has grown past MAX_QUEUED_BYTES is not
   * reading at all: it is disconnected rather than allowed to grow luod's
   * memory without bound.
   */
  #dropIfNotReading(client: Client): boolean {
    if (client.channel.socket.pendingBytes <= MAX_QUEUED_BYTES) return false;
    this.#activeLog.warn(
      { client: client.id, pid: client.pid },
      'disconnecting a client that does not read its socket',
    );
    client.channel.close();
    return true;
  }

  /** Send an event without waiting for it (see #dropIfNotReading). */
  #notify(client: Client, event: object, fds: Session[] = []): void {
    if (this.#dropIfNotReading(client)) return;
    void client.channel
      .send(
        event,
        fds.map((s) => s.fd),
      )
      .catch(() => {});
  }

  #onClose(client: Client): void {
    this.#clients.delete(client);
    const update = this.#ctx.run;
    if (
      update &&
      client.id &&
      update.participants.get(client.id) === client &&
      this.#ctx.phase === 'preserving'
    ) {
      update.fail(`${client.id} disconnected during the update`);
    }
  }

  #clientList(): ClientsReply['clients'] {
    return [...this.#clients].map((c) => ({ id: c.id, uid: c.uid, pid: c.pid, sessions: c.sessionCount }));
  }

  #sessionList(): SessionsReply['sessions'] {
    return [...(this.#ctx.run?.sessionList() ?? []), ...this.#claims.sessionList()];
  }

  status(): Record<string, unknown> {
    const ctx = this.#ctx;
    return {
      phase: ctx.phase,
      backend: ctx.kernel.backend,
      update: ctx.run?.id ?? null,
      loaded: ctx.loaded,
      clients: this.#clients.size,
      subscribers: [...this.#clients].filter((c) => c.id).map((c) => c.id!),
      pending_claims: this.#claims.pending(),
      kexec_mode: ctx.kernel.kexecMode ?? 'standalone',
      holder: ctx.keeper ? { kind: ctx.keeper.holder.kind, held: ctx.keeper.heldCount } : null,
      last_update: ctx.lastUpdate,
      records_dir: ctx.records.dir,
      last_record: ctx.records.lastPath,
      capacity: capacity(this.#maxClients),
    } satisfies StatusReply;
  }

  /**
   * STATUS for a uid that is not an admin: the state of luod, and of its own
   * clients only. Other uids' ids (which VMs run here, who failed) are not
   * its business.
   */
  #statusFor(uid: number): Record<string, unknown> {
    const mine = new Set<string>();
    for (const c of this.#clients) if (c.uid === uid && c.id) mine.add(c.id);
    for (const id of this.#claims.idsOf(uid)) mine.add(id);
    const full = this.status();
    const last = this.#ctx.lastUpdate;
    return {
      ...full,
      subscribers: (full.subscribers as string[]).filter((id) => mine.has(id)),
      pending_claims: (full.pending_claims as string[]).filter((id) => mine.has(id)),
      last_update: last && {
        update: last.update,
        outcome: last.outcome,
        ...(last.claims && { claims: last.claims.filter((id) => mine.has(id)) }),
      },
      holder: null,
      records_dir: null,
      last_record: null,
    };
  }

  /** What the metrics' gauges show. */
  gauges(): LuodGauges {
    let outgoing = 0;
    for (const sessions of this.#ctx.run?.sessions.values() ?? []) outgoing += sessions.length;
    const unclaimed = this.#claims.unclaimedSessions();
    return {
      clients: this.#clients.size,
      subscribers: [...this.#clients].filter((c) => c.id).length,
      sessionsHeld: outgoing + unclaimed,
      unclaimedSessions: unclaimed,
    };
  }

  /** Close everything (daemon shutdown). Sessions held only here are released by the kernel. */
  close(): void {
    this.#claims.close();
    this.#ctx.owners.close();
    for (const client of [...this.#clients]) client.channel.close();
  }
}
