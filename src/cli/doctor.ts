/**
 * `luoctl doctor`: tells a host operator whether this machine can live update
 * and what to fix. Exit status 0 only when a live update can really run here.
 */
import { gatherHostFacts } from '../host/probe.js';
import { StatusReply } from '../protocol/replies.js';
import { CodedError, errorCode } from '../sys/error.js';
import {
  type CheckStatus,
  type DoctorReport,
  diagnose,
  type LoadedFacts,
  type LuodFacts,
} from './doctor-report.js';
import type { RegisterCommand } from './environment.js';
import { askLuod } from './luod-connection.js';
import { commandAction, ExitCode } from './output.js';

/** Failures shout; everything else stays quiet so FAIL lines stand out. */
const MARKERS: Record<CheckStatus, string> = { ok: 'ok', warn: 'warn', fail: 'FAIL', info: 'info' };

/** One aligned line per check (marker, title, finding), with the fix indented under the finding. */
export function renderDoctorReport(report: DoctorReport): string {
  const titleWidth = Math.max(...report.checks.map((check) => check.title.length));
  const markerWidth = Math.max(...Object.values(MARKERS).map((marker) => marker.length));
  const indent = ' '.repeat(markerWidth + 2 + titleWidth + 2);
  const lines = [
    `luoctl doctor: kernel ${report.kernel.release}, backend ${report.backend}, kexec mode ${report.kexecMode.mode}`,
    '',
  ];
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

/** How long the doctor waits for luod's STATUS before saying it does not answer. */
const LUOD_TIMEOUT_MS = 2000;

/** Ask the running luod (at $LUOD_SOCKET or the default socket) for its kexec mode. */
export async function askLuodFacts(): Promise<LuodFacts> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const reply = await Promise.race([
      askLuod({ cmd: 'STATUS' }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new CodedError('ETIMEDOUT', `no answer within ${LUOD_TIMEOUT_MS} ms`)),
          LUOD_TIMEOUT_MS,
        );
        timer.unref();
      }),
    ]);
    if (!reply.ok) return { running: false, reason: `${reply.error?.code}: ${reply.error?.message}` };
    const mode = reply.kexec_mode === 'systemd' ? 'systemd' : 'standalone';
    const holder = (reply.holder as { kind?: string } | null | undefined)?.kind ?? null;
    const loaded = reply.loaded as { kernel: string; gate?: LoadedFacts['gate'] } | null | undefined;
    const capacity = StatusReply.shape.capacity.safeParse(reply.capacity);
    return {
      running: true,
      kexecMode: mode,
      holder,
      loaded: loaded ? { kernel: loaded.kernel, ...(loaded.gate && { gate: loaded.gate }) } : null,
      ...(capacity.success && capacity.data && { capacity: capacity.data }),
    };
  } catch (err) {
    return { running: false, reason: errorCode(err) };
  } finally {
    clearTimeout(timer);
  }
}

export const register: RegisterCommand = (program, env) => {
  program
    .command('doctor')
    .description('check whether this host can live update, and say what to fix')
    .addHelpText('after', '\nExit status: 0 when a live update can run on this host, 1 when it cannot.')
    .action(
      commandAction(async (_command, out) => {
        const luod = await (env.luodFacts ?? askLuodFacts)();
        const report = diagnose(gatherHostFacts(env.host, env.hostRoot), luod);
        out.result(report, () => renderDoctorReport(report));
        return report.ok ? ExitCode.ok : ExitCode.failure;
      }),
    );
};
