/**
 * One live update, from its first session to one of its endings.
 *
 * Lifecycle of an update run:
 *  1. preserve: luod opens /dev/liveupdate and creates each participant's
 *     sessions, keeping its own copy of every fd (a session lives as long as
 *     any fd refers to it), and hands the keeper a copy of each (keeper.ts):
 *     luod is never their only holder.
 *  2. barrier: START_PRESERVATION goes to every participant with its session
 *     fds; the run waits for every READY until the deadline. A disconnect,
 *     FAILED, the deadline or an operator's ABORT fails the barrier.
 *  3. kexec: luod writes its own state into `luod-internal` (the record's
 *     draft travels in it), releases the device, sends KEXEC, and asks the
 *     kernel to kexec.
 * Its endings, each written once:
 *  - #abort(): the barrier failed, a step threw, or the kernel refused the
 *    kexec ('refused'): every session closes (the kernel unpreserves), every
 *    participant is told ABORTED, the record is closed. The host runs on.
 *  - #handedToSystemd(): `systemctl kexec` took the job; systemd carries the
 *    fd store through the kexec and starts the next luod. Nothing is closed.
 *  - #rebootedInPlace(): the emulated kernel kexec'd under a living luod:
 *    every fd of the old kernel is dead, the subscribers' connections go, and
 *    luod recovers as after a real reboot (claims.ts).
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { LiveUpdateDevice, Session } from '../kernel/device.js';
import type { AbortedEvent, KexecEvent, StartPreservationEvent } from '../protocol/events.js';
import { sessionNames } from '../protocol/messages.js';
import type { SessionsReply } from '../protocol/replies.js';
import { errorCode } from '../sys/error.js';
import type { Claims } from './claims.js';
import type { Client, LuodContext, UpdateOutcome } from './context.js';
import { type CarriedState, type PhaseMark, preserveState } from './handover-state.js';
import type { LoadedKernel } from './kernel.js';
import type { RecordBuilder } from './record-builder.js';

export function newUpdateId(): string {
  return `u-${new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '')}-${randomBytes(2).toString('hex')}`;
}

export interface RunOptions {
  timeoutMs: number;
  progress?: (phase: string, detail?: object) => Promise<void> | void;
}

export class UpdateRun {
  readonly id = newUpdateId();
  /** The subscribed clients when the update began: the only ones it waits for. */
  readonly participants = new Map<string, Client>();
  /** Each participant's outgoing sessions, luod's copies. */
  readonly sessions = new Map<string, Session[]>();
  readonly timeline: PhaseMark[] = [];
  readonly #ctx: LuodContext;
  readonly #claims: Claims;
  readonly #clients: ReadonlySet<Client>;
  readonly #loaded: LoadedKernel;
  readonly #timeoutMs: number;
  readonly #progress: NonNullable<RunOptions['progress']>;
  readonly #log: Logger;
  readonly #ready = new Set<string>();
  readonly #failures: { id: string; reason: string }[] = [];
  #deadline = 0;
  #record!: RecordBuilder;
  #device: LiveUpdateDevice | null = null;
  /** luod-internal, once written: closed on every way out but the kexec itself. */
  #internal: Session | null = null;
  /** Past this point the sessions are the next kernel's: nothing can be called off any more. */
  #rebooted = false;
  /** Fails the barrier; before the barrier is set up, nothing waits to be failed. */
  #onFail: (reason: string) => void = () => {};
  #barrierDone: (() => void) | null = null;

  /** `clients`: luod's connections; the subscribed ones take part. ctx.loaded must be set. */
  constructor(ctx: LuodContext, claims: Claims, clients: ReadonlySet<Client>, options: RunOptions) {
    this.#ctx = ctx;
    this.#claims = claims;
    this.#clients = clients;
    this.#loaded = ctx.loaded!;
    this.#timeoutMs = options.timeoutMs;
    this.#progress = options.progress ?? (() => {});
    for (const client of clients) if (client.id) this.participants.set(client.id, client);
    this.#log = ctx.log.child({ update: this.id });
  }

  /** Fail the barrier (a participant's FAILED, disconnect or UNSUBSCRIBE, or an operator's ABORT). */
  fail(reason: string): void {
    this.#onFail(reason);
  }

  /** A participant said READY. */
  ready(clientId: string): void {
    this.#ready.add(clientId);
    this.#ctx.mark(this.timeline, this.id, 'ready', clientId);
    this.#ctx.records.current?.ready(clientId);
    this.#ctx.records.logFor(this.id).info({ client: clientId }, 'client ready');
    this.#checkBarrier();
  }

  /** The outgoing sessions, for SESSIONS. */
  sessionList(): SessionsReply['sessions'] {
    const out: SessionsReply['sessions'] = [];
    for (const [client, sessions] of this.sessions) {
      for (const s of sessions)
        out.push({ name: s.name, client, direction: 'outgoing', ready: this.#ready.has(client) });
    }
    return out;
  }

  /** Run the update to one of its endings. luod's phase is already 'preserving'. */
  async run(): Promise<UpdateOutcome> {
    const ctx = this.#ctx;
    ctx.mark(this.timeline, this.id, 'update-start');
    this.#claims.forgetPrevious();
    this.#record = ctx.records.start({
      update: this.id,
      backend: ctx.kernel.backend,
      from: await ctx.kernel.release().catch(() => 'unknown'),
      to: this.#loaded.version ?? this.#loaded.kernel,
      clients: [...this.participants].map(([clientId, client]) => ({
        id: clientId,
        uid: client.uid,
        sessions: sessionNames(clientId, client.sessionCount),
      })),
      load: ctx.loadSpan,
      ...(this.#loaded.gate && {
        gate: {
          outcome: this.#loaded.gate.outcome,
          ok: this.#loaded.gate.ok,
          sentence: this.#loaded.gate.sentence,
          forced: this.#loaded.gate.forced,
          ...(this.#loaded.gate.qualification && {
            qualification: {
              required: this.#loaded.gate.qualification.required,
              qualified: this.#loaded.gate.qualification.qualified,
              ...(this.#loaded.gate.qualification.record && {
                record: this.#loaded.gate.qualification.record,
              }),
            },
          }),
        },
      }),
      at: this.timeline[0]!.at,
    });
    this.#deadline = Date.now() + this.#timeoutMs;
    ctx.run = this;
    try {
      this.#log.info({ clients: [...this.participants.keys()], next: this.#loaded }, 'live update starting');
      const preserveFailure = await this.#preserve();
      if (preserveFailure !== null) return await this.#abort('aborted', preserveFailure);
      const barrierFailure = await this.#barrier();
      if (barrierFailure !== null) {
        if (this.#failures.length === 0) this.#failures.push({ id: '-', reason: barrierFailure });
        return await this.#abort('aborted', barrierFailure);
      }
      return await this.#kexec();
    } catch (err) {
      if (this.#rebooted) {
        this.#internal?.close();
        this.#closeDevice();
        this.#log.error({ err }, 'after the kexec: luod goes on with what it restored');
        return ctx.lastUpdate ?? { update: this.id, outcome: 'rebooted', timeline: this.timeline };
      }
      const reason = `${errorCode(err)}: ${(err as Error).message}`;
      this.#failures.push({ id: 'luod', reason });
      return await this.#abort('aborted', reason);
    }
  }

  /** Create every participant's sessions and give the keeper its copies; the reason to abort, or null. */
  async #preserve(): Promise<string | null> {
    await this.#progress('preserve', { clients: this.participants.size });
    this.#record.begin('preserve', this.timeline[0]!.at);
    const device = this.#ctx.kernel.openDevice();
    this.#device = device;
    for (const [clientId, client] of this.participants) {
      const sessions: Session[] = [];
      this.sessions.set(clientId, sessions);
      for (const name of sessionNames(clientId, client.sessionCount)) {
        try {
          sessions.push(device.createSession(name));
        } catch (err) {
          const reason =
            errorCode(err) === 'EEXIST'
              ? `session ${name} still exists: a copy of it from an earlier update is still open (a client must close its session fds after ABORTED)`
              : `cannot create session ${name}: ${(err as Error).message}`;
          this.#failures.push({ id: clientId, reason });
          return `${clientId}: ${reason}`;
        }
      }
    }
    const keeper = this.#ctx.keeper;
    if (!keeper) return null;
    try {
      await keeper.preserving(
        this.id,
        [...this.participants].map(([clientId, client]) => ({
          id: clientId,
          uid: client.uid,
          sessions: this.sessions.get(clientId)!,
        })),
        this.timeline,
      );
    } catch (err) {
      const reason = `luod cannot make this update crash-safe (it must never be the only holder of a session, and its state file must be written): ${errorCode(err)}: ${(err as Error).message}`;
      this.#failures.push({ id: 'luod', reason });
      return reason;
    }
    return null;
  }

  /** Send START_PRESERVATION and wait for every READY; why the barrier failed, or null. */
  async #barrier(): Promise<string | null> {
    const participants = this.participants;
    const barrier = new Promise<string | null>((resolve) => {
      const timer = setTimeout(() => {
        const missing = [...participants.keys()].filter((c) => !this.#ready.has(c));
        for (const c of missing)
          this.#failures.push({ id: c, reason: `no READY within ${this.#timeoutMs} ms` });
        resolve(`${missing.join(', ')} did not say READY within ${this.#timeoutMs} ms`);
      }, this.#timeoutMs);
      const settle = (result: string | null) => {
        clearTimeout(timer);
        resolve(result);
      };
      this.#onFail = (reason) => {
        const [who] = reason.split(' ');
        if (who && participants.has(who)) this.#failures.push({ id: who, reason });
        settle(reason);
      };
      this.#barrierDone = () => settle(null);
    });
    // The clients' deadline is the barrier's own, counted from now: the holds before it
    // wait for a slow holder as long as it runs, and must not eat the VMMs' time.
    this.#deadline = Date.now() + this.#timeoutMs;
    this.#ctx.mark(this.timeline, this.id, 'barrier-start');
    this.#record.end('preserve');
    this.#record.begin('barrier');
    for (const [clientId, client] of participants) {
      const sessions = this.sessions.get(clientId)!;
      this.#record.preservationSent(clientId);
      // Not awaited: a client that does not read its socket must not hold
      // the update; it simply never says READY before the deadline.
      void client.channel
        .send(
          {
            event: 'START_PRESERVATION',
            update: this.id,
            id: clientId,
            sessions: sessions.map((s) => s.name),
            deadline: new Date(this.#deadline).toISOString(),
            deadline_ms: this.#deadline - Date.now(),
          } satisfies StartPreservationEvent,
          sessions.map((s) => s.fd),
        )
        .catch(() => this.fail(`${clientId} could not be sent START_PRESERVATION`));
    }
    await this.#progress('barrier', { waiting: participants.size });
    this.#checkBarrier();
    const failure = participants.size === 0 ? null : await barrier;
    this.#barrierDone = null;
    return failure;
  }

  #checkBarrier(): void {
    if (this.#ctx.run === this && this.#ready.size === this.participants.size) this.#barrierDone?.();
  }

  /** Write luod's state into luod-internal and kexec: one of the endings after it, or an abort if refused. */
  async #kexec(): Promise<UpdateOutcome> {
    const ctx = this.#ctx;
    const record = this.#record;
    ctx.mark(this.timeline, this.id, 'barrier-done');
    record.end('barrier');
    record.begin('freeze');
    const draft = record.snapshot();
    const kexecAt = Date.now();
    record.end('freeze', kexecAt);
    record.begin('kexec', kexecAt);
    const state: CarriedState = {
      format: 'luod-state-v2',
      update: this.id,
      from: draft.from,
      to: draft.to,
      clients: [...this.participants].map(([clientId, client]) => ({
        id: clientId,
        uid: client.uid,
        sessions: this.sessions.get(clientId)!.map((s) => s.name),
      })),
      timeline: [...this.timeline, { phase: 'kexec', at: kexecAt }],
      record: record.snapshot(),
    };
    const internal = preserveState(this.#device!, state);
    this.#internal = internal;
    this.#closeDevice();
    await ctx.keeper?.kexec(state, internal);
    ctx.phase = 'kexec';
    for (const c of this.participants.values())
      ctx.notify(c, { event: 'KEXEC', update: this.id } satisfies KexecEvent);
    await this.#progress('kexec', { to: state.to });
    this.#log.info({ to: state.to }, 'kexec');
    ctx.mark(undefined, this.id, 'kexec');
    try {
      await ctx.kernel.kexec(this.#loaded);
    } catch (err) {
      internal.close();
      this.#internal = null;
      this.#failures.push({ id: 'kernel', reason: (err as Error).message });
      return await this.#abort(
        'refused',
        `the kernel refused to kexec: ${errorCode(err, '')} ${(err as Error).message}`,
      );
    }
    this.#rebooted = true;
    return ctx.kernel.kexecMode === 'systemd' ? this.#handedToSystemd() : await this.#rebootedInPlace();
  }

  /** Releasing the device must not turn one failure into two aborts. */
  #closeDevice(): void {
    const open = this.#device;
    this.#device = null;
    try {
      open?.close();
    } catch (err) {
      this.#log.warn({ err }, 'closing the live update device failed');
    }
  }

  /** The update is called off: the host runs on, every participant is told, nothing stays preserved. */
  async #abort(outcome: 'aborted' | 'refused', reason: string): Promise<UpdateOutcome> {
    const ctx = this.#ctx;
    const record = this.#record;
    this.#internal?.close();
    this.#closeDevice();
    this.#log.warn({ reason, failures: this.#failures }, 'update aborted');
    for (const f of this.#failures) record.failure(f.id, f.reason);
    for (const phase of ['preserve', 'barrier', 'freeze', 'kexec'] as const)
      record.end(phase, Date.now(), reason);
    record.begin('finish');
    await ctx.keeper?.releaseAll().catch((err) => this.#log.warn({ err }, 'the fd holder could not release'));
    for (const sessions of this.sessions.values()) for (const s of sessions) s.close();
    ctx.mark(this.timeline, this.id, 'aborted');
    // Not awaited: a client that stopped reading must not hold luod.
    for (const c of this.participants.values())
      ctx.notify(c, { event: 'ABORTED', update: this.id, reason } satisfies AbortedEvent);
    ctx.run = null;
    ctx.phase = 'idle';
    const ended: UpdateOutcome = {
      update: this.id,
      outcome,
      reason,
      failed: this.#failures,
      timeline: this.timeline,
    };
    ctx.lastUpdate = ended;
    record.end('finish');
    ctx.records.finish(outcome, reason);
    await this.#progress('aborted', { reason });
    // As before the split: the last outcome after the reply, which an update begun meanwhile may have replaced.
    return ctx.lastUpdate ?? ended;
  }

  /**
   * systemd has the job: it stops luod, carries the fd store through the
   * kexec, and starts the next luod with it. Nothing is closed here.
   */
  #handedToSystemd(): UpdateOutcome {
    this.#log.info('systemctl kexec accepted; systemd carries the sessions through the kexec');
    const outcome: UpdateOutcome = {
      update: this.id,
      outcome: 'kexec',
      reason: 'systemctl kexec accepted: systemd carries the sessions through the kexec',
      timeline: this.timeline,
    };
    this.#ctx.lastUpdate = outcome;
    return outcome;
  }

  /**
   * Emulated kernel: we are now "after the reboot". Every fd of the old
   * kernel is dead, and the subscribers' connections go, as their processes
   * would; they reconnect and CLAIM. The operator's connection stays, to
   * receive this update's outcome.
   */
  async #rebootedInPlace(): Promise<UpdateOutcome> {
    const ctx = this.#ctx;
    await ctx.keeper?.releaseAll();
    this.#internal?.close();
    for (const sessions of this.sessions.values()) for (const s of sessions) s.close();
    for (const client of [...this.#clients]) if (client.id) client.channel.close();
    ctx.run = null;
    ctx.phase = 'idle';
    ctx.loaded = null;
    ctx.loadSpan = null;
    // The next kernel's luod takes the record from the carried state, as after a real reboot.
    ctx.records.handOver();
    await this.#claims.recover();
    await this.#progress('restored', { clients: this.#claims.size });
    return ctx.lastUpdate ?? { update: this.id, outcome: 'rebooted', timeline: this.timeline };
  }
}
