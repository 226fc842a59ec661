/**
 * The update record's lifecycle: the one record luod has open, from the
 * update's start to its last claim, and every write of it to the records
 * directory.
 *
 * Lifecycle of a record:
 *  1. start(): UPDATE begins one (update-run.ts); it is written in progress
 *     only if the update reaches its kexec, inside the carried state.
 *  2. The run ends it when the update is aborted or refused (finish()).
 *  3. After the kexec the next luod continues the carried draft
 *     (resumeCarried()) and writes it, in progress, while it waits for claims.
 *  4. The last claim, or the claim deadline, closes it (closeAfterClaims()):
 *     completed, or failed with every failure's reason.
 *  5. A VMM's RESUMED (its VM's blackout) amends the record, in progress or
 *     closed (resumed()): usually after the last claim closed it, so the closed
 *     record is written again, once for every RESUMED that came meanwhile.
 *  A restarted luod picks up where the dead one stopped: an update cut before
 *  its kexec gets its record written now (closeInterrupted()), one cut during
 *  the claims continues the record on disk (resumeAfterRestart()).
 *
 * A record that cannot be written or read is logged, never fatal: the record
 * is the operator's account, the sessions are the VMs' memory.
 */
import type { Logger } from 'pino';
import type { UpdateRecord } from '../record/format.js';
import { type RecordStore, recordPath } from '../record/store.js';
import { errorCode } from '../sys/error.js';
import { fail } from './context.js';
import type { CarriedState, CarriedStateV1 } from './handover-state.js';
import type { Recovered } from './keeper.js';
import type { LuodKernel } from './kernel.js';
import type { LuodMetrics } from './metrics.js';
import { draftFromTimeline, RecordBuilder, type RecordStart } from './record-builder.js';

/** How long RESUMED of a closed record wait to be written together. */
const REWRITE_DELAY_MS = 20;

export class UpdateRecords {
  readonly #store: RecordStore | null;
  readonly #metrics: LuodMetrics | null;
  readonly #log: Logger;
  readonly #kernel: LuodKernel;
  /** The record of the update in progress (preserving, kexec, claiming). */
  #current: RecordBuilder | null = null;
  #lastPath: string | null = null;
  /** The last record closed, kept for the RESUMED that come after it closed. */
  #closed: RecordBuilder | null = null;
  /** A write of #closed is due (RESUMED came): the replies wait for it. */
  #rewrite: Promise<void> | null = null;
  /** saveSoon()'s write under way, and the record to write when it is done. */
  #writing: Promise<void> | null = null;
  #next: UpdateRecord | null = null;

  constructor(options: {
    store: RecordStore | null;
    metrics: LuodMetrics | null;
    log: Logger;
    kernel: LuodKernel;
  }) {
    this.#store = options.store;
    this.#metrics = options.metrics;
    this.#log = options.log;
    this.#kernel = options.kernel;
  }

  get current(): RecordBuilder | null {
    return this.#current;
  }

  /** Where records go, and the last one written (STATUS). */
  get dir(): string | null {
    return this.#store?.dir ?? null;
  }
  get lastPath(): string | null {
    return this.#lastPath;
  }

  /** The update's logger while one is in progress (every line carries its id), else luod's. */
  get log(): Logger {
    return this.#current?.log ?? this.#log;
  }

  /** A logger whose lines carry `update` once: the record's when it is that update's. */
  logFor(update: string): Logger {
    return this.#current?.update === update ? this.#current.log : this.#log.child({ update });
  }

  /** Open the record of a new update. */
  start(start: RecordStart): RecordBuilder {
    this.#current = RecordBuilder.start(start, this.#log);
    return this.#current;
  }

  /** Let go of the open record unwritten: on the emulated kernel, the next luod takes it from the carried state. */
  handOver(): void {
    this.#current = null;
  }

  /** Write the record as it stands (in progress) or closed; a failure to write is logged, never fatal. */
  save(record: UpdateRecord): void {
    if (record.outcome !== 'in-progress') this.#metrics?.updateFinished(record);
    if (!this.#store) return;
    if (this.#writing) {
      // A write is under way off the event loop: this one follows it, or it could land first.
      this.#next = record;
      return;
    }
    try {
      this.#written(record, this.#store.write(record));
    } catch (err) {
      this.log.error({ err, dir: this.#store.dir }, 'the update record could not be written');
    }
  }

  /**
   * save(), with the disk work off the event loop: for the record written when
   * luod restores an update, while the VMMs connect and claim. On a real host
   * the fsync is milliseconds, on a slow disk (or the bench's 9p share under
   * TCG) up to seconds, all of it on every VM's blackout if luod waited.
   * Writes stay in order: a save() meanwhile is written after this one, and
   * the last of several waiting wins.
   */
  saveSoon(record: UpdateRecord): void {
    if (!this.#store) return;
    this.#next = record;
    this.#writing ??= this.#drain(this.#store);
  }

  async #drain(store: RecordStore): Promise<void> {
    // Not even the record's check and JSON in this turn: luod is about to listen.
    await new Promise((resolve) => setImmediate(resolve));
    for (let record = this.#next; record; record = this.#next) {
      this.#next = null;
      try {
        this.#written(record, await store.writeAsync(record));
      } catch (err) {
        this.log.error({ err, dir: store.dir }, 'the update record could not be written');
      }
    }
    this.#writing = null;
  }

  /** Settles once no record write is under way (luod's stop, tests). */
  idle(): Promise<void> {
    return this.#writing ?? Promise.resolve();
  }

  #written(record: UpdateRecord, file: string): void {
    this.#lastPath = file;
    this.log.info({ event: 'record', path: file, outcome: record.outcome }, 'update record written');
  }

  /** Close the update's record with `outcome` and write it. */
  finish(outcome: 'completed' | 'aborted' | 'refused' | 'failed', reason: string | null): void {
    const builder = this.#current;
    if (!builder) return;
    const record = builder.finish(outcome, reason);
    this.save(record);
    this.#current = null;
    this.#closed = builder;
  }

  /**
   * RESUMED: the VMM of `id` reports its VM's blackout in `update`. Recorded in the
   * update's record (the open one, or the last closed one, or the one on disk), and
   * observed by the metrics. Resolves once a closed record holding it is written.
   * Throws ENOENT (no such update, or `id` not in it), EPERM (another uid),
   * EEXIST (a different blackout was reported already), EINVAL (resumed before paused).
   */
  async resumed(
    report: { id: string; update: string; pausedAt: number; resumedAt: number },
    caller: { uid: number; admin: boolean },
  ): Promise<number> {
    const { id, update, pausedAt, resumedAt } = report;
    if (resumedAt < pausedAt)
      throw fail('EINVAL', `RESUMED of ${id}: resumed_at (${resumedAt}) is before paused_at (${pausedAt})`);
    let builder: RecordBuilder | null = null;
    let open = false;
    if (this.#current?.update === update) {
      builder = this.#current;
      open = true;
    } else if (this.#closed?.update === update) builder = this.#closed;
    else builder = this.#fromDisk(update);
    if (!builder) throw fail('ENOENT', `RESUMED of ${id}: luod has no record of update ${update}`);
    const uid = builder.uidOf(id);
    if (uid === undefined) throw fail('ENOENT', `RESUMED of ${id}: ${id} took no part in update ${update}`);
    if (uid !== caller.uid && !caller.admin)
      throw fail('EPERM', `RESUMED of ${id}: subscribed by uid ${uid}, you are uid ${caller.uid}`);
    const ms = resumedAt - pausedAt;
    const outcome = builder.blackout(id, pausedAt, resumedAt);
    if (outcome === 'conflict')
      throw fail('EEXIST', `RESUMED of ${id}: another blackout of ${id} in ${update} was reported already`);
    if (outcome !== 'recorded') return ms;
    this.#metrics?.vmBlackout(ms);
    if (!open) await this.#rewriteClosed(builder);
    return ms;
  }

  /** A closed record from the records directory (a restarted luod), kept for the RESUMED that follow. */
  #fromDisk(update: string): RecordBuilder | null {
    let record: UpdateRecord | null = null;
    try {
      record = this.#store?.read(update) ?? null;
    } catch (err) {
      this.#log.warn({ err: errorCode(err), update }, 'RESUMED for an update whose record cannot be read');
      return null;
    }
    if (!record || record.outcome === 'in-progress') return null;
    this.#closed = RecordBuilder.resume(record, this.#log);
    return this.#closed;
  }

  /**
   * Write a closed record again, after its RESUMED: one write for all that arrive within
   * REWRITE_DELAY_MS (1000 VMMs resume within a second or two; one write each would be
   * quadratic in bytes). Resolves once the write is done (or failed, which is logged).
   */
  #rewriteClosed(builder: RecordBuilder): Promise<void> {
    this.#rewrite ??= new Promise<void>((resolve) => {
      setTimeout(async () => {
        this.#rewrite = null;
        await this.idle(); // after any write of the same record under way
        if (this.#store) {
          try {
            this.#lastPath = this.#store.write(builder.snapshot());
          } catch (err) {
            this.#log.error({ err, dir: this.#store.dir }, 'the update record could not be written');
          }
        }
        resolve();
      }, REWRITE_DELAY_MS);
    });
    return this.#rewrite;
  }

  /** After the last claim or the claim deadline: the update's record is closed. */
  closeAfterClaims(): void {
    const record = this.#current;
    if (!record) return;
    record.end('claims');
    if (!record.isOpen('finish')) record.begin('finish');
    record.end('finish');
    const failures = record.snapshot().failures;
    this.finish(
      failures.length === 0 ? 'completed' : 'failed',
      failures.length === 0 ? null : failures.map((f) => `${f.id}: ${f.reason}`).join('; '),
    );
  }

  /**
   * The dead luod's update, aborted before its kexec, had no record on disk
   * yet (the draft travels with the state): write it now, from what the
   * holder's fd names and the state file tell, so the operator sees it.
   */
  closeInterrupted(aborted: NonNullable<Recovered['aborted']>, reason: string): void {
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
      this.#current = RecordBuilder.resume(draft, this.#log);
      this.#current.failure('luod', reason);
      this.finish('aborted', reason);
    } catch (err) {
      this.#current = null;
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
  resumeAfterRestart(incoming: NonNullable<Recovered['incoming']>): RecordBuilder | null {
    this.#current = this.#readInProgress(incoming);
    return this.#current;
  }

  #readInProgress(incoming: NonNullable<Recovered['incoming']>): RecordBuilder | null {
    let draft: UpdateRecord | null = null;
    try {
      draft = this.#store?.read(incoming.update) ?? null;
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
    // By id, once: a search per claimed client through every lane and mark was quadratic.
    const lanes = new Map(draft.clients.map((c) => [c.id, c]));
    const claimMarks = new Map<string, number>();
    for (const m of incoming.timeline)
      if (m.phase === 'claim' && m.client !== undefined && !claimMarks.has(m.client))
        claimMarks.set(m.client, m.at);
    let changed = false;
    for (const id of incoming.claimed) {
      const lane = lanes.get(id);
      if (!lane || lane.claim?.end) continue;
      const at = claimMarks.get(id) ?? Date.now();
      record.claimStarted(id, lane.claim?.start ?? at);
      record.claimed(id, at);
      changed = true;
    }
    if (!record.isOpen('claims')) {
      record.begin('claims');
      changed = true;
    }
    // The record on disk is the one just read: written again only when this added to it,
    // and then not before luod listens (the claims need not wait for it).
    if (changed) this.saveSoon(record.snapshot());
    else if (this.#store) this.#lastPath = recordPath(this.#store.dir, draft.update);
    return record;
  }

  /** The record carried through the kexec, continued with the reboot's phases; null when it cannot be. */
  resumeCarried(state: CarriedState | CarriedStateV1, readyAt: number): RecordBuilder | null {
    this.#current = this.#continueCarried(state, readyAt);
    return this.#current;
  }

  #continueCarried(state: CarriedState | CarriedStateV1, readyAt: number): RecordBuilder | null {
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
      // luod's own start: `performance.timeOrigin` would load node:perf_hooks here, on the
      // restore after a kexec (0.1 s under TCG); process.uptime() tells the same.
      const processStart = Math.round(Date.now() - process.uptime() * 1000);
      const luodStart = Math.min(readyAt, Math.max(kernelStart, processStart));
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
}
