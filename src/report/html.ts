/**
 * An update record as one self-contained HTML page: inline CSS and an inline
 * SVG timeline, no external assets, no script (it opens from a mail
 * attachment or an air-gapped host alike). One lane for luod and the
 * kernel, one per client; phase bars with their durations on a time axis;
 * the blackout span shaded; failures outlined and marked with a cross.
 *
 * Every bar carries data attributes (data-lane, data-phase, data-start-ms,
 * data-duration-ms, data-failed) so tools and tests can read the drawing.
 */
import type { UpdateRecord } from '../record/format.js';
import { reportText } from './text.js';
import {
  BAR_MEANING,
  type Bar,
  type BarKind,
  blackoutHeadline,
  formatMs,
  SPAN_MEANING,
  SPENT_MEANING,
  type Timeline,
  timelineOf,
} from './timeline.js';

const WIDTH = 1100;
const LABEL = 160;
const RIGHT = 40;
const AXIS = 44;
const LANE = 36;
const BAR = 22;
const CHART = WIDTH - LABEL - RIGHT;

const COLOURS: Record<BarKind, string> = {
  load: '#9aa5b1',
  preserve: '#4c8bf5',
  barrier: '#7e57c2',
  freeze: '#26a69a',
  kexec: '#ef6c00',
  boot: '#f9a825',
  'luod-ready': '#8d6e63',
  restore: '#43a047',
  claims: '#00897b',
  finish: '#607d8b',
  paused: '#e57373',
  held: '#f3b0b0',
  claim: '#2e7d32',
};

/**
 * The document every luokit HTML page is (an update record, a qualification, a rollout's
 * timeline): one self-contained file, its style inline, no script and nothing fetched, so
 * it can be mailed, archived or opened offline as it is.
 */
export function htmlPage(title: string, style: string, body: string): string {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${escapeHtml(title)}</title>
<style>${style}</style>
</head>
<body>
${body}</body>
</html>
`;
}

export function escapeHtml(text: string): string {
  return text.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!,
  );
}

/** A round tick step giving about eight ticks over `span` ms. */
function tickStep(span: number): number {
  const raw = Math.max(span, 1) / 8;
  const power = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * power >= raw) return m * power;
  return 10 * power;
}

function svgOf(timeline: Timeline): string {
  const span = Math.max(timeline.end - timeline.start, 1);
  const x = (at: number) => LABEL + ((at - timeline.start) / span) * CHART;
  const height = AXIS + timeline.lanes.length * LANE + 16;
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" role="img" aria-label="live update timeline" data-update="${escapeHtml(timeline.record.update)}">`,
  );
  // Time axis.
  const step = tickStep(span);
  parts.push('<g class="axis" data-axis="time">');
  for (let t = 0; t <= span + 1e-9; t += step) {
    const px = x(timeline.start + t).toFixed(1);
    parts.push(
      `<line x1="${px}" x2="${px}" y1="${AXIS - 6}" y2="${height - 8}" class="tick"/>`,
      `<text x="${px}" y="${AXIS - 12}" text-anchor="middle" class="tick-label">${escapeHtml(formatMs(t))}</text>`,
    );
  }
  parts.push('</g>');
  // Blackout (or, unreported, luod's READY to CLAIM), under the bars.
  const shade = timeline.span;
  if (shade) {
    const bx = x(shade.start);
    const bw = Math.max(x(shade.end) - bx, 2);
    const ms = shade.end - shade.start;
    const reported = shade.basis === 'reported';
    const label = reported
      ? `blackout ${formatMs(timeline.blackout.maxMs ?? ms)} (longest VM)`
      : `READY to CLAIM ${formatMs(ms)} (blackout not reported)`;
    parts.push(
      `<rect class="blackout" data-blackout="${reported}" data-basis="${shade.basis}" data-start-ms="${shade.start - timeline.start}" data-duration-ms="${ms}" x="${bx.toFixed(1)}" y="${AXIS - 4}" width="${bw.toFixed(1)}" height="${timeline.lanes.length * LANE + 8}"><title>${escapeHtml(`${formatMs(ms)}: ${SPAN_MEANING[shade.basis]}`)}</title></rect>`,
      `<text class="blackout-label" x="${(bx + bw / 2).toFixed(1)}" y="${height - 2}" text-anchor="middle">${escapeHtml(label)}</text>`,
    );
  }
  for (const [i, lane] of timeline.lanes.entries()) {
    const top = AXIS + i * LANE;
    parts.push(
      `<g class="lane" data-lane="${escapeHtml(lane.id)}" data-kind="${lane.kind}"${lane.failure ? ' data-failed="true"' : ''}>`,
      `<text x="8" y="${top + LANE / 2 + 4}" class="lane-label${lane.failure ? ' failed' : ''}">${escapeHtml(lane.label)}${lane.failure ? ' ✕' : ''}</text>`,
      `<line x1="${LABEL}" x2="${WIDTH - RIGHT}" y1="${top + LANE}" y2="${top + LANE}" class="lane-line"/>`,
    );
    for (const bar of lane.bars) parts.push(barOf(bar, lane.id, top, x, timeline.start));
    parts.push('</g>');
  }
  parts.push('</svg>');
  return parts.join('\n');
}

function barOf(bar: Bar, lane: string, top: number, x: (at: number) => number, t0: number): string {
  const bx = x(bar.start);
  const bw = Math.max(x(bar.end) - bx, 2);
  const y = top + (LANE - BAR) / 2;
  const ms = bar.end - bar.start;
  const label = `${bar.kind} ${formatMs(ms)}${bar.open ? '…' : ''}`;
  const title = `${lane}: ${bar.kind} ${formatMs(ms)}${bar.before ? ' (before the update)' : ''}${bar.open ? ' (not over)' : ''} — ${BAR_MEANING[bar.kind]}${bar.failed ? ` — FAILED: ${bar.failed}` : ''}`;
  const out = [
    `<rect class="bar${bar.failed ? ' failed' : ''}" data-lane="${escapeHtml(lane)}" data-phase="${bar.kind}" data-start-ms="${bar.start - t0}" data-duration-ms="${ms}"${bar.failed ? ' data-failed="true"' : ''}${bar.open ? ' data-open="true"' : ''} x="${bx.toFixed(1)}" y="${y}" width="${bw.toFixed(1)}" height="${BAR}" fill="${COLOURS[bar.kind]}"><title>${escapeHtml(title)}</title></rect>`,
  ];
  // A label inside the bar when it fits (about 6.5 px a character).
  if (bw > label.length * 6.5 + 6) {
    out.push(
      `<text class="bar-label" x="${(bx + 4).toFixed(1)}" y="${y + BAR / 2 + 4}">${escapeHtml(label)}</text>`,
    );
  }
  if (bar.failed) {
    out.push(
      `<text class="failure-mark" data-failure-mark="${escapeHtml(lane)}" x="${(bx + bw + 3).toFixed(1)}" y="${y + BAR / 2 + 5}">✕</text>`,
    );
  }
  return out.join('');
}

export const STYLE = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d2329; }
h1 { font-size: 20px; margin: 0 0 4px; }
.outcome { font-weight: 600; padding: 1px 8px; border-radius: 4px; color: #fff; }
.outcome.completed { background: #2e7d32; } .outcome.aborted, .outcome.refused { background: #ef6c00; }
.outcome.failed { background: #c62828; } .outcome.in-progress { background: #1565c0; }
svg { display: block; margin: 16px 0; background: #fafbfc; border: 1px solid #dde1e5; }
svg text { font: 12px system-ui, sans-serif; fill: #1d2329; }
svg .tick { stroke: #e3e6ea; } svg .tick-label { fill: #5f6b76; font-size: 11px; }
svg .lane-line { stroke: #e3e6ea; } svg .lane-label { font-weight: 600; } svg .lane-label.failed { fill: #c62828; }
svg .blackout { fill: #d32f2f; fill-opacity: 0.10; stroke: #d32f2f; stroke-dasharray: 4 3; stroke-opacity: 0.6; }
svg .blackout-label { fill: #c62828; font-weight: 600; }
svg .bar { rx: 3; } svg .bar.failed { stroke: #b71c1c; stroke-width: 2.5; }
svg .bar-label { fill: #fff; font-size: 11px; pointer-events: none; }
svg .failure-mark { fill: #c62828; font-weight: 700; font-size: 15px; }
table { border-collapse: collapse; margin: 8px 0 20px; } th, td { text-align: left; padding: 3px 10px; border-bottom: 1px solid #e3e6ea; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } .fail { color: #c62828; }
pre { background: #f4f6f8; padding: 12px; overflow-x: auto; }
.legend span { display: inline-block; margin-right: 14px; } .legend i { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: -1px; border-radius: 2px; }
`;

export function reportHtml(record: UpdateRecord): string {
  const timeline = timelineOf(record);
  const phases = record.phases
    .map((p) => {
      const ms = p.end === null ? null : p.end - p.start;
      return `<tr data-phase-row="${p.phase}"><td>${p.phase}</td><td class="num">${ms === null ? 'open' : escapeHtml(formatMs(ms))}</td><td class="num">${escapeHtml(p.start < record.started ? `${formatMs(record.started - p.start)} before` : `+${formatMs(p.start - record.started)}`)}</td><td>${escapeHtml(BAR_MEANING[p.phase])}</td><td class="fail">${p.failed ? escapeHtml(p.failed) : ''}</td></tr>`;
    })
    .join('\n');
  const span = timeline.span;
  const vms = timeline.blackout.vms.length
    ? `<table><tr><th>VM</th><th>blackout (pause to resume)</th></tr>${timeline.blackout.vms
        .map(
          (v) =>
            `<tr data-vm-blackout="${escapeHtml(v.id)}" data-blackout-ms="${v.ms}"><td>${escapeHtml(v.id)}</td><td class="num">${escapeHtml(formatMs(v.ms))}</td></tr>`,
        )
        .join('')}</table>`
    : '';
  const breakdown = span
    ? `<p>${escapeHtml(`${formatMs(span.end - span.start)} ${SPAN_MEANING[span.basis]}.`)}</p><table><tr><th>spent in</th><th>time</th><th>share</th><th>what</th></tr>${timeline.breakdown
        .map((b) => {
          const total = span.end - span.start;
          return `<tr><td>${b.phase}</td><td class="num">${escapeHtml(formatMs(b.ms))}</td><td class="num">${total > 0 ? Math.round((b.ms / total) * 100) : 0}%</td><td>${escapeHtml(SPENT_MEANING[b.phase])}</td></tr>`;
        })
        .join('')}</table>`
    : '<p>No client said READY: there was no blackout.</p>';
  const legend = (Object.keys(COLOURS) as BarKind[])
    .map((k) => `<span><i style="background:${COLOURS[k]}"></i>${k}</span>`)
    .join('');
  const title = `live update ${record.update}: ${record.outcome}`;
  return htmlPage(
    title,
    STYLE,
    `<h1>live update ${escapeHtml(record.update)} <span class="outcome ${record.outcome}" data-outcome="${record.outcome}">${record.outcome}</span></h1>
<p>kernel ${escapeHtml(record.from)} → ${escapeHtml(record.to)} (${record.backend}); started ${escapeHtml(new Date(record.started).toISOString())}${
      record.finished === null
        ? ', still in progress'
        : `, took ${escapeHtml(formatMs(record.finished - record.started))}`
    }<br><strong data-headline="blackout">${escapeHtml(blackoutHeadline(timeline))}</strong>${
      record.reason ? `<br><span class="fail">${escapeHtml(record.reason)}</span>` : ''
    }</p>
${svgOf(timeline)}
<p class="legend">${legend}<span><i style="background:#d32f2f;opacity:.25"></i>blackout</span></p>
<h2>Blackout</h2>
<p>Blackout: the time a VM is paused, from its VMM pausing it to its VMM resuming it, as the VMM reported. What a VMM does after resuming (checking memory, say) is not part of it.</p>
${vms}
<h2>Where the time went</h2>
${breakdown}
<h2>Phases</h2>
<table><tr><th>phase</th><th>took</th><th>at</th><th>what</th><th>failure</th></tr>
${phases}
</table>
<h2>Summary</h2>
<pre>${escapeHtml(reportText(record))}</pre>
`,
  );
}
