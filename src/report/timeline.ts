/**
 * An update record laid out as a timeline: one lane for luod and the
 * kernel, one per client, bars for phases, the blackout span and what it was
 * spent on. The text summary and the HTML page both draw from this, so they
 * never disagree.
 *
 * Blackout is record/format.ts's (blackoutOf): each VM's pause to resume, as
 * its VMM reported it. Without any report (older VMMs) the report says so and
 * shows luod's own view instead, READY to CLAIM, under that name.
 */
import {
  type BlackoutSummary,
  blackoutOf,
  PHASE_MEANING,
  type PhaseName,
  readyToClaimOf,
  type UpdateRecord,
} from '../record/format.js';

export type BarKind = PhaseName | 'paused' | 'held' | 'claim';

/** Time inside the span that no luod phase covers: the VMMs' own work after their CLAIM. */
export type SpentIn = PhaseName | 'vmms';

export interface Bar {
  readonly kind: BarKind;
  /** Milliseconds since the epoch. */
  readonly start: number;
  readonly end: number;
  /** Why it failed, when it did. */
  readonly failed?: string;
  /** Started before the update (a kernel loaded earlier): drawn from the update's start. */
  readonly before?: boolean;
  /** Not over when the record was written. */
  readonly open?: boolean;
}

export interface Lane {
  /** 'luod' for luod and the kernel, else the client id. */
  readonly id: string;
  readonly kind: 'luod' | 'client';
  readonly label: string;
  readonly bars: Bar[];
  readonly failure: string | null;
}

export interface Timeline {
  readonly record: UpdateRecord;
  readonly start: number;
  readonly end: number;
  readonly lanes: Lane[];
  /** Every VM's blackout as its VMM reported it, and the update's (the longest). */
  readonly blackout: BlackoutSummary;
  /**
   * What the report shades and breaks down: from the first pause to the last resume
   * (`reported`), or, when no VMM reported, luod's READY to CLAIM (`ready-to-claim`,
   * not the blackout). Null when no client said READY.
   */
  readonly span: { start: number; end: number; basis: 'reported' | 'ready-to-claim' } | null;
  /** How `span` divides among luod's phases (and the VMMs' own work after them), longest first. */
  readonly breakdown: { phase: SpentIn; ms: number }[];
}

export const SPAN_MEANING: Record<'reported' | 'ready-to-claim', string> = {
  reported: 'from the first VM paused to the last VM resumed, as their VMMs reported (RESUMED)',
  'ready-to-claim':
    'READY to CLAIM as luod saw it; the VMMs did not report their pause and resume, so their blackout is unknown (at least this long for the VM paused longest)',
};

export const BAR_MEANING: Record<BarKind, string> = {
  ...PHASE_MEANING,
  paused: "the VM's blackout: from its VMM pausing it to its VMM resuming it, as the VMM reported (RESUMED)",
  held: 'READY to CLAIM: luod held the VM paused (its VMM did not report its blackout)',
  claim: 'CLAIM received until the sessions reached the client',
};

/** What each entry of the breakdown covers. */
export const SPENT_MEANING: Record<SpentIn, string> = {
  ...PHASE_MEANING,
  vmms: "outside luod's phases: the VMMs restoring their VMs after CLAIM, up to the resume",
};

/** The latest time the record knows of. */
function lastKnown(record: UpdateRecord): number {
  const times = [record.started, ...record.phases.flatMap((p) => [p.start, p.end ?? p.start])];
  for (const c of record.clients) {
    times.push(c.preserve?.end ?? c.preserve?.start ?? 0, c.ready ?? 0, c.claim?.end ?? c.claim?.start ?? 0);
    if (c.blackout) times.push(c.blackout.resumed_at);
  }
  return Math.max(...times);
}

export function timelineOf(record: UpdateRecord): Timeline {
  const start = record.started;
  const end = Math.max(start, record.finished ?? start, lastKnown(record));
  const luod: Bar[] = record.phases.map((p) => ({
    kind: p.phase,
    start: Math.max(p.start, start),
    end: Math.max(p.end ?? end, start),
    ...(p.failed !== undefined && { failed: p.failed }),
    ...(p.start < start && { before: true }),
    ...(p.end === null && { open: true }),
  }));
  const lanes: Lane[] = [{ id: 'luod', kind: 'luod', label: 'luod + kernel', bars: luod, failure: null }];
  for (const client of record.clients) {
    const bars: Bar[] = [];
    if (client.preserve) {
      const failedHere = client.ready === null && client.failure !== null;
      bars.push({
        kind: 'preserve',
        start: client.preserve.start,
        end: client.preserve.end ?? end,
        ...(failedHere && { failed: client.failure! }),
        ...(client.preserve.end === null && { open: true }),
      });
    }
    if (client.blackout) {
      bars.push({
        kind: 'paused',
        start: client.blackout.paused_at,
        end: client.blackout.resumed_at,
      });
    } else if (client.ready !== null) {
      const resumed = client.claim?.start ?? end;
      const lost = !client.claim && client.failure !== null;
      bars.push({
        kind: 'held',
        start: client.ready,
        end: Math.max(client.ready, resumed),
        ...(lost && { failed: client.failure! }),
        ...(!client.claim && record.outcome === 'in-progress' && { open: true }),
      });
    }
    if (client.claim) {
      bars.push({ kind: 'claim', start: client.claim.start, end: client.claim.end ?? end });
    }
    lanes.push({ id: client.id, kind: 'client', label: client.id, bars, failure: client.failure });
  }
  const blackout = blackoutOf(record);
  const held = readyToClaimOf(record);
  const span = blackout.window
    ? { ...blackout.window, basis: 'reported' as const }
    : held
      ? { ...held, basis: 'ready-to-claim' as const }
      : null;
  const breakdown: { phase: SpentIn; ms: number }[] = [];
  if (span) {
    let covered = 0;
    for (const bar of luod) {
      const ms = Math.min(bar.end, span.end) - Math.max(bar.start, span.start);
      if (ms > 0 && bar.kind !== 'load') {
        breakdown.push({ phase: bar.kind as PhaseName, ms });
        covered += ms;
      }
    }
    const rest = span.end - span.start - covered;
    if (rest > 0) breakdown.push({ phase: 'vmms', ms: rest });
    breakdown.sort((a, b) => b.ms - a.ms);
  }
  return { record, start, end, lanes, blackout, span, breakdown };
}

/** 0.4 ms, 12 ms, 1.25 s, 2 min 5 s. */
export function formatMs(ms: number): string {
  if (ms === 0) return '0 ms';
  if (ms < 1) return `${ms.toFixed(1)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  const minutes = Math.floor(ms / 60_000);
  return `${minutes} min ${Math.round((ms - minutes * 60_000) / 1000)} s`;
}

/** The one-line account of an update's blackout, shared by the text and the HTML report. */
export function blackoutHeadline(timeline: Timeline): string {
  const { blackout, span } = timeline;
  const missing =
    blackout.unreported.length > 0
      ? `; not reported by ${blackout.unreported.join(', ')} (no RESUMED from their VMM)`
      : '';
  if (blackout.maxMs !== null) {
    const n = blackout.vms.length;
    return `blackout ${formatMs(blackout.maxMs)} (the longest of ${n} VM${n === 1 ? '' : 's'}: pause to resume, as each VMM reported)${missing}`;
  }
  if (span)
    return `blackout not reported by the VMMs (no RESUMED); luod held them paused from READY to CLAIM for ${formatMs(span.end - span.start)}`;
  return 'blackout: none (no client said READY)';
}
