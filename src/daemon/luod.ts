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
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { Session } from '../kernel/device.js';
import type { AbortedEvent, KexecEvent, ProgressEvent, StartPreservationEvent } from '../protocol/events.js';
import { type LineChannel, MAX_FDS_PER_LINE, MAX_LINE_BYTES } from '../protocol/lines.js';
import {
  ADMIN_COMMANDS,
  Command,
  describeInvalid,
  MAX_CLIENTS,
  MAX_ID_LENGTH,
  PROTOCOL_VERSION,
  sessionNames,
} from '../protocol/messages.js';
import type {
  ClaimReply,
  ClientsReply,
  HelloReply,
  LoadReply,
  SessionsReply,
  StatusReply,
  SubscribeReply,
  UpdateReply,
} from '../protocol/replies.js';
import type { UpdateRecord } from '../record/format.js';
import type { RecordStore } from '../record/store.js';
import { SysError } from '../sys/error.js';
import type { OwnedFd } from '../sys/fd.js';
import { IdOwners } from './id-owners.js';
import type { Recovered, SessionKeeper } from './keeper.js';
import type { LoadedKernel, LuodKernel } from './kernel.js';
import type { LuodGauges, LuodMetrics } from './metrics.js';
import { draftFromTimeline, RecordBuilder } from './record-builder.js';
import {
  type CarriedState,
  type CarriedStateV1,
  type PhaseMark,
  preserveState,
  retrieveState,
} from './state.js';

export type Phase = 'idle' | 'preserving' | 'kexec' | 'claiming';

interface Client {
  readonly channel: LineChannel;
  readonly uid: number;
  readonly pid: number;
  id: string | null;
  sessionCount: number;
  malformed: number;
  /** Commands received and not yet answered (back-pressure, see #received). */
  inflight: number;
}

interface RunningUpdate {
  readonly id: string;
  readonly deadline: number;
  readonly sessions: Map<string, Session[]>;
  readonly ready: Set<string>;
  readonly participants: Map<string, Client>;
  readonly timeline: PhaseMark[];
  fail: (reason: string) => void;
}

interface Incoming {
  readonly id: string;
  readonly uid: number;
  readonly update: string;
  readonly sessions: Session[];
  /**
   * waiting: nobody asked yet; sending: a CLAIM reply with the fds is on its way (luod
   * still holds its copies); done: the client has them. The update is over only when no
   * entry is waiting or sending.
   */
  claim: 'waiting' | 'sending' | 'done';
}

/** A command's reply body and fds; `delivered`/`undelivered` run once the reply went out, or could not. */
interface CommandResult {
  body: object;
  fds?: Session[];
  delivered?: () => void;
  undelivered?: () => void;
}

export class LuodError extends SysError {
  constructor(code: string, message: string) {
    super('luod', 0, message);
    Object.defineProperty(this, 'code', { value: code });
  }
}

const fail = (code: string, message: string) => new LuodError(code, message);

function newUpdateId(): string {
  return `u-${new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '')}-${randomBytes(2).toString('hex')}`;
}

/** What the Command schema accepts as `seq`: the only part of a bad message ever echoed. */
function validSeq(seq: unknown): seq is number | string {
  return (typeof seq === 'number' && Number.isFinite(seq)) || (typeof seq === 'string' && seq.length <= 64);
}

/** How often, and how far apart, recover() tries to open the device (and to hand the holder its copies). */
const OPEN_ATTEMPTS = 10;
const OPEN_RETRY_MS = 100;

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
}

/** A phase mark with the update it belongs to (`load`/`loaded` belong to none). */
export type PhaseEvent = PhaseMark & { update?: string };

export interface UpdateOutcome {
  update: string;
  outcome: 'rebooted' | 'aborted' | 'refused' | 'dry-run' | 'kexec';
  reason?: string;
  failed?: { id: string; reason: string }[];
  timeline: PhaseMark[];
  claims?: string[];
}

export class Luod {
  readonly #kernel: LuodKernel;
  readonly #log: Logger;
  readonly #claimTimeoutMs: number;
  readonly #version: string;
  readonly #onPhase: ((mark: PhaseEvent) => void) | undefined;
  readonly #clients = new Set<Client>();
  #phase: Phase = 'idle';
  #loaded: LoadedKernel | null = null;
  #update: RunningUpdate | null = null;
  #incoming = new Map<string, Incoming>();
  #claimTimer: NodeJS.Timeout | null = null;
  #lastUpdate: UpdateOutcome | null = null;
  readonly #records: RecordStore | null;
  readonly #metrics: LuodMetrics | null;
  /** The record of the update in progress (preserving, kexec, claiming). */
  #record: RecordBuilder | null = null;
  #lastRecordPath: string | null = null;
  /** When the loaded kernel was loaded: the record's load phase. */
  #loadSpan: { start: number; end: number } | null = null;
  readonly #keeper: SessionKeeper | null;
  /** Clients of an update a luod restart aborted, to be told when they subscribe again. */
  readonly #interrupted = new Map<string, { update: string; reason: string }>();
  /** When unclaimed sessions are released (epoch ms). */
  #claimDeadline = 0;
  readonly #owners: IdOwners;
  /** A LOAD is running (kexec_file_load takes a while): no UPDATE or second LOAD meanwhile. */
  #loading = false;
  /**
   * Settles once every incoming session has a second holder (recover()):
   * no CLAIM is answered before, or a fast claim could close a session
   * while it is being handed to the holder.
   */
  #incomingKept: Promise<void> = Promise.resolve();

  constructor(options: LuodOptions) {
    this.#keeper = options.keeper ?? null;
    this.#kernel = options.kernel;
    this.#log = options.log;
    this.#claimTimeoutMs = options.claimTimeoutMs ?? 60_000;
    this.#version = options.version ?? '0.1.0';
    this.#records = options.records ?? null;
    this.#metrics = options.metrics ?? null;
    this.#onPhase = options.onPhase;
    this.#owners = options.owners ?? new IdOwners(null, this.#log);
    this.#metrics?.watch(() => this.gauges());
  }

  /** The update's logger while one is in progress (every line carries its id), else luod's. */
  get #activeLog(): Logger {
    return this.#record?.log ?? this.#log;
  }

  /** A logger whose lines carry `update` once: the record's when it is that update's. */
  #updateLog(update: string): Logger {
    return this.#record?.update === update ? this.#record.log : this.#log.child({ update });
  }

  /** The id of the update in progress (until every claim), or null. */
  get updateId(): string | null {
    return this.#record?.update ?? null;
  }

  /** Write the record as it stands (in progress) or closed; a failure to write is logged, never fatal. */
  #saveRecord(record: UpdateRecord): void {
    if (record.outcome !== 'in-progress') this.#metrics?.updateFinished(record);
    if (!this.#records) return;
    try {
      this.#lastRecordPath = this.#records.write(record);
      this.#activeLog.info(
        { event: 'record', path: this.#lastRecordPath, outcome: record.outcome },
        'update record written',
      );
    } catch (err) {
      this.#activeLog.error({ err, dir: this.#records.dir }, 'the update record could not be written');
    }
  }

  /** Close the update's record with `outcome` and write it. */
  #finishRecord(outcome: 'completed' | 'aborted' | 'refused' | 'failed', reason: string | null): void {
    const builder = this.#record;
    if (!builder) return;
    const record = builder.finish(outcome, reason);
    this.#saveRecord(record);
    this.#record = null;
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
      this.#log.warn({ err, phase }, 'the phase observer failed');
    }
    return mark;
  }

  get phase(): Phase {
    return this.#phase;
  }

  /**
   * A restarted luod: what its keeper took back from the fd holder. Runs
   * before recover(), which it makes unnecessary when sessions came back.
   */
  adoptRecovered(recovered: Recovered): void {
    if (recovered.aborted) {
      const { update, clients } = recovered.aborted;
      const reason = 'luod was restarted during the update, before the kexec: the update is aborted';
      for (const id of clients) this.#interrupted.set(id, { update, reason });
      this.#lastUpdate = {
        update,
        outcome: 'aborted',
        reason,
        failed: [{ id: 'luod', reason }],
        timeline: [this.#mark(undefined, update, 'aborted')],
      };
      this.#closeInterruptedRecord(recovered.aborted, reason);
    }
    const incoming = recovered.incoming;
    if (!incoming) return;
    for (const client of incoming.clients) {
      this.#incoming.set(client.id, { ...client, claim: 'waiting' });
      this.#owners.adopt(client.id, client.uid);
    }
    for (const id of incoming.claimed) {
      this.#incoming.set(id, { id, uid: 0, update: incoming.update, sessions: [], claim: 'done' });
    }
    this.#lastUpdate = {
      update: incoming.update,
      outcome: 'rebooted',
      timeline: incoming.timeline,
      claims: [...incoming.claimed],
    };
    this.#claimDeadline = incoming.claimDeadline ?? Date.now() + this.#claimTimeoutMs;
    void this.#keeper?.claiming({ ...incoming, claimDeadline: this.#claimDeadline }, incoming.clients, {
      claimed: incoming.claimed,
      alreadyHeld: true,
    });
    this.#claimDeadlinePassed = false;
    this.#phase = [...this.#incoming.values()].some((e) => e.claim !== 'done') ? 'claiming' : 'idle';
    this.#record = this.#resumeRecord(incoming);
    this.#log.info(
      { update: incoming.update, clients: incoming.clients.map((c) => c.id), claimed: incoming.claimed },
      'luod restarted after the kexec: incoming sessions taken back from the holder; waiting for claims',
    );
    if (this.#phase === 'claiming') this.#armClaimDeadline();
    else this.#finishUpdate();
  }

  /**
   * The dead luod's update, aborted before its kexec, had no record on disk
   * yet (the draft travels with the state): write it now, from what the
   * holder's fd names and the state file tell, so the operator sees it.
   */
  #closeInterruptedRecord(aborted: NonNullable<Recovered['aborted']>, reason: string): void {
    try {
      const draft = draftFromTimeline({
        update: aborted.update,
        from: aborted.from ?? 'unknown',
        to: aborted.to ?? 'unknown',
        clients: aborted.lanes,
        timeline: aborted.timeline,
        backend: this.#kernel.backend,
      });
      // Only the phases that had begun when luod died.
      const marks = new Set(aborted.timeline.filter((m) => !m.client).map((m) => m.phase));
      const begunBy: Record<string, string> = {
        preserve: 'update-start',
        barrier: 'barrier-start',
        freeze: 'barrier-done',
        kexec: 'kexec',
      };
      draft.phases = draft.phases.filter((p) => marks.has(begunBy[p.phase] ?? p.phase));
      this.#record = RecordBuilder.resume(draft, this.#log);
      this.#record.failure('luod', reason);
      this.#finishRecord('aborted', reason);
    } catch (err) {
      this.#record = null;
      this.#log.error(
        { err, update: aborted.update },
        'the record of the interrupted update could not be written',
      );
    }
  }

  /**
   * A luod restarted after the kexec, during the claims: continue the record
   * the previous luod wrote when it restored (in progress), with the claims it
   * answered before it died. Without one (it died before writing it, or it
   * is damaged), the update goes on unrecorded, and the log says so.
   */
  #resumeRecord(incoming: NonNullable<Recovered['incoming']>): RecordBuilder | null {
    let draft: UpdateRecord | null = null;
    try {
      draft = this.#records?.read(incoming.update) ?? null;
    } catch (err) {
      this.#log.error(
        { err, update: incoming.update },
        'the update record on disk is damaged; not continued',
      );
      return null;
    }
    if (draft?.outcome !== 'in-progress') {
      if (!draft)
        this.#log.warn({ update: incoming.update }, 'no record of this update on disk; not recorded');
      return null;
    }
    const record = RecordBuilder.resume(draft, this.#log);
    for (const id of incoming.claimed) {
      const lane = draft.clients.find((c) => c.id === id);
      if (!lane || lane.claim?.end) continue;
      const at = incoming.timeline.find((m) => m.phase === 'claim' && m.client === id)?.at ?? Date.now();
      record.claimStarted(id, lane.claim?.start ?? at);
      record.claimed(id, at);
    }
    if (!record.isOpen('claims')) record.begin('claims');
    this.#saveRecord(record.snapshot());
    return record;
  }

  /** Startup (and, on the emulated kernel, after each kexec): take back what the previous kernel handed over. */
  async recover(): Promise<void> {
    let kept!: () => void;
    this.#incomingKept = new Promise((resolve) => {
      kept = resolve;
    });
    try {
      await this.#recover();
    } finally {
      kept();
    }
  }

  async #recover(): Promise<void> {
    const readyAt = Date.now();
    let device: ReturnType<LuodKernel['openDevice']> | null = null;
    // /dev/liveupdate has one opener at a time (EBUSY while another has it): a
    // passing failure must not leave the previous update's sessions unclaimed.
    for (let attempt = 1; device === null; attempt++) {
      try {
        device = this.#kernel.openDevice();
      } catch (err) {
        if (attempt >= OPEN_ATTEMPTS) {
          this.#log.error(
            { err, attempts: attempt },
            'cannot open the live update device to look for a previous update; sessions it holds stay in the kernel until luod is restarted',
          );
          return;
        }
        this.#log.warn({ err, attempt }, 'cannot open the live update device yet; trying again');
        await new Promise((resolve) => setTimeout(resolve, OPEN_RETRY_MS));
      }
    }
    try {
      const state = retrieveState(device);
      if (!state) {
        this.#log.info('no live update in progress (no luod-internal session)');
        return;
      }
      // The record is the operator's account; the sessions are the VMs' memory.
      // Nothing about the first may keep luod from restoring the second.
      const record = this.#resumeCarriedRecord(state, readyAt);
      this.#record = record;
      const log = record?.log ?? this.#log.child({ update: state.update });
      for (const client of state.clients) {
        const sessions: Session[] = [];
        for (const name of client.sessions) {
          try {
            sessions.push(device.retrieveSession(name));
          } catch (err) {
            log.error(
              { err, client: client.id, session: name },
              'a session of this client did not come back',
            );
            record?.failure(
              client.id,
              `session ${name} did not come back: ${(err as { code?: string }).code ?? 'EIO'}: ${(err as Error).message}`,
            );
          }
        }
        this.#incoming.set(client.id, {
          id: client.id,
          uid: client.uid,
          update: state.update,
          sessions,
          claim: 'waiting',
        });
        this.#owners.adopt(client.id, client.uid);
      }
      this.#claimDeadlinePassed = false;
      this.#phase = this.#incoming.size > 0 ? 'claiming' : 'idle';
      this.#lastUpdate = {
        update: state.update,
        outcome: 'rebooted',
        timeline: [...state.timeline, this.#mark(undefined, state.update, 'luod-ready')],
        claims: [],
      };
      record?.end('restore');
      log.info(
        { clients: [...this.#incoming.keys()], from: state.from, to: state.to },
        'live update restored; waiting for claims',
      );
      if (this.#phase === 'claiming') {
        record?.begin('claims');
        if (record) this.#saveRecord(record.snapshot());
        this.#claimDeadline = Date.now() + this.#claimTimeoutMs;
        this.#armClaimDeadline();
      } else {
        this.#finishUpdate();
      }
    } catch (err) {
      this.#activeLog.error({ err }, 'the state of the previous update could not be restored');
      if (this.#record) {
        const reason = `luod could not restore the update: ${(err as { code?: string }).code ?? 'EIO'}: ${(err as Error).message}`;
        this.#record.failure('luod', reason);
        this.#finishRecord('failed', reason);
      }
    } finally {
      try {
        device.close();
      } catch (err) {
        this.#log.warn({ err }, 'closing the live update device failed');
      }
    }
    if (this.#phase === 'claiming' && this.#lastUpdate) await this.#keepIncoming(this.#lastUpdate);
  }

  /** The record carried through the kexec, continued with the reboot's phases; null when it cannot be. */
  #resumeCarriedRecord(state: CarriedState | CarriedStateV1, readyAt: number): RecordBuilder | null {
    try {
      const draft =
        state.format === 'luod-state-v2'
          ? state.record
          : draftFromTimeline({ ...state, backend: this.#kernel.backend });
      const record = RecordBuilder.resume(draft, this.#log);
      // The kexec ran until the next kernel started; luod itself started
      // after that (on the emulated kernel, luod lives on: both are ~now).
      let started = readyAt;
      try {
        started = this.#kernel.startedAt?.() ?? readyAt;
      } catch (err) {
        this.#log.warn({ err }, "the kernel's start time is unknown; the boot phase is not split");
      }
      const kernelStart = Math.min(readyAt, Math.max(started, draft.started));
      const luodStart = Math.min(readyAt, Math.max(kernelStart, Math.round(performance.timeOrigin)));
      record.end('kexec', kernelStart);
      record.span('boot', kernelStart, luodStart);
      record.span('luod-ready', luodStart, readyAt);
      record.begin('restore', readyAt);
      return record;
    } catch (err) {
      this.#log.error(
        { err, update: state.update },
        'the carried update record is unusable; the update goes on unrecorded',
      );
      return null;
    }
  }

  /** Give the keeper a copy of every incoming session before any client can claim one. */
  async #keepIncoming(last: UpdateOutcome): Promise<void> {
    // Holding the same name again replaces the copy: a retry is safe, and worth it,
    // since until the holder has them luod is the sessions' only holder.
    for (let attempt = 1; ; attempt++) {
      try {
        await this.#keeper?.claiming(
          { update: last.update, timeline: last.timeline, claimDeadline: this.#claimDeadline },
          [...this.#incoming.values()],
        );
        return;
      } catch (err) {
        if (attempt < OPEN_ATTEMPTS) {
          this.#log.warn({ err, attempt }, 'the fd holder did not take the incoming sessions; trying again');
          await new Promise((resolve) => setTimeout(resolve, OPEN_RETRY_MS));
          continue;
        }
        this.#log.error(
          { err },
          'the fd holder could not take the incoming sessions: luod is their only holder',
        );
        return;
      }
    }
  }

  #armClaimDeadline(): void {
    this.#claimTimer = setTimeout(
      () => this.#releaseUnclaimed(),
      Math.max(0, this.#claimDeadline - Date.now()),
    );
    this.#claimTimer.unref();
  }

  #releaseUnclaimed(): void {
    this.#claimDeadlinePassed = true;
    const record = this.#record;
    const reason = `not claimed within ${this.#claimTimeoutMs} ms`;
    record?.end('claims', Date.now(), reason);
    record?.begin('finish');
    for (const entry of this.#incoming.values()) {
      if (entry.claim === 'waiting') this.#releaseEntry(entry);
    }
    this.#settleClaims();
  }

  /** Finish an unclaimed client's sessions: past the deadline, their memory is released. */
  #releaseEntry(entry: Incoming): void {
    const record = this.#record;
    this.#incoming.delete(entry.id);
    record?.failure(
      entry.id,
      `did not claim its sessions within ${this.#claimTimeoutMs} ms: they were finished, their memory released`,
    );
    this.#metrics?.unclaimedReleased(entry.sessions.length);
    this.#updateLog(entry.update).error(
      { client: entry.id, sessions: entry.sessions.map((s) => s.name) },
      `UNCLAIMED: ${entry.id} did not claim its sessions within ${this.#claimTimeoutMs} ms; finishing them, their memory is released`,
    );
    for (const session of entry.sessions) {
      try {
        session.finish();
      } catch (err) {
        this.#log.warn({ err, session: session.name }, 'finish failed');
      }
      session.close();
    }
    void this.#keeper?.done(entry.id, entry.sessions);
  }

  #claimDeadlinePassed = false;

  /**
   * After each claim delivered or not, and at the deadline: once no client is waiting
   * (before the deadline) and no reply is on its way, the update is over.
   */
  #settleClaims(): void {
    const entries = [...this.#incoming.values()];
    if (entries.some((e) => e.claim === 'sending')) return;
    if (!this.#claimDeadlinePassed && entries.some((e) => e.claim === 'waiting')) return;
    if (this.#phase !== 'claiming') return;
    if (this.#claimTimer) clearTimeout(this.#claimTimer);
    this.#phase = 'idle';
    if (!this.#claimDeadlinePassed)
      this.#mark(this.#lastUpdate?.timeline, this.#lastUpdate?.update, 'all-claimed');
    this.#finishUpdate();
  }

  /** After the last claim or the claim deadline: the update's record is closed. */
  #finishUpdate(): void {
    const record = this.#record;
    if (!record) return;
    record.end('claims');
    if (!record.isOpen('finish')) record.begin('finish');
    record.end('finish');
    const failures = record.snapshot().failures;
    this.#finishRecord(
      failures.length === 0 ? 'completed' : 'failed',
      failures.length === 0 ? null : failures.map((f) => `${f.id}: ${f.reason}`).join('; '),
    );
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
      this.#metrics?.protocolError('refused-connection');
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
      this.#metrics?.protocolError('malformed-line');
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
    if (open >= MAX_CLIENTS) return `luod serves at most ${MAX_CLIENTS} clients`;
    if (this.#isAdmin(uid)) return null;
    const claims = [...this.#incoming.values()].some((e) => e.claim !== 'done' && e.uid === uid);
    if (claims) return null;
    if (open >= MAX_CLIENTS - RESERVED_SLOTS)
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
    const parsed = Command.safeParse(value);
    if (!parsed.success) {
      client.malformed++;
      const cmd = (value as { cmd?: unknown }).cmd;
      const known = typeof cmd === 'string' && Command.options.some((o) => o.shape.cmd.value === cmd);
      this.#metrics?.protocolError(known ? 'invalid-command' : 'unknown-command');
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
      const code = (err as { code?: string }).code ?? 'EIO';
      await reply({ ok: false, error: { code, message: (err as Error).message } });
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
            backend: this.#kernel.backend,
            limits: {
              max_line: MAX_LINE_BYTES,
              max_fds: MAX_FDS_PER_LINE,
              max_clients: MAX_CLIENTS,
              max_id: MAX_ID_LENGTH,
            },
          } satisfies HelloReply,
        };
      }
      case 'SUBSCRIBE':
        return { body: this.#subscribe(client, command.id, command.sessions ?? 1) };
      case 'UNSUBSCRIBE':
        if (this.#update && client.id && this.#update.participants.has(client.id)) {
          this.#update.fail(`${client.id} unsubscribed during the update`);
        }
        client.id = null;
        return { body: {} };
      case 'READY':
        return { body: this.#ready(client, command.update) };
      case 'FAILED': {
        const update = this.#update;
        if (!update || !client.id || !update.participants.has(client.id))
          throw fail('EBUSY', 'no update is waiting for this client');
        update.fail(`${client.id} failed: ${command.reason ?? 'no reason given'}`);
        return { body: {} };
      }
      case 'CLAIM':
        // Not before every incoming session has a second holder (recover()).
        await this.#incomingKept;
        return this.#claim(client, command.id, command.force === true);
      case 'STATUS':
        return { body: this.#isAdmin(client.uid) ? this.status() : this.#statusFor(client.uid) };
      case 'CLIENTS':
        return { body: { clients: this.#clientList() } };
      case 'SESSIONS':
        return { body: { sessions: this.#sessionList() } };
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
        if (!this.#update) throw fail('EBUSY', 'no update is in progress');
        this.#update.fail(`aborted by the operator${command.reason ? `: ${command.reason}` : ''}`);
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
    if (this.#update) throw fail('EBUSY', 'an update is in progress; subscribe after it');
    const owned = this.#owners.claim(id, client.uid, (other) => this.#idBusy(other));
    if (!owned.ok)
      throw fail(
        'EPERM',
        `the id ${id} belongs to uid ${owned.owner} (the first to subscribe it); uid ${client.uid} must use another id`,
      );
    client.id = id;
    client.sessionCount = sessions;
    this.#log.info({ client: id, uid: client.uid, pid: client.pid, sessions }, 'client subscribed');
    const interrupted = this.#interrupted.get(id);
    if (interrupted) {
      // After the SUBSCRIBE reply: the client learns its update was aborted.
      this.#interrupted.delete(id);
      setImmediate(() => this.#notify(client, { event: 'ABORTED', ...interrupted } satisfies AbortedEvent));
    }
    return { id, sessions: sessionNames(id, sessions) } satisfies SubscribeReply;
  }

  /** Subscribed now, or with sessions to claim: an id its owner must not lose. */
  #idBusy(id: string): boolean {
    for (const c of this.#clients) if (c.id === id) return true;
    const entry = this.#incoming.get(id);
    return entry !== undefined && entry.claim !== 'done';
  }

  #ready(client: Client, updateId: string | undefined): object {
    const update = this.#update;
    if (!update || !client.id || !update.participants.has(client.id))
      throw fail('EBUSY', 'no update is waiting for this client');
    if (updateId !== undefined && updateId !== update.id)
      throw fail('EINVAL', `READY for ${updateId}, but the update is ${update.id}`);
    update.ready.add(client.id);
    this.#mark(update.timeline, update.id, 'ready', client.id);
    this.#record?.ready(client.id);
    this.#updateLog(update.id).info({ client: client.id }, 'client ready');
    this.#checkBarrier();
    return {};
  }

  #barrierDone: (() => void) | null = null;

  #checkBarrier(): void {
    const update = this.#update;
    if (update && update.ready.size === update.participants.size) this.#barrierDone?.();
  }

  #claim(client: Client, id: string, force: boolean): CommandResult {
    const entry = this.#incoming.get(id);
    if (!entry) throw fail('ENOENT', `no sessions for ${id} from the last update`);
    if (entry.claim === 'done') throw fail('EBUSY', `${id} was already claimed`);
    if (entry.claim === 'sending') throw fail('EBUSY', `a CLAIM of ${id} is already being answered`);
    if (client.uid !== entry.uid && !(force && client.uid === 0)) {
      throw fail('EPERM', `CLAIM of ${id}: subscribed by uid ${entry.uid}, you are uid ${client.uid}`);
    }
    // luod lets go of its copies only once the client has the fds: a client
    // that dies before the reply reaches it must not lose its memory.
    entry.claim = 'sending';
    this.#record?.claimStarted(id);
    const sessions = entry.sessions;
    return {
      body: { id, update: entry.update, sessions: sessions.map((s) => s.name) } satisfies ClaimReply,
      fds: sessions,
      delivered: () => {
        for (const s of sessions) s.close();
        entry.claim = 'done';
        this.#mark(this.#lastUpdate?.timeline, entry.update, 'claim', id);
        // The client has its own copies now: the holder may let go of its.
        void this.#keeper?.done(id, sessions, this.#lastUpdate?.timeline);
        this.#lastUpdate?.claims?.push(id);
        this.#record?.claimed(id);
        this.#updateLog(entry.update).info({ client: id }, 'client claimed its sessions');
        this.#settleClaims();
      },
      undelivered: () => {
        entry.claim = 'waiting';
        this.#record?.claimUndelivered(id);
        if (this.#claimDeadlinePassed) {
          this.#releaseEntry(entry);
        } else {
          this.#updateLog(entry.update).warn(
            { client: id },
            'the CLAIM reply did not reach the client; its sessions are kept',
          );
        }
        this.#settleClaims();
      },
    };
  }

  async #load(command: Extract<Command, { cmd: 'LOAD' }>): Promise<object> {
    // Checked and taken before the first await: two LOADs, or an UPDATE, in one read must not both pass.
    if (this.#phase === 'preserving' || this.#phase === 'kexec')
      throw fail('EBUSY', 'an update is in progress');
    if (this.#loading) throw fail('EBUSY', 'a kernel is being loaded');
    this.#loading = true;
    const start = Date.now();
    this.#mark(undefined, undefined, 'load');
    try {
      this.#loaded = await this.#kernel.load({
        ...(command.kernel !== undefined && { kernel: command.kernel }),
        ...(command.initrd !== undefined && { initrd: command.initrd }),
        ...(command.cmdline !== undefined && { cmdline: command.cmdline }),
        ...(command.emu_version !== undefined && { emuVersion: command.emu_version }),
      });
    } finally {
      this.#loading = false;
    }
    this.#mark(undefined, undefined, 'loaded');
    this.#loadSpan = { start, end: Date.now() };
    this.#log.info({ loaded: this.#loaded, ms: this.#loadSpan.end - start }, 'next kernel loaded');
    return { loaded: this.#loaded } satisfies LoadReply;
  }

  /** Run one live update: barrier, then kexec or abort. */
  async update(options: {
    timeoutMs: number;
    dryRun?: boolean;
    progress?: (phase: string, detail?: object) => Promise<void> | void;
  }): Promise<UpdateOutcome> {
    if (this.#phase !== 'idle') throw fail('EBUSY', `luod is busy (${this.#phase})`);
    if (this.#loading) throw fail('EBUSY', 'a kernel is being loaded; update once it is');
    if (!this.#loaded && this.#kernel.backend === 'real')
      throw fail('EINVAL', 'no kernel is loaded: run luoctl load first');
    if (options.dryRun) return this.#dryRun();
    // Taken before the first await: a second UPDATE in the same read gets EBUSY,
    // instead of running beside this one and, aborting, releasing its sessions.
    this.#phase = 'preserving';
    if (!this.#loaded) {
      const start = Date.now();
      try {
        this.#loaded = await this.#kernel.load({});
      } catch (err) {
        this.#phase = 'idle';
        throw err;
      }
      this.#loadSpan = { start, end: Date.now() };
    }
    try {
      return await this.#run(options);
    } catch (err) {
      // #run ends every update it started itself (abort); this is a bug's last stop.
      this.#activeLog.error({ err }, 'the update failed outside its own error handling; luod is idle again');
      this.#update = null;
      this.#phase = 'idle';
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

  async #run(options: {
    timeoutMs: number;
    progress?: (phase: string, detail?: object) => Promise<void> | void;
  }): Promise<UpdateOutcome> {
    const loaded = this.#loaded!;
    const participants = new Map<string, Client>();
    for (const client of this.#clients) if (client.id) participants.set(client.id, client);
    const id = newUpdateId();
    const log = this.#log.child({ update: id });
    const timeline: PhaseMark[] = [];
    this.#mark(timeline, id, 'update-start');
    const progress = options.progress ?? (() => {});
    this.#incoming.clear();
    this.#interrupted.clear(); // an ABORTED from before this update would only confuse
    // A previous update still waiting for claims is closed by this one.
    if (this.#record) this.#finishUpdate();
    const record = RecordBuilder.start(
      {
        update: id,
        backend: this.#kernel.backend,
        from: await this.#kernel.release().catch(() => 'unknown'),
        to: loaded.version ?? loaded.kernel,
        clients: [...participants].map(([clientId, client]) => ({
          id: clientId,
          uid: client.uid,
          sessions: sessionNames(clientId, client.sessionCount),
        })),
        load: this.#loadSpan,
        at: timeline[0]!.at,
      },
      this.#log,
    );
    this.#record = record;
    const update: RunningUpdate = {
      id,
      deadline: Date.now() + options.timeoutMs,
      sessions: new Map(),
      ready: new Set(),
      participants,
      timeline,
      fail: () => {},
    };
    this.#update = update;
    const failures: { id: string; reason: string }[] = [];
    const abort = async (outcome: 'aborted' | 'refused', reason: string): Promise<UpdateOutcome> => {
      log.warn({ reason, failures }, 'update aborted');
      for (const f of failures) record.failure(f.id, f.reason);
      for (const phase of ['preserve', 'barrier', 'freeze', 'kexec'] as const)
        record.end(phase, Date.now(), reason);
      record.begin('finish');
      await this.#keeper?.releaseAll().catch((err) => log.warn({ err }, 'the fd holder could not release'));
      for (const sessions of update.sessions.values()) for (const s of sessions) s.close();
      this.#mark(timeline, id, 'aborted');
      // Not awaited: a client that stopped reading must not hold luod.
      for (const c of participants.values())
        this.#notify(c, { event: 'ABORTED', update: id, reason } satisfies AbortedEvent);
      this.#update = null;
      this.#phase = 'idle';
      this.#lastUpdate = { update: id, outcome, reason, failed: failures, timeline };
      record.end('finish');
      this.#finishRecord(outcome, reason);
      await progress('aborted', { reason });
      return this.#lastUpdate;
    };
    let device: ReturnType<LuodKernel['openDevice']> | null = null;
    /** luod-internal, once written: closed on every way out but the kexec itself. */
    let internal: Session | null = null;
    /** Past this point the sessions are the next kernel's: nothing can be called off any more. */
    let rebooted = false;
    // Releasing the device must not turn one failure into two aborts.
    const closeDevice = () => {
      const open = device;
      device = null;
      try {
        open?.close();
      } catch (err) {
        log.warn({ err }, 'closing the live update device failed');
      }
    };
    try {
      log.info({ clients: [...participants.keys()], next: loaded }, 'live update starting');
      await progress('preserve', { clients: participants.size });
      record.begin('preserve', timeline[0]!.at);
      device = this.#kernel.openDevice();
      for (const [clientId, client] of participants) {
        const sessions: Session[] = [];
        update.sessions.set(clientId, sessions);
        for (const name of sessionNames(clientId, client.sessionCount)) {
          try {
            sessions.push(device.createSession(name));
          } catch (err) {
            const code = (err as { code?: string }).code;
            const reason =
              code === 'EEXIST'
                ? `session ${name} still exists: a copy of it from an earlier update is still open (a client must close its session fds after ABORTED)`
                : `cannot create session ${name}: ${(err as Error).message}`;
            failures.push({ id: clientId, reason });
            closeDevice();
            return await abort('aborted', `${clientId}: ${reason}`);
          }
        }
      }
      if (this.#keeper) {
        try {
          await this.#keeper.preserving(
            id,
            [...participants].map(([clientId, client]) => ({
              id: clientId,
              uid: client.uid,
              sessions: update.sessions.get(clientId)!,
            })),
            timeline,
          );
        } catch (err) {
          closeDevice();
          const reason = `luod cannot make this update crash-safe (it must never be the only holder of a session, and its state file must be written): ${(err as { code?: string }).code ?? 'EIO'}: ${(err as Error).message}`;
          failures.push({ id: 'luod', reason });
          return await abort('aborted', reason);
        }
      }
      const barrier = new Promise<string | null>((resolve) => {
        const timer = setTimeout(() => {
          const missing = [...participants.keys()].filter((c) => !update.ready.has(c));
          for (const c of missing)
            failures.push({ id: c, reason: `no READY within ${options.timeoutMs} ms` });
          resolve(`${missing.join(', ')} did not say READY within ${options.timeoutMs} ms`);
        }, options.timeoutMs);
        const settle = (result: string | null) => {
          clearTimeout(timer);
          resolve(result);
        };
        update.fail = (reason) => {
          const [who] = reason.split(' ');
          if (who && participants.has(who)) failures.push({ id: who, reason });
          settle(reason);
        };
        this.#barrierDone = () => settle(null);
      });
      this.#mark(timeline, id, 'barrier-start');
      record.end('preserve');
      record.begin('barrier');
      for (const [clientId, client] of participants) {
        const sessions = update.sessions.get(clientId)!;
        record.preservationSent(clientId);
        // Not awaited: a client that does not read its socket must not hold
        // the update; it simply never says READY before the deadline.
        void client.channel
          .send(
            {
              event: 'START_PRESERVATION',
              update: id,
              id: clientId,
              sessions: sessions.map((s) => s.name),
              deadline: new Date(update.deadline).toISOString(),
              deadline_ms: update.deadline - Date.now(),
            } satisfies StartPreservationEvent,
            sessions.map((s) => s.fd),
          )
          .catch(() => update.fail(`${clientId} could not be sent START_PRESERVATION`));
      }
      await progress('barrier', { waiting: participants.size });
      this.#checkBarrier();
      const barrierFailure = participants.size === 0 ? null : await barrier;
      this.#barrierDone = null;
      if (barrierFailure !== null) {
        if (failures.length === 0) failures.push({ id: '-', reason: barrierFailure });
        closeDevice();
        return await abort('aborted', barrierFailure);
      }
      this.#mark(timeline, id, 'barrier-done');
      record.end('barrier');
      record.begin('freeze');
      const draft = record.snapshot();
      const kexecAt = Date.now();
      record.end('freeze', kexecAt);
      record.begin('kexec', kexecAt);
      const state: CarriedState = {
        format: 'luod-state-v2',
        update: id,
        from: draft.from,
        to: draft.to,
        clients: [...participants].map(([clientId, client]) => ({
          id: clientId,
          uid: client.uid,
          sessions: update.sessions.get(clientId)!.map((s) => s.name),
        })),
        timeline: [...timeline, { phase: 'kexec', at: kexecAt }],
        record: record.snapshot(),
      };
      internal = preserveState(device, state);
      closeDevice();
      await this.#keeper?.kexec(state, internal);
      this.#phase = 'kexec';
      for (const c of participants.values())
        this.#notify(c, { event: 'KEXEC', update: id } satisfies KexecEvent);
      await progress('kexec', { to: state.to });
      log.info({ to: state.to }, 'kexec');
      this.#mark(undefined, id, 'kexec');
      try {
        await this.#kernel.kexec(loaded);
      } catch (err) {
        internal.close();
        internal = null;
        failures.push({ id: 'kernel', reason: (err as Error).message });
        return await abort(
          'refused',
          `the kernel refused to kexec: ${(err as SysError).code ?? ''} ${(err as Error).message}`,
        );
      }
      rebooted = true;
      if (this.#kernel.kexecMode === 'systemd') {
        // systemd has the job: it stops luod, carries the fd store through
        // the kexec, and starts the next luod with it. Nothing is closed here.
        log.info('systemctl kexec accepted; systemd carries the sessions through the kexec');
        this.#lastUpdate = {
          update: id,
          outcome: 'kexec',
          reason: 'systemctl kexec accepted: systemd carries the sessions through the kexec',
          timeline,
        };
        return this.#lastUpdate;
      }
      // Emulated kernel: we are now "after the reboot". Every fd of the old
      // kernel is dead, and the subscribers' connections go, as their
      // processes would; they reconnect and CLAIM. The operator's connection
      // stays, to receive this update's outcome.
      await this.#keeper?.releaseAll();
      internal.close();
      for (const sessions of update.sessions.values()) for (const s of sessions) s.close();
      for (const client of [...this.#clients]) if (client.id) client.channel.close();
      this.#update = null;
      this.#phase = 'idle';
      this.#loaded = null;
      this.#loadSpan = null;
      // The next kernel's luod takes the record from the carried state, as after a real reboot.
      this.#record = null;
      await this.recover();
      await progress('restored', { clients: this.#incoming.size });
      return this.#lastUpdate ?? { update: id, outcome: 'rebooted', timeline };
    } catch (err) {
      internal?.close();
      closeDevice();
      if (rebooted) {
        log.error({ err }, 'after the kexec: luod goes on with what it restored');
        return this.#lastUpdate ?? { update: id, outcome: 'rebooted', timeline };
      }
      const reason = `${(err as { code?: string }).code ?? 'EIO'}: ${(err as Error).message}`;
      failures.push({ id: 'luod', reason });
      return await abort('aborted', reason);
    }
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
    const update = this.#update;
    if (
      update &&
      client.id &&
      update.participants.get(client.id) === client &&
      this.#phase === 'preserving'
    ) {
      update.fail(`${client.id} disconnected during the update`);
    }
  }

  #clientList(): ClientsReply['clients'] {
    return [...this.#clients].map((c) => ({ id: c.id, uid: c.uid, pid: c.pid, sessions: c.sessionCount }));
  }

  #sessionList(): SessionsReply['sessions'] {
    const out: SessionsReply['sessions'] = [];
    for (const [client, sessions] of this.#update?.sessions ?? []) {
      for (const s of sessions)
        out.push({ name: s.name, client, direction: 'outgoing', ready: this.#update!.ready.has(client) });
    }
    for (const entry of this.#incoming.values()) {
      for (const s of entry.sessions)
        out.push({ name: s.name, client: entry.id, direction: 'incoming', claimed: entry.claim === 'done' });
    }
    return out;
  }

  status(): Record<string, unknown> {
    return {
      phase: this.#phase,
      backend: this.#kernel.backend,
      update: this.#update?.id ?? null,
      loaded: this.#loaded,
      clients: this.#clients.size,
      subscribers: [...this.#clients].filter((c) => c.id).map((c) => c.id!),
      pending_claims: [...this.#incoming.values()].filter((e) => e.claim !== 'done').map((e) => e.id),
      kexec_mode: this.#kernel.kexecMode ?? 'standalone',
      holder: this.#keeper ? { kind: this.#keeper.holder.kind, held: this.#keeper.heldCount } : null,
      last_update: this.#lastUpdate,
      records_dir: this.#records?.dir ?? null,
      last_record: this.#lastRecordPath,
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
    for (const e of this.#incoming.values()) if (e.uid === uid) mine.add(e.id);
    const full = this.status();
    const last = this.#lastUpdate;
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
    for (const sessions of this.#update?.sessions.values() ?? []) outgoing += sessions.length;
    let unclaimed = 0;
    for (const entry of this.#incoming.values())
      if (entry.claim !== 'done') unclaimed += entry.sessions.length;
    return {
      clients: this.#clients.size,
      subscribers: [...this.#clients].filter((c) => c.id).length,
      sessionsHeld: outgoing + unclaimed,
      unclaimedSessions: unclaimed,
    };
  }

  /** Close everything (daemon shutdown). Sessions held only here are released by the kernel. */
  close(): void {
    if (this.#claimTimer) clearTimeout(this.#claimTimer);
    for (const client of [...this.#clients]) client.channel.close();
  }
}
