/**
 * An update record laid out as a timeline: one lane for luod and the
 * kernel, one per client, bars for phases, the blackout span and what it was
 * spent on. The text summary and the HTML page both draw from this, so they
 * never disagree.
 */
import { blackoutOf, PHASE_MEANING, type PhaseName, type UpdateRecord } from '../record/format.js';

export type BarKind = PhaseName | 'paused' | 'claim';

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
  readonly blackout: { start: number; end: number } | null;
  /** How the blackout divides among luod's phases, longest first. */
  readonly breakdown: { phase: PhaseName; ms: number }[];
}

export const BAR_MEANING: Record<BarKind, string> = {
  ...PHASE_MEANING,
  paused: 'READY sent: the VM is paused until its sessions are claimed back (or the update is aborted)',
  claim: 'CLAIM received until the sessions reached the client',
};

/** The latest time the record knows of. */
function lastKnown(record: UpdateRecord): number {
  const times = [record.started, ...record.phases.flatMap((p) => [p.start, p.end ?? p.start])];
  for (const c of record.clients) {
    times.push(c.preserve?.end ?? c.preserve?.start ?? 0, c.ready ?? 0, c.claim?.end ?? c.claim?.start ?? 0);
  }
  return Math.max(...times);
}

export function timelineOf(record: UpdateRecord): Timeline {
  const start = record.started;
  const end = Math.max(start, record.finished ?? lastKnown(record));
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
    if (client.ready !== null) {
      const resumed = client.claim?.start ?? end;
      const lost = !client.claim && client.failure !== null;
      bars.push({
        kind: 'paused',
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
  const breakdown: { phase: PhaseName; ms: number }[] = [];
  if (blackout) {
    for (const bar of luod) {
      const ms = Math.min(bar.end, blackout.end) - Math.max(bar.start, blackout.start);
      if (ms > 0 && bar.kind !== 'load') breakdown.push({ phase: bar.kind as PhaseName, ms });
    }
    breakdown.sort((a, b) => b.ms - a.ms);
  }
  return { record, start, end, lanes, blackout, breakdown };
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
