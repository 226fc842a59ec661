/**
 * Building the record of one live update (its format: src/record/format.ts):
 * what an operator reads afterwards to see what happened and where the
 * blackout went (`luoctl report`).
 *
 * Lifecycle of a record:
 *  1. luod starts a RecordBuilder when an update starts, with the load span it
 *     measured (LOAD may have come long before).
 *  2. Phases open and close as luod goes: preserve, barrier, freeze, then
 *     kexec is opened. Each client's lane gets its preservation start (when
 *     START_PRESERVATION went out), its READY, or its failure.
 *  3. An abort or a refused kexec closes the record there (outcome aborted or
 *     refused); luod writes it at once.
 *  4. A kexec: the draft, kexec still open, travels in luod's carried state
 *     (state.ts, luod-internal), validated by the same schema as on disk.
 *  5. After boot luod resumes the draft: kexec ends when the new kernel
 *     started, then boot, luod-ready, restore; the record is written as
 *     in-progress while luod waits for claims (each client's CLAIM span).
 *  6. The last claim, or the claim deadline, closes it: completed, or failed
 *     when a session did not come back or was never claimed.
 *
 * Times are wall-clock milliseconds (Date.now()): across a real kexec the
 * next kernel's clock starts from the RTC, so the kexec/boot boundary is as
 * precise as that clock. Every phase transition is logged as a structured
 * event (`event: "phase"`), on the update's child logger.
 */
import type { Logger } from 'pino';
import {
  type ClientLane,
  type PhaseName,
  type PhaseSpan,
  RECORD_FORMAT,
  type RecordOutcome,
  UpdateRecord,
} from '../record/format.js';

export interface RecordStart {
  update: string;
  backend: 'real' | 'emulated';
  from: string;
  to: string;
  clients: { id: string; uid: number; sessions: string[] }[];
  load: { start: number; end: number } | null;
  /** The gate's verdict on the loaded kernel, `forced` when --force overrode a refusal. */
  gate?: {
    outcome: string;
    ok: boolean;
    sentence: string;
    forced: boolean;
    qualification?: { required: string; qualified: boolean; record?: string };
  };
  at?: number;
}

/** Builds one update's record as luod goes, and logs each phase transition. */
export class RecordBuilder {
  readonly #record: UpdateRecord;
  /** Each client's lane by id: a READY or CLAIM looks its lane up, a thousand times at scale. */
  readonly #lanes: Map<string, ClientLane>;
  readonly log: Logger;

  private constructor(record: UpdateRecord, log: Logger) {
    this.#record = record;
    this.#lanes = new Map();
    for (const c of record.clients) if (!this.#lanes.has(c.id)) this.#lanes.set(c.id, c);
    this.log = log;
  }

  static start(start: RecordStart, log: Logger): RecordBuilder {
    const at = start.at ?? Date.now();
    const builder = new RecordBuilder(
      {
        format: RECORD_FORMAT,
        update: start.update,
        backend: start.backend,
        outcome: 'in-progress',
        reason: null,
        from: start.from,
        to: start.to,
        started: at,
        finished: null,
        phases: start.load ? [{ phase: 'load', start: start.load.start, end: start.load.end }] : [],
        ...(start.gate && { gate: start.gate }),
        clients: start.clients.map((c) => ({
          id: c.id,
          uid: c.uid,
          sessions: [...c.sessions],
          preserve: null,
          ready: null,
          claim: null,
          failure: null,
        })),
        failures: [],
      },
      log.child({ update: start.update }),
    );
    return builder;
  }

  /** Continue a draft carried across the kexec (already validated by the state's schema). */
  static resume(draft: UpdateRecord, log: Logger): RecordBuilder {
    return new RecordBuilder(structuredClone(draft), log.child({ update: draft.update }));
  }

  get update(): string {
    return this.#record.update;
  }

  get outcome(): RecordOutcome {
    return this.#record.outcome;
  }

  /** A copy of the record as it stands. */
  snapshot(): UpdateRecord {
    return structuredClone(this.#record);
  }

  begin(phase: PhaseName, at = Date.now()): void {
    this.#record.phases.push({ phase, start: at, end: null });
    this.log.info({ event: 'phase', phase, step: 'start', at }, `phase ${phase} started`);
  }

  /** End the open `phase` (nothing happens if it is not open). */
  end(phase: PhaseName, at = Date.now(), failed?: string): void {
    const span = this.#open(phase);
    if (!span) return;
    span.end = Math.max(at, span.start);
    if (failed !== undefined) span.failed = failed;
    const ms = span.end - span.start;
    this.log.info(
      { event: 'phase', phase, step: 'end', at: span.end, ms, ...(failed !== undefined && { failed }) },
      `phase ${phase} ${failed !== undefined ? 'failed' : 'ended'} after ${ms} ms`,
    );
  }

  /** A phase that took no measurable time of luod's (its start and end are known together). */
  span(phase: PhaseName, start: number, end: number): void {
    this.begin(phase, start);
    this.end(phase, end);
  }

  isOpen(phase: PhaseName): boolean {
    return this.#open(phase) !== undefined;
  }

  #open(phase: PhaseName): PhaseSpan | undefined {
    return this.#record.phases.findLast((p) => p.phase === phase && p.end === null);
  }

  #client(id: string): ClientLane | undefined {
    return this.#lanes.get(id);
  }

  preservationSent(id: string, at = Date.now()): void {
    const client = this.#client(id);
    if (client) client.preserve = { start: at, end: null };
  }

  ready(id: string, at = Date.now()): void {
    const client = this.#client(id);
    if (!client) return;
    client.ready = at;
    if (client.preserve && client.preserve.end === null) client.preserve.end = at;
  }

  claimStarted(id: string, at = Date.now()): void {
    const client = this.#client(id);
    if (client) client.claim = { start: at, end: null };
  }

  claimed(id: string, at = Date.now()): void {
    const client = this.#client(id);
    if (client?.claim) client.claim.end = Math.max(at, client.claim.start);
  }

  /** A claim whose reply did not reach the client: it may claim again. */
  claimUndelivered(id: string): void {
    const client = this.#client(id);
    if (client) client.claim = null;
  }

  /**
   * The VMM's own report of its VM's blackout (RESUMED). 'recorded' the first time,
   * 'same' for a repeat of it, 'conflict' for another one (the first stands), 'unknown'
   * when `id` took no part in this update.
   */
  blackout(id: string, pausedAt: number, resumedAt: number): 'recorded' | 'same' | 'conflict' | 'unknown' {
    const client = this.#client(id);
    if (!client) return 'unknown';
    if (client.blackout)
      return client.blackout.paused_at === pausedAt && client.blackout.resumed_at === resumedAt
        ? 'same'
        : 'conflict';
    client.blackout = { paused_at: pausedAt, resumed_at: resumedAt };
    this.log.info(
      { event: 'blackout', client: id, paused_at: pausedAt, resumed_at: resumedAt, ms: resumedAt - pausedAt },
      `${id} reports its VM paused for ${resumedAt - pausedAt} ms (pause to resume)`,
    );
    return 'recorded';
  }

  /** The uid that subscribed `id` in this update, or undefined when it took no part. */
  uidOf(id: string): number | undefined {
    return this.#client(id)?.uid;
  }

  /** A failure, of a client (its lane is marked) or of luod or the kernel (id 'luod', 'kernel'). */
  failure(id: string, reason: string, at = Date.now()): void {
    if (this.#record.failures.some((f) => f.id === id && f.reason === reason)) return;
    this.#record.failures.push({ id, reason });
    const client = this.#client(id);
    if (client) {
      client.failure ??= reason;
      if (client.preserve && client.preserve.end === null) client.preserve.end = at;
    }
  }

  /** Close the record: open phases end now (failed, unless the update completed). */
  finish(
    outcome: Exclude<RecordOutcome, 'in-progress'>,
    reason: string | null,
    at = Date.now(),
  ): UpdateRecord {
    for (const span of this.#record.phases) {
      if (span.end !== null) continue;
      this.end(span.phase, at, outcome === 'completed' ? undefined : (reason ?? outcome));
    }
    for (const client of this.#record.clients) {
      if (client.preserve && client.preserve.end === null) client.preserve.end = at;
      if (client.claim && client.claim.end === null) client.claim = null;
    }
    this.#record.outcome = outcome;
    this.#record.reason = reason;
    this.#record.finished = Math.max(at, this.#record.started);
    this.log.info({ event: 'update-finished', outcome, reason }, `update ${outcome}`);
    return this.snapshot();
  }
}

/** A draft from the phase marks an older luod (state v1, no record) carried: the same phases, coarser. */
export function draftFromTimeline(state: {
  update: string;
  from: string;
  to: string;
  clients: { id: string; uid: number; sessions: string[] }[];
  timeline: { phase: string; at: number; client?: string | undefined }[];
  backend: 'real' | 'emulated';
}): UpdateRecord {
  const mark = (phase: string) => state.timeline.find((m) => m.phase === phase && !m.client)?.at;
  const started = mark('update-start') ?? state.timeline[0]?.at ?? Date.now();
  const barrierStart = mark('barrier-start') ?? started;
  const barrierDone = mark('barrier-done') ?? barrierStart;
  const kexec = mark('kexec') ?? barrierDone;
  return UpdateRecord.parse({
    format: RECORD_FORMAT,
    update: state.update,
    backend: state.backend,
    outcome: 'in-progress',
    reason: null,
    from: state.from,
    to: state.to,
    started,
    finished: null,
    phases: [
      { phase: 'preserve', start: started, end: barrierStart },
      { phase: 'barrier', start: barrierStart, end: barrierDone },
      { phase: 'freeze', start: barrierDone, end: kexec },
      { phase: 'kexec', start: kexec, end: null },
    ],
    clients: state.clients.map((c) => {
      const ready = state.timeline.find((m) => m.phase === 'ready' && m.client === c.id)?.at ?? null;
      return {
        ...c,
        preserve: { start: barrierStart, end: ready ?? barrierDone },
        ready,
        claim: null,
        failure: null,
      };
    }),
    failures: [],
  });
}
