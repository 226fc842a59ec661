/**
 * The parity report: the same LUO scenarios on luokit's emulated kernel and on
 * the real kernel, compared outcome by outcome (docs/vm.md).
 *
 * For every scenario (or stage) id:
 * - 'same': both ran (pass or fail) and recorded the same status and the same
 *   steps: step names, errno names, returned values;
 * - 'different': they did not; the first differing steps are listed side by
 *   side. Each one is a bug in the emulator or in the scenario;
 * - 'not-compared': one side could not run it ('infra': a capability that
 *   kernel host lacks, e.g. the emulator cannot enforce a frozen size for
 *   TypeScript code, the real bench has no retrieve fault injector). Listed
 *   with the reason, never counted as a difference or as a pass;
 * - 'missing': one side has no result for it (a stage that never ran).
 */
import { outcomeText } from '../scenarios/context.js';
import type { ScenarioResult, StepRecord } from '../scenarios/types.js';

export type Verdict = 'same' | 'different' | 'not-compared' | 'missing';

export interface StepDifference {
  index: number;
  emulator: string | undefined;
  real: string | undefined;
}

export interface ParityRow {
  id: string;
  stage: string;
  emulator: string;
  real: string;
  verdict: Verdict;
  /** Why it was not compared, or a summary of the difference. */
  reason?: string;
  differences: StepDifference[];
}

export interface ParityReport {
  rows: ParityRow[];
  counts: Record<Verdict, number>;
}

/** One step as a comparable line: `STEP: ok`, `STEP: EBUSY`, `STEP: ok {"size":8192}`. */
export function stepText(step: StepRecord): string {
  const value =
    step.outcome.ok && step.outcome.value !== undefined ? ` ${JSON.stringify(step.outcome.value)}` : '';
  return `${step.step}: ${outcomeText(step.outcome)}${value}`;
}

function compareSteps(emulator: readonly StepRecord[], real: readonly StepRecord[]): StepDifference[] {
  const out: StepDifference[] = [];
  for (let i = 0; i < Math.max(emulator.length, real.length); i++) {
    const e = emulator[i] === undefined ? undefined : stepText(emulator[i]!);
    const r = real[i] === undefined ? undefined : stepText(real[i]!);
    if (e !== r) out.push({ index: i, emulator: e, real: r });
  }
  return out;
}

export function compareResults(
  emulator: readonly ScenarioResult[],
  real: readonly ScenarioResult[],
): ParityReport {
  const byId = (list: readonly ScenarioResult[]): Map<string, ScenarioResult> =>
    new Map(list.map((r) => [r.id, r]));
  const emu = byId(emulator);
  const kernel = byId(real);
  const ids = [...new Set([...emulator.map((r) => r.id), ...real.map((r) => r.id)])];
  const rows: ParityRow[] = ids.map((id) => {
    const e = emu.get(id);
    const r = kernel.get(id);
    const stage = (e ?? r)!.stage;
    const row = (verdict: Verdict, reason?: string, differences: StepDifference[] = []): ParityRow => ({
      id,
      stage,
      emulator: e?.status ?? '-',
      real: r?.status ?? '-',
      verdict,
      ...(reason !== undefined ? { reason } : {}),
      differences,
    });
    if (e === undefined || r === undefined) {
      return row('missing', `no result on the ${e === undefined ? 'emulated' : 'real'} kernel`);
    }
    if (e.status === 'infra' || r.status === 'infra') {
      const why = [
        e.status === 'infra' ? `emulator: ${e.error}` : '',
        r.status === 'infra' ? `real: ${r.error}` : '',
      ]
        .filter((s) => s !== '')
        .join('; ');
      return row('not-compared', why);
    }
    const differences = compareSteps(e.steps, r.steps);
    if (e.status !== r.status || differences.length > 0) {
      const reason =
        e.status !== r.status
          ? `status ${e.status} (emulator) vs ${r.status} (real)`
          : `${differences.length} step(s) differ`;
      return row('different', reason, differences);
    }
    return row('same');
  });
  const counts: Record<Verdict, number> = { same: 0, different: 0, 'not-compared': 0, missing: 0 };
  for (const row of rows) counts[row.verdict]++;
  return { rows, counts };
}

function pad(text: string, width: number): string {
  return text.length >= width ? text : text + ' '.repeat(width - text.length);
}

/** The report as a readable table, then every difference side by side. */
export function formatParity(report: ParityReport, maxDifferences = 8): string {
  const idWidth = Math.max(10, ...report.rows.map((r) => r.id.length));
  const lines: string[] = [];
  lines.push(
    `${pad('scenario', idWidth)}  ${pad('stage', 18)}  ${pad('emulator', 8)}  ${pad('real', 8)}  verdict`,
  );
  lines.push('-'.repeat(idWidth + 56));
  for (const r of report.rows) {
    lines.push(
      `${pad(r.id, idWidth)}  ${pad(r.stage, 18)}  ${pad(r.emulator, 8)}  ${pad(r.real, 8)}  ${r.verdict}`,
    );
  }
  const c = report.counts;
  lines.push('');
  lines.push(
    `${c.same} same, ${c.different} different, ${c['not-compared']} not compared, ${c.missing} missing`,
  );
  const different = report.rows.filter((r) => r.verdict === 'different' || r.verdict === 'missing');
  if (different.length > 0) {
    lines.push('');
    lines.push('Differences (emulator | real):');
    for (const r of different) {
      lines.push(`  ${r.id}: ${r.reason}`);
      for (const d of r.differences.slice(0, maxDifferences)) {
        lines.push(`    step ${d.index}:`);
        lines.push(`      emulator: ${d.emulator ?? '(no step)'}`);
        lines.push(`      real:     ${d.real ?? '(no step)'}`);
      }
      if (r.differences.length > maxDifferences) {
        lines.push(`    ... ${r.differences.length - maxDifferences} more`);
      }
    }
  }
  const skipped = report.rows.filter((r) => r.verdict === 'not-compared');
  if (skipped.length > 0) {
    lines.push('');
    lines.push('Not compared (a side could not run it):');
    for (const r of skipped) lines.push(`  ${r.id}: ${r.reason}`);
  }
  return `${lines.join('\n')}\n`;
}
