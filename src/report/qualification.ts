/**
 * A qualification record (src/qualify/record.ts) as one self-contained HTML page, in the
 * style of an update record's (html.ts): the verdict, the two kernels and their handover
 * formats, the gate's prediction, every check, the blackout figures, and how it was run.
 * Rows carry data attributes (data-check, data-ok) so tools and tests can read the page.
 */
import type { QualificationRecord, QualifiedKernel } from '../qualify/record.js';
import { escapeHtml, htmlPage, STYLE } from './html.js';

function kernelRow(side: string, k: QualifiedKernel): string {
  const f = k.formats;
  return `<tr data-kernel="${side}"><td>${side}</td><td>${escapeHtml(k.release)}</td><td>${escapeHtml(
    [f.kho ?? 'no KHO', f.luo ?? 'no LUO', ...f.files].join(', '),
  )}</td><td><code>${escapeHtml(k.sha256)}</code><br>${escapeHtml(k.image)}</td></tr>`;
}

export function qualificationHtml(record: QualificationRecord): string {
  const title = `qualification ${record.from.release} → ${record.to.release}: ${record.result}`;
  const verdictClass =
    record.result === 'pass' ? 'completed' : record.result === 'fail' ? 'failed' : 'aborted';
  const checks = record.checks
    .map((c) => {
      const outcome = c.outcome ?? (c.ok ? 'held' : 'failed');
      const where =
        c.kernel === undefined ? '' : c.kernel === 'from' ? record.from.release : record.to.release;
      return `<tr data-check="${escapeHtml(c.name)}" data-ok="${c.ok}" data-outcome="${outcome}"${c.part ? ` data-part="${c.part}"` : ''}><td class="${c.ok ? '' : 'fail'}">${outcome === 'held' ? 'ok' : escapeHtml(outcome)}</td><td>${escapeHtml(c.part ?? '')}</td><td>${escapeHtml(where)}</td><td>${escapeHtml(c.name)}</td><td>${escapeHtml(c.detail ?? '')}</td></tr>`;
    })
    .join('\n');
  const omitted = record.workload.omitted ?? [];
  const blackout = Object.entries(record.blackout)
    .map(([k, v]) => `<tr><td>${escapeHtml(k.replace(/_ms$/, ''))}</td><td class="num">${v} ms</td></tr>`)
    .join('');
  return htmlPage(
    title,
    STYLE,
    `<h1>${escapeHtml(record.from.release)} → ${escapeHtml(record.to.release)} <span class="outcome ${verdictClass}" data-result="${record.result}">${record.result}</span></h1>
<p>what the kernels did: <strong data-outcome="${record.outcome}">${record.outcome}</strong>; the gate predicted <strong>${escapeHtml(record.gate.outcome)}</strong> (${escapeHtml(record.gate.sentence)})${
      record.agrees_with_gate === false
        ? ' <span class="fail">— the outcome disagrees with the gate</span>'
        : ''
    }${record.reason ? `<br><span class="fail">${escapeHtml(record.reason)}</span>` : ''}</p>
<p>run ${escapeHtml(record.started)} to ${escapeHtml(record.finished)} by luokit ${escapeHtml(record.luokit)}; record ${escapeHtml(record.id)} (${escapeHtml(record.schema)})</p>
<h2>Kernels</h2>
<table><tr><th></th><th>release</th><th>handover formats (kernel-info)</th><th>image sha256</th></tr>
${kernelRow('from', record.from)}
${kernelRow('to', record.to)}
</table>
<h2>Checks</h2>
<p>ok: held; failed: did not hold; lost: lost with the handover (the outcome says how); not-run: the run ended before it.</p>
<table><tr><th></th><th>part</th><th>kernel</th><th>check</th><th>detail</th></tr>
${checks || '<tr><td colspan="5">none ran</td></tr>'}
</table>
<h2>Blackout (host clock, QEMU TCG)</h2>
${blackout ? `<table>${blackout}</table>` : '<p>not measured (the update did not get that far)</p>'}
<h2>Workload and guest</h2>
<p>${escapeHtml(record.workload.description)}; memfds ${escapeHtml(record.workload.memfds.join(' + '))}.</p>
${omitted.length ? `<p class="fail" data-omitted="${omitted.map((o) => o.part).join(',')}">partial workload: ${escapeHtml(omitted.map((o) => `${o.part} (${o.why})`).join(', '))}</p>` : ''}
<pre>${escapeHtml(record.guest.qemu.join(' '))}</pre>
`,
  );
}
