/**
 * A rollout as one self-contained HTML page, made as `luoctl report`'s page is (html.ts:
 * inline CSS and SVG, no script, no external asset): one lane per host on a common time
 * axis, a bar from assignment to start (waiting for a slot), one for the update coloured
 * by its outcome, the host's blackout marked on it, and the failures named.
 *
 * Bars carry data attributes (data-host, data-kind, data-start-ms, data-duration-ms) so
 * tools and tests can read the drawing. The input is the shape of `luoctl rollout status
 * --json`, declared here so that the report floor does not depend on the fleet's.
 */
import { escapeHtml, htmlPage } from './html.js';
import { formatMs } from './timeline.js';

export interface FleetHostLane {
  readonly id: string;
  readonly state: string;
  readonly reason?: string;
  readonly from: string | null;
  readonly to: string | null;
  readonly assigned_at: number | null;
  readonly started_at: number | null;
  readonly finished_at: number | null;
  readonly blackout_ms: number | null;
  readonly record: {
    readonly update: string;
    readonly blackout: { start: number; end: number } | null;
  } | null;
}

export interface FleetTimelineInput {
  readonly rollout: string | null;
  readonly state: string | null;
  readonly kernel: string | null;
  readonly max_parallel: number | null;
  readonly max_failures: number | null;
  readonly failures: number;
  readonly hosts: readonly FleetHostLane[];
}

const WIDTH = 1100;
const LABEL = 140;
const RIGHT = 40;
const AXIS = 44;
const LANE = 26;
const BAR = 16;
const CHART = WIDTH - LABEL - RIGHT;
const COLOURS: Record<string, string> = {
  waiting: '#cfd8dc',
  done: '#43a047',
  failed: '#c62828',
  skipped: '#9e9e9e',
  updating: '#1e88e5',
  assigned: '#1e88e5',
};

export function fleetReportHtml(status: FleetTimelineInput, now = Date.now()): string {
  const times = status.hosts.flatMap((h) =>
    [h.assigned_at, h.started_at, h.finished_at].filter((t): t is number => t !== null),
  );
  const start = times.length ? Math.min(...times) : now;
  const end = times.length
    ? Math.max(
        ...times,
        ...status.hosts.filter((h) => h.finished_at === null && h.started_at !== null).map(() => now),
      )
    : now;
  const span = Math.max(end - start, 1);
  const x = (at: number) => LABEL + ((at - start) / span) * CHART;
  const height = AXIS + status.hosts.length * LANE + 16;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" role="img" aria-label="rollout timeline" data-rollout="${escapeHtml(status.rollout ?? '')}">`,
  ];
  const step = tickStep(span);
  parts.push('<g class="axis">');
  for (let t = 0; t <= span + 1e-9; t += step) {
    const px = x(start + t).toFixed(1);
    parts.push(
      `<line x1="${px}" x2="${px}" y1="${AXIS - 6}" y2="${height - 8}" class="tick"/>`,
      `<text x="${px}" y="${AXIS - 12}" text-anchor="middle" class="tick-label">${escapeHtml(formatMs(t))}</text>`,
    );
  }
  parts.push('</g>');
  for (const [i, h] of status.hosts.entries()) {
    const top = AXIS + i * LANE;
    const y = top + (LANE - BAR) / 2;
    const failed = h.state === 'failed';
    parts.push(
      `<g class="lane" data-host="${escapeHtml(h.id)}" data-state="${escapeHtml(h.state)}">`,
      `<text x="8" y="${top + LANE / 2 + 4}" class="lane-label${failed ? ' failed' : ''}">${escapeHtml(h.id)}${failed ? ' ✕' : ''}</text>`,
      `<line x1="${LABEL}" x2="${WIDTH - RIGHT}" y1="${top + LANE}" y2="${top + LANE}" class="lane-line"/>`,
    );
    const bar = (kind: string, from: number, to: number, title: string) => {
      const bx = x(from);
      const bw = Math.max(x(to) - bx, 2);
      parts.push(
        `<rect class="bar" data-host="${escapeHtml(h.id)}" data-kind="${kind}" data-start-ms="${from - start}" data-duration-ms="${to - from}" x="${bx.toFixed(1)}" y="${y}" width="${bw.toFixed(1)}" height="${BAR}" fill="${COLOURS[kind] ?? '#607d8b'}"><title>${escapeHtml(title)}</title></rect>`,
      );
    };
    if (h.assigned_at !== null)
      bar(
        'waiting',
        h.assigned_at,
        h.started_at ?? h.finished_at ?? now,
        `${h.id}: assigned, waiting for a slot`,
      );
    if (h.started_at !== null) {
      const to = h.finished_at ?? now;
      bar(
        h.state,
        h.started_at,
        to,
        `${h.id}: ${h.state} ${formatMs(to - h.started_at)}${h.from && h.to ? ` (${h.from} → ${h.to})` : ''}${h.reason ? ` — ${h.reason}` : ''}`,
      );
    } else if (h.finished_at !== null && h.state !== 'pending') {
      bar(h.state, h.finished_at, h.finished_at, `${h.id}: ${h.state}${h.reason ? ` — ${h.reason}` : ''}`);
    }
    const blackout = h.record?.blackout;
    if (blackout) {
      const bx = x(blackout.start);
      const bw = Math.max(x(blackout.end) - bx, 2);
      parts.push(
        `<rect class="blackout" data-host="${escapeHtml(h.id)}" data-blackout="true" data-start-ms="${blackout.start - start}" data-duration-ms="${blackout.end - blackout.start}" x="${bx.toFixed(1)}" y="${y - 3}" width="${bw.toFixed(1)}" height="${BAR + 6}"><title>${escapeHtml(`${h.id}: blackout ${formatMs(blackout.end - blackout.start)} (update ${h.record!.update})`)}</title></rect>`,
      );
    }
    parts.push('</g>');
  }
  parts.push('</svg>');
  const rows = status.hosts
    .map(
      (h) =>
        `<tr data-host-row="${escapeHtml(h.id)}"><td>${escapeHtml(h.id)}</td><td>${escapeHtml(h.state)}</td><td class="num">${h.started_at !== null && h.finished_at !== null ? escapeHtml(formatMs(h.finished_at - h.started_at)) : ''}</td><td class="num">${h.blackout_ms !== null ? escapeHtml(formatMs(h.blackout_ms)) : ''}</td><td>${h.from && h.to ? escapeHtml(`${h.from} → ${h.to}`) : ''}</td><td class="fail">${h.state === 'failed' ? escapeHtml(h.reason ?? '') : ''}</td></tr>`,
    )
    .join('\n');
  const legend = Object.entries(COLOURS)
    .filter(([k]) => k !== 'assigned')
    .map(([k, c]) => `<span><i style="background:${c}"></i>${k}</span>`)
    .join('');
  const title = `rollout ${status.rollout ?? '(none)'}: ${status.state ?? 'none'}`;
  return htmlPage(
    title,
    STYLE,
    `<h1>rollout ${escapeHtml(status.rollout ?? '(none)')} <span class="state" data-state="${escapeHtml(status.state ?? '')}">${escapeHtml(status.state ?? 'none')}</span></h1>
<p>kernel ${escapeHtml(status.kernel ?? '?')}; at most ${status.max_parallel ?? '?'} hosts at once; stops at ${status.max_failures ?? '?'} failures; ${status.failures} failed.</p>
${parts.join('\n')}
<p class="legend">${legend}<span><i style="background:#d32f2f;opacity:.35"></i>blackout</span></p>
<table><tr><th>host</th><th>state</th><th>update took</th><th>blackout</th><th>kernel</th><th>failure</th></tr>
${rows}
</table>
`,
  );
}

function tickStep(span: number): number {
  const raw = Math.max(span, 1) / 8;
  const power = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * power >= raw) return m * power;
  return 10 * power;
}

const STYLE = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d2329; }
h1 { font-size: 20px; margin: 0 0 4px; } .state { font-weight: 600; padding: 1px 8px; border-radius: 4px; background: #455a64; color: #fff; }
svg { display: block; margin: 16px 0; background: #fafbfc; border: 1px solid #dde1e5; }
svg text { font: 12px system-ui, sans-serif; fill: #1d2329; }
svg .tick { stroke: #e3e6ea; } svg .tick-label { fill: #5f6b76; font-size: 11px; }
svg .lane-line { stroke: #e3e6ea; } svg .lane-label { font-weight: 600; } svg .lane-label.failed { fill: #c62828; }
svg .bar { rx: 3; } svg .blackout { fill: #d32f2f; fill-opacity: 0.35; stroke: #b71c1c; stroke-width: 1; }
table { border-collapse: collapse; margin: 8px 0 20px; } th, td { text-align: left; padding: 3px 10px; border-bottom: 1px solid #e3e6ea; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } .fail { color: #c62828; }
.legend span { display: inline-block; margin-right: 14px; } .legend i { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: -1px; border-radius: 2px; }
`;
