/**
 * Recovery and claims: what the previous kernel (or the previous luod)
 * handed over, from its arrival until each client has its sessions back or
 * the claim deadline releases them.
 *
 * Lifecycle of the incoming sessions:
 *  1. recover(): after the reboot (and, emulated, right after the kexec)
 *     luod opens /dev/liveupdate, reads `luod-internal`, and retrieves every
 *     session it names; a session that does not come back is a failure in
 *     the record, not a reason to stop. Or adoptRecovered(): a restarted
 *     luod takes them back from the fd holder (keeper.ts) instead.
 *  2. Every incoming session gets a second holder (the keeper) before any
 *     CLAIM is answered: a fast claim must not close a session while it is
 *     being handed over (issue 11).
 *  3. claim(): a client of the same uid (or root, forced) gets its fds in
 *     the CLAIM reply. luod closes its copies only once the reply went out;
 *     a reply that did not reach the client leaves the sessions waiting.
 *  4. The claim deadline: sessions nobody claimed are finished and their
 *     memory released, loudly.
 *  5. When no claim is waiting or on its way, the update is over: phase
 *     idle, record closed (update-records.ts).
 *
 * A restarted luod also learns of an update cut before its kexec: its
 * clients are told ABORTED when they subscribe again (takeInterrupted()).
 */
import type { Session } from '../kernel/device.js';
import type { ClaimReply, SessionsReply } from '../protocol/replies.js';
import { errorCode } from '../sys/error.js';
import { type CommandResult, fail, type LuodContext, type UpdateOutcome } from './context.js';
import { retrieveState } from './handover-state.js';
import type { Recovered } from './keeper.js';
import type { LuodKernel } from './kernel.js';

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

/** How often, and how far apart, recover() tries to open the device (and to hand the holder its copies). */
const OPEN_ATTEMPTS = 10;
const OPEN_RETRY_MS = 100;

export class Claims {
  readonly #ctx: LuodContext;
  readonly #incoming = new Map<string, Incoming>();
  /** Clients of an update a luod restart aborted, to be told when they subscribe again. */
  readonly #interrupted = new Map<string, { update: string; reason: string }>();
  #timer: NodeJS.Timeout | null = null;
  /**
   * How many entries are in each claim state: #settle runs after every claim,
   * and looking through every entry each time made a thousand claims
   * quadratic (bench/scale.ts). Kept by #put, #drop and #setClaim only.
   */
  #counts = { waiting: 0, sending: 0, done: 0 };
  /**
   * Per uid, how many entries are not yet claimed: every connection asks
   * (hasPendingFor, a reserved slot), and looking through every entry for
   * each made a thousand VMMs reconnecting quadratic. Kept with #counts.
   */
  readonly #pendingByUid = new Map<number, number>();
  /** When unclaimed sessions are released (epoch ms). */
  #deadline = 0;
  #deadlinePassed = false;
  /**
   * Settles once every incoming session has a second holder (recover()) and
   * the update's record in progress is on disk: no CLAIM is answered
   * before, or a fast claim could close a session while it is being handed
   * to the holder, and a luod killed after a claim could find no record to
   * continue.
   */
  #kept: Promise<void> = Promise.resolve();
  #keeping = false;

  constructor(ctx: LuodContext) {
    this.#ctx = ctx;
  }

  /**
   * A restarted luod: what its keeper took back from the fd holder. Runs
   * before recover(), which it makes unnecessary when sessions came back.
   */
  adoptRecovered(recovered: Recovered): void {
    const ctx = this.#ctx;
    if (recovered.aborted) {
      const { update, clients } = recovered.aborted;
      const reason = 'luod was restarted during the update, before the kexec: the update is aborted';
      for (const id of clients) this.#interrupted.set(id, { update, reason });
      ctx.lastUpdate = {
        update,
        outcome: 'aborted',
        reason,
        failed: [{ id: 'luod', reason }],
        timeline: [ctx.mark(undefined, update, 'aborted')],
      };
      ctx.records.closeInterrupted(recovered.aborted, reason);
    }
    const incoming = recovered.incoming;
    if (!incoming) return;
    for (const client of incoming.clients) {
      this.#put({ ...client, claim: 'waiting' });
      ctx.owners.adopt(client.id, client.uid);
    }
    for (const id of incoming.claimed) {
      this.#put({ id, uid: 0, update: incoming.update, sessions: [], claim: 'done' });
    }
    ctx.lastUpdate = {
      update: incoming.update,
      outcome: 'rebooted',
      timeline: incoming.timeline,
      claims: [...incoming.claimed],
    };
    this.#deadline = incoming.claimDeadline ?? Date.now() + ctx.claimTimeoutMs;
    void ctx.keeper?.claiming({ ...incoming, claimDeadline: this.#deadline }, incoming.clients, {
      claimed: incoming.claimed,
      alreadyHeld: true,
    });
    this.#deadlinePassed = false;
    ctx.phase = [...this.#incoming.values()].some((e) => e.claim !== 'done') ? 'claiming' : 'idle';
    ctx.records.resumeAfterRestart(incoming);
    // As after a kexec (restore()): no CLAIM before the record it may have queued is on disk,
    // or the last claim's closed record would wait behind it, and a kill lose it.
    this.#holdCommandsUntil(ctx.records.idle());
    ctx.log.info(
      { update: incoming.update, clients: incoming.clients.map((c) => c.id), claimed: incoming.claimed },
      'luod restarted after the kexec: incoming sessions taken back from the holder; waiting for claims',
    );
    if (ctx.phase === 'claiming') this.#armDeadline();
    else ctx.records.closeAfterClaims();
  }

  /**
   * On the emulated kernel, after each kexec: take back what the previous
   * kernel handed over, and give the holder its copies.
   */
  async recover(): Promise<void> {
    await this.restore();
    await this.#kept;
  }

  /**
   * luod's start: recover() up to the sessions being back in luod, so that
   * luod listens while the holder takes its copies (seconds for many sessions
   * on a slow machine, every VM's blackout if luod waited). Nothing is
   * holder-less meanwhile that was not before: luod holds every session, and
   * answers no CLAIM, nor anything else but queries (luod.ts), until the
   * holder has them all (`keeping`).
   */
  async restore(): Promise<void> {
    let restored!: (last: UpdateOutcome | null) => void;
    const last = new Promise<UpdateOutcome | null>((resolve) => {
      restored = resolve;
    });
    // The record was queued during the restore (saveSoon): written off the event loop
    // while luod listens and the holder takes its copies, awaited by the claims as they are.
    this.#holdCommandsUntil(
      last.then((outcome) =>
        outcome ? Promise.all([this.#keepIncoming(outcome), this.#ctx.records.idle()]) : undefined,
      ),
    );
    let outcome: UpdateOutcome | null = null;
    try {
      outcome = await this.#recover();
    } finally {
      restored(outcome);
    }
  }

  /** Until `done` settles, CLAIM and every state-changing command wait (`keeping`, `kept`). */
  #holdCommandsUntil(done: Promise<unknown>): void {
    this.#keeping = true;
    this.#kept = done.then(
      () => {
        this.#keeping = false;
      },
      () => {
        this.#keeping = false;
      },
    );
  }

  /** Whether the holder is still being given the incoming sessions (restore()). */
  get keeping(): boolean {
    return this.#keeping;
  }

  /** Settles once the holder has every incoming session. */
  get kept(): Promise<void> {
    return this.#kept;
  }

  /** The outcome whose sessions the holder must be given, or null when nothing came back. */
  async #recover(): Promise<UpdateOutcome | null> {
    const ctx = this.#ctx;
    const readyAt = Date.now();
    let device: ReturnType<LuodKernel['openDevice']> | null = null;
    // /dev/liveupdate has one opener at a time (EBUSY while another has it): a
    // passing failure must not leave the previous update's sessions unclaimed.
    for (let attempt = 1; device === null; attempt++) {
      try {
        device = ctx.kernel.openDevice();
      } catch (err) {
        if (attempt >= OPEN_ATTEMPTS) {
          ctx.log.error(
            { err, attempts: attempt },
            'cannot open the live update device to look for a previous update; sessions it holds stay in the kernel until luod is restarted',
          );
          return null;
        }
        ctx.log.warn({ err, attempt }, 'cannot open the live update device yet; trying again');
        await new Promise((resolve) => setTimeout(resolve, OPEN_RETRY_MS));
      }
    }
    try {
      const state = retrieveState(device);
      if (!state) {
        ctx.log.info('no live update in progress (no luod-internal session)');
        return null;
      }
      // Its sessions need their second holder before any CLAIM is answered: start the
      // holder process now, beside the rest of the restore, not after it. Without systemd
      // that is a second Node start, on every VM's blackout (docs/vm.md, "luod-ready").
      ctx.keeper?.holder.warm?.();
      // The record is the operator's account; the sessions are the VMs' memory.
      // Nothing about the first may keep luod from restoring the second.
      const record = ctx.records.resumeCarried(state, readyAt);
      const log = record?.log ?? ctx.log.child({ update: state.update });
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
              `session ${name} did not come back: ${errorCode(err)}: ${(err as Error).message}`,
            );
          }
        }
        this.#put({
          id: client.id,
          uid: client.uid,
          update: state.update,
          sessions,
          claim: 'waiting',
        });
        ctx.owners.adopt(client.id, client.uid);
      }
      this.#deadlinePassed = false;
      ctx.phase = this.#incoming.size > 0 ? 'claiming' : 'idle';
      ctx.lastUpdate = {
        update: state.update,
        outcome: 'rebooted',
        timeline: [...state.timeline, ctx.mark(undefined, state.update, 'luod-ready')],
        claims: [],
      };
      record?.end('restore');
      log.info(
        { clients: [...this.#incoming.keys()], from: state.from, to: state.to },
        'live update restored; waiting for claims',
      );
      if (ctx.phase === 'claiming') {
        record?.begin('claims');
        // Written while luod listens and the VMMs claim, not before (update-records.ts).
        if (record) ctx.records.saveSoon(record.snapshot());
        this.#deadline = Date.now() + ctx.claimTimeoutMs;
        this.#armDeadline();
      } else {
        ctx.records.closeAfterClaims();
      }
    } catch (err) {
      ctx.records.log.error({ err }, 'the state of the previous update could not be restored');
      const record = ctx.records.current;
      if (record) {
        const reason = `luod could not restore the update: ${errorCode(err)}: ${(err as Error).message}`;
        record.failure('luod', reason);
        ctx.records.finish('failed', reason);
      }
    } finally {
      try {
        device.close();
      } catch (err) {
        ctx.log.warn({ err }, 'closing the live update device failed');
      }
    }
    return ctx.phase === 'claiming' && ctx.lastUpdate ? ctx.lastUpdate : null;
  }

  /** Give the keeper a copy of every incoming session before any client can claim one. */
  async #keepIncoming(last: UpdateOutcome): Promise<void> {
    const ctx = this.#ctx;
    // Holding the same name again replaces the copy: a retry is safe, and worth it,
    // since until the holder has them luod is the sessions' only holder.
    for (let attempt = 1; ; attempt++) {
      try {
        await ctx.keeper?.claiming(
          { update: last.update, timeline: last.timeline, claimDeadline: this.#deadline },
          [...this.#incoming.values()],
        );
        return;
      } catch (err) {
        if (attempt < OPEN_ATTEMPTS) {
          ctx.log.warn({ err, attempt }, 'the fd holder did not take the incoming sessions; trying again');
          await new Promise((resolve) => setTimeout(resolve, OPEN_RETRY_MS));
          continue;
        }
        ctx.log.error(
          { err },
          'the fd holder could not take the incoming sessions: luod is their only holder',
        );
        return;
      }
    }
  }

  #armDeadline(): void {
    this.#timer = setTimeout(() => this.#releaseUnclaimed(), Math.max(0, this.#deadline - Date.now()));
    this.#timer.unref();
  }

  #releaseUnclaimed(): void {
    this.#deadlinePassed = true;
    const record = this.#ctx.records.current;
    const reason = `not claimed within ${this.#ctx.claimTimeoutMs} ms`;
    record?.end('claims', Date.now(), reason);
    record?.begin('finish');
    for (const entry of this.#incoming.values()) {
      if (entry.claim === 'waiting') this.#release(entry);
    }
    this.#settle();
  }

  /** Finish an unclaimed client's sessions: past the deadline, their memory is released. */
  #release(entry: Incoming): void {
    const ctx = this.#ctx;
    this.#drop(entry);
    ctx.records.current?.failure(
      entry.id,
      `did not claim its sessions within ${ctx.claimTimeoutMs} ms: they were finished, their memory released`,
    );
    ctx.metrics?.unclaimedReleased(entry.sessions.length);
    ctx.records
      .logFor(entry.update)
      .error(
        { client: entry.id, sessions: entry.sessions.map((s) => s.name) },
        `UNCLAIMED: ${entry.id} did not claim its sessions within ${ctx.claimTimeoutMs} ms; finishing them, their memory is released`,
      );
    for (const session of entry.sessions) {
      try {
        session.finish();
      } catch (err) {
        ctx.log.warn({ err, session: session.name }, 'finish failed');
      }
      session.close();
    }
    void ctx.keeper?.done(entry.id, entry.sessions);
  }

  /**
   * After each claim delivered or not, and at the deadline: once no client is waiting
   * (before the deadline) and no reply is on its way, the update is over.
   */
  #settle(): void {
    const ctx = this.#ctx;
    if (this.#counts.sending > 0) return;
    if (!this.#deadlinePassed && this.#counts.waiting > 0) return;
    if (ctx.phase !== 'claiming') return;
    if (this.#timer) clearTimeout(this.#timer);
    ctx.phase = 'idle';
    if (!this.#deadlinePassed) ctx.mark(ctx.lastUpdate?.timeline, ctx.lastUpdate?.update, 'all-claimed');
    ctx.records.closeAfterClaims();
  }

  /** A CLAIM from `uid`: answered once every incoming session has a second holder (recover()). */
  async claim(uid: number, id: string, force: boolean): Promise<CommandResult> {
    await this.#kept;
    const ctx = this.#ctx;
    const entry = this.#incoming.get(id);
    if (!entry) throw fail('ENOENT', `no sessions for ${id} from the last update`);
    if (entry.claim === 'done') throw fail('EBUSY', `${id} was already claimed`);
    if (entry.claim === 'sending') throw fail('EBUSY', `a CLAIM of ${id} is already being answered`);
    if (uid !== entry.uid && !(force && uid === 0)) {
      throw fail('EPERM', `CLAIM of ${id}: subscribed by uid ${entry.uid}, you are uid ${uid}`);
    }
    // luod lets go of its copies only once the client has the fds: a client
    // that dies before the reply reaches it must not lose its memory.
    this.#setClaim(entry, 'sending');
    ctx.records.current?.claimStarted(id);
    const sessions = entry.sessions;
    return {
      body: { id, update: entry.update, sessions: sessions.map((s) => s.name) } satisfies ClaimReply,
      fds: sessions,
      delivered: () => {
        for (const s of sessions) s.close();
        this.#setClaim(entry, 'done');
        ctx.mark(ctx.lastUpdate?.timeline, entry.update, 'claim', id);
        // The client has its own copies now: the holder may let go of its.
        void ctx.keeper?.done(id, sessions, ctx.lastUpdate?.timeline);
        ctx.lastUpdate?.claims?.push(id);
        ctx.records.current?.claimed(id);
        ctx.records.logFor(entry.update).info({ client: id }, 'client claimed its sessions');
        this.#settle();
      },
      undelivered: () => {
        this.#setClaim(entry, 'waiting');
        ctx.records.current?.claimUndelivered(id);
        if (this.#deadlinePassed) {
          this.#release(entry);
        } else {
          ctx.records
            .logFor(entry.update)
            .warn({ client: id }, 'the CLAIM reply did not reach the client; its sessions are kept');
        }
        this.#settle();
      },
    };
  }

  #put(entry: Incoming): void {
    const previous = this.#incoming.get(entry.id);
    if (previous) this.#count(previous, -1);
    this.#incoming.set(entry.id, entry);
    this.#count(entry, 1);
  }

  #drop(entry: Incoming): void {
    if (this.#incoming.get(entry.id) !== entry) return;
    this.#incoming.delete(entry.id);
    this.#count(entry, -1);
  }

  #setClaim(entry: Incoming, claim: Incoming['claim']): void {
    const counted = this.#incoming.get(entry.id) === entry;
    if (counted) this.#count(entry, -1);
    entry.claim = claim;
    if (counted) this.#count(entry, 1);
  }

  /** `entry`, as it stands, counted in (1) or out (-1) of #counts and #pendingByUid. */
  #count(entry: Incoming, by: 1 | -1): void {
    this.#counts[entry.claim] += by;
    if (entry.claim === 'done') return;
    const pending = (this.#pendingByUid.get(entry.uid) ?? 0) + by;
    if (pending > 0) this.#pendingByUid.set(entry.uid, pending);
    else this.#pendingByUid.delete(entry.uid);
  }

  /** A new update begins: what the last one left (claims, its record, ABORTED to tell) is over. */
  forgetPrevious(): void {
    this.#incoming.clear();
    this.#counts = { waiting: 0, sending: 0, done: 0 };
    this.#pendingByUid.clear();
    this.#interrupted.clear(); // an ABORTED from before this update would only confuse
    // A previous update still waiting for claims is closed by this one.
    if (this.#ctx.records.current) this.#ctx.records.closeAfterClaims();
  }

  /** The update a luod restart aborted under client `id`, told once (at its next SUBSCRIBE). */
  takeInterrupted(id: string): { update: string; reason: string } | undefined {
    const interrupted = this.#interrupted.get(id);
    this.#interrupted.delete(id);
    return interrupted;
  }

  /** How many clients have incoming sessions (claimed or not). */
  get size(): number {
    return this.#incoming.size;
  }

  /** Whether `uid` has sessions still to claim (a reserved connection slot). */
  hasPendingFor(uid: number): boolean {
    return this.#pendingByUid.has(uid);
  }

  /** Whether `id` has sessions still to claim: an id its owner must not lose. */
  isPending(id: string): boolean {
    const entry = this.#incoming.get(id);
    return entry !== undefined && entry.claim !== 'done';
  }

  /** The ids with sessions still to claim. */
  pending(): string[] {
    return [...this.#incoming.values()].filter((e) => e.claim !== 'done').map((e) => e.id);
  }

  /** The ids `uid` subscribed before the kexec. */
  idsOf(uid: number): string[] {
    return [...this.#incoming.values()].filter((e) => e.uid === uid).map((e) => e.id);
  }

  /** The incoming sessions, for SESSIONS. */
  sessionList(): SessionsReply['sessions'] {
    const out: SessionsReply['sessions'] = [];
    for (const entry of this.#incoming.values()) {
      for (const s of entry.sessions)
        out.push({ name: s.name, client: entry.id, direction: 'incoming', claimed: entry.claim === 'done' });
    }
    return out;
  }

  /** Sessions luod still holds for a claim (the metrics' gauge). */
  unclaimedSessions(): number {
    let unclaimed = 0;
    for (const entry of this.#incoming.values())
      if (entry.claim !== 'done') unclaimed += entry.sessions.length;
    return unclaimed;
  }

  close(): void {
    if (this.#timer) clearTimeout(this.#timer);
  }
}
