/**
 * `luoctl doctor`: tells a host operator whether this machine can live update
 * and what to fix. Exit status 0 only when a live update can really run here.
 */
import { gatherHostFacts } from '../host/probe.js';
import { type CheckStatus, type DoctorReport, diagnose } from './doctor-report.js';
import type { RegisterCommand } from './environment.js';
import { commandAction, ExitCode } from './output.js';

/** Failures shout; everything else stays quiet so FAIL lines stand out. */
const MARKERS: Record<CheckStatus, string> = { ok: 'ok', warn: 'warn', fail: 'FAIL', info: 'info' };

/** One aligned line per check (marker, title, finding), with the fix indented under the finding. */
export function renderDoctorReport(report: DoctorReport): string {
  const titleWidth = Math.max(...report.checks.map((check) => check.title.length));
  const markerWidth = Math.max(...Object.values(MARKERS).map((marker) => marker.length));
  const indent = ' '.repeat(markerWidth + 2 + titleWidth + 2);
  const lines = [`luoctl doctor: kernel ${report.kernel.release}, backend ${report.backend}`, ''];
  for (const check of report.checks) {
    lines.push(
      `${MARKERS[check.status].padEnd(markerWidth)}  ${check.title.padEnd(titleWidth)}  ${check.finding}`,
    );
    if (check.fix) lines.push(`${indent}fix: ${check.fix}`);
  }
  const failed = report.checks.filter((check) => check.status === 'fail').length;
  lines.push(
    '',
    report.ok
      ? `This host can live update (backend ${report.backend}).`
      : `This host cannot live update: ${failed} ${failed === 1 ? 'check' : 'checks'} failed.`,
  );
  return lines.join('\n');
}

export const register: RegisterCommand = (program, env) => {
  program
    .command('doctor')
    .description('check whether this host can live update, and say what to fix')
    .addHelpText('after', '\nExit status: 0 when a live update can run on this host, 1 when it cannot.')
    .action(
      commandAction((_command, out) => {
        const report = diagnose(gatherHostFacts(env.host, env.hostRoot));
        out.result(report, () => renderDoctorReport(report));
        return report.ok ? ExitCode.ok : ExitCode.failure;
      }),
    );
};
