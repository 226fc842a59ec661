/**
 * An update record as a readable summary for a terminal: outcome, where the
 * blackout went, luod's phases with their durations, each client's lane and
 * the failures.
 */
import type { UpdateRecord } from '../record/format.js';
import { blackoutHeadline, formatMs, SPAN_MEANING, type Timeline, timelineOf } from './timeline.js';

function offset(timeline: Timeline, at: number): string {
  return `+${formatMs(at - timeline.start)}`;
}

export function reportText(record: UpdateRecord): string {
  const timeline = timelineOf(record);
  const lines: string[] = [];
  lines.push(
    `update ${record.update}: ${record.outcome.toUpperCase()}${record.reason ? ` (${record.reason})` : ''}`,
    `kernel ${record.from} -> ${record.to} (${record.backend}), started ${new Date(record.started).toISOString()}, ${
      record.finished === null ? 'still in progress' : `took ${formatMs(record.finished - record.started)}`
    }`,
  );
  lines.push('', blackoutHeadline(timeline));
  for (const vm of timeline.blackout.vms) lines.push(`  ${vm.id.padEnd(16)} ${formatMs(vm.ms).padStart(10)}`);
  const span = timeline.span;
  if (span) {
    const total = span.end - span.start;
    lines.push(`${formatMs(total)} ${SPAN_MEANING[span.basis]}, spent in:`);
    for (const part of timeline.breakdown) {
      const share = total > 0 ? Math.round((part.ms / total) * 100) : 0;
      lines.push(
        `  ${part.phase.padEnd(11)} ${formatMs(part.ms).padStart(10)}  ${String(share).padStart(3)}%`,
      );
    }
  }
  lines.push('', 'phases (luod + kernel):');
  for (const bar of timeline.lanes[0]!.bars) {
    const span = record.phases.find((p) => p.phase === bar.kind)!;
    const ms = (span.end ?? timeline.end) - span.start;
    const when = bar.before
      ? `${formatMs(record.started - span.start)} before the update`
      : offset(timeline, bar.start);
    lines.push(
      `  ${bar.kind.padEnd(11)} ${(bar.open ? 'open' : formatMs(ms)).padStart(10)}  at ${when}${
        bar.failed ? `  FAILED: ${bar.failed}` : ''
      }`,
    );
  }
  if (record.clients.length > 0) lines.push('', 'clients:');
  for (const client of record.clients) {
    const parts: string[] = [];
    if (client.preserve?.end != null)
      parts.push(`preserved in ${formatMs(client.preserve.end - client.preserve.start)}`);
    if (client.ready !== null) parts.push(`READY at ${offset(timeline, client.ready)}`);
    const bars = timeline.lanes.find((l) => l.id === client.id)?.bars ?? [];
    const paused = bars.find((b) => b.kind === 'paused');
    const held = bars.find((b) => b.kind === 'held');
    if (paused) parts.push(`blackout ${formatMs(paused.end - paused.start)} (pause to resume)`);
    else if (held)
      parts.push(`held ${formatMs(held.end - held.start)}${held.open ? ' so far' : ''} (READY to CLAIM)`);
    if (client.claim?.end != null) parts.push(`claimed at ${offset(timeline, client.claim.end)}`);
    lines.push(
      `  ${client.id.padEnd(16)} uid ${client.uid}  ${parts.join(', ') || 'no preservation started'}`,
    );
    if (client.failure) lines.push(`  ${''.padEnd(16)} FAILED: ${client.failure}`);
  }
  if (record.failures.length > 0) {
    lines.push('', 'failures:');
    for (const f of record.failures) lines.push(`  ${f.id}: ${f.reason}`);
  }
  return lines.join('\n');
}
