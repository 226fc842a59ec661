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
 *  A restarted luod picks up where the dead one stopped: an update cut before
 *  its kexec gets its record written now (closeInterrupted()), one cut during
 *  the claims continues the record on disk (resumeAfterRestart()).
 *
 * A record that cannot be written or read is logged, never fatal: the record
 * is the operator's account, the sessions are the VMs' memory.
 */
import type { Logger } from 'pino';
import type { UpdateRecord } from '../record/format.js';
import type { RecordStore } from '../record/store.js';
import type { CarriedState, CarriedStateV1 } from './handover-state.js';
import type { Recovered } from './keeper.js';
import type { LuodKernel } from './kernel.js';
import type { LuodMetrics } from './metrics.js';
import { draftFromTimeline, RecordBuilder, type RecordStart } from './record-builder.js';

export class UpdateRecords {
  readonly #store: RecordStore | null;
  readonly #metrics: LuodMetrics | null;
  readonly #log: Logger;
  readonly #kernel: LuodKernel;
  /** The record of the update in progress (preserving, kexec, claiming). */
  #current: RecordBuilder | null = null;
  #lastPath: string | null = null;

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
    try {
      this.#lastPath = this.#store.write(record);
      this.log.info(
        { event: 'record', path: this.#lastPath, outcome: record.outcome },
        'update record written',
      );
    } catch (err) {
      this.log.error({ err, dir: this.#store.dir }, 'the update record could not be written');
    }
  }

  /** Close the update's record with `outcome` and write it. */
  finish(outcome: 'completed' | 'aborted' | 'refused' | 'failed', reason: string | null): void {
    const builder = this.#current;
    if (!builder) return;
    const record = builder.finish(outcome, reason);
    this.save(record);
    this.#current = null;
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
    for (const id of incoming.claimed) {
      const lane = draft.clients.find((c) => c.id === id);
      if (!lane || lane.claim?.end) continue;
      const at = incoming.timeline.find((m) => m.phase === 'claim' && m.client === id)?.at ?? Date.now();
      record.claimStarted(id, lane.claim?.start ?? at);
      record.claimed(id, at);
    }
    if (!record.isOpen('claims')) record.begin('claims');
    this.save(record.snapshot());
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
}
