/**
 * luoctl's commands that talk to luod: status, clients, sessions, load,
 * update, abort. Each honours --json and the LUOD_SOCKET / --socket choice.
 */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { wholeList } from '../protocol/list-page.js';
import type { ClientsReply, SessionsReply } from '../protocol/replies.js';
import { wholeStatus } from '../protocol/status-page.js';
import { CodedError } from '../sys/error.js';
import type { RegisterCommand } from './environment.js';
import { askFor } from './luod-connection.js';
import { commandAction, ExitCode, type Output } from './output.js';

function socketOf(command: Command): string | undefined {
  return command.optsWithGlobals<{ socket?: string }>().socket;
}

/** Progress for people on stderr (stdout stays one JSON object with --json). */
function progressPrinter(out: Output): (event: Record<string, unknown>) => void {
  const started = Date.now();
  return (event) => {
    if (out.json || event.event !== 'PROGRESS') return;
    const { event: _e, phase, ...detail } = event;
    const extra = Object.keys(detail).length ? ` ${JSON.stringify(detail)}` : '';
    process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s] ${phase}${extra}\n`);
  };
}

function parseSeconds(text: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text.trim());
  if (!match) throw new CodedError('EINVAL', `not a duration: ${text} (e.g. 30s, 500ms, 2m)`);
  const value = Number(match[1]);
  return match[2] === 'ms' ? value / 1000 : match[2] === 'm' ? value * 60 : value;
}

/** Ids for a human: all of a few, the first of many (--json has them all). */
function idList(ids: string[], shown = 20): string {
  if (ids.length === 0) return 'none';
  if (ids.length <= shown) return ids.join(', ');
  return `${ids.length}: ${ids.slice(0, shown).join(', ')}, ... (--json lists all)`;
}

function timelineText(timeline: { phase: string; at: number; client?: string }[]): string {
  if (timeline.length === 0) return '';
  const t0 = timeline[0]!.at;
  return timeline
    .map((m) => `  ${`+${m.at - t0} ms`.padStart(10)}  ${m.phase}${m.client ? ` (${m.client})` : ''}`)
    .join('\n');
}

export const register: RegisterCommand = (program) => {
  // --socket is luoctl's own option (luoctl.ts): the doctor and report use it too.
  program
    .command('status')
    .description("luod's phase, clients, loaded kernel and last update")
    .action(
      commandAction(async (command, out) => {
        // Every page of it: luod sends a STATUS longer than a line in pages (status-page.ts).
        const reply = await wholeStatus((page) =>
          askFor({ cmd: 'STATUS', ...page }, { socket: socketOf(command) }),
        );
        out.result(reply, () => {
          const last = reply.last_update;
          return [
            `phase: ${reply.phase} (backend ${reply.backend})`,
            `clients: ${reply.clients}, subscribed: ${idList(reply.subscribers)}`,
            `loaded: ${reply.loaded ? JSON.stringify(reply.loaded) : 'nothing'}`,
            `pending claims: ${idList(reply.pending_claims)}`,
            last
              ? `last update ${last.update}: ${last.outcome}\n${timelineText(last.timeline)}`
              : 'no update yet',
          ].join('\n');
        });
        return ExitCode.ok;
      }),
    );

  program
    .command('clients')
    .description('connected clients and their subscriptions')
    .action(
      commandAction(async (command, out) => {
        // Every page of it (list-page.ts).
        const reply = await wholeList(
          'clients',
          (c: ClientsReply['clients'][number]) => (c.id === null ? null : `id:${c.id}`),
          (page) => askFor({ cmd: 'CLIENTS', ...page }, { socket: socketOf(command) }),
        );
        const clients = reply.clients;
        out.result(reply, () =>
          clients.length === 0
            ? 'no clients'
            : clients
                .map(
                  (c) =>
                    `${(c.id ?? '(not subscribed)').padEnd(24)} uid ${c.uid}  pid ${c.pid}  sessions ${c.sessions}`,
                )
                .join('\n'),
        );
        return ExitCode.ok;
      }),
    );

  program
    .command('sessions')
    .description('sessions luod holds (outgoing during an update, incoming until claimed)')
    .action(
      commandAction(async (command, out) => {
        const reply = await wholeList(
          'sessions',
          (s: SessionsReply['sessions'][number]) => s.name,
          (page) => askFor({ cmd: 'SESSIONS', ...page }, { socket: socketOf(command) }),
        );
        const sessions = reply.sessions;
        out.result(reply, () =>
          sessions.length === 0
            ? 'no sessions'
            : sessions.map((s) => `${s.name.padEnd(24)} ${s.direction.padEnd(9)} ${s.client}`).join('\n'),
        );
        return ExitCode.ok;
      }),
    );

  program
    .command('load')
    .description('load the next kernel (kexec_file_load; emulated: choose its version)')
    .argument('[kernel]', 'kernel image (bzImage or ELF); optional with the emulated kernel')
    .option('--initrd <file>', 'initramfs')
    .option('--cmdline <text>', 'kernel command line (liveupdate=on is added if missing)')
    .option('--reuse-cmdline', "use the running kernel's command line")
    .option('--emu-version <version>', 'the next emulated kernel version (6.19, 7.0, 7.1, 7.2, 7.3)')
    .option('--force', 'load even when the next kernel cannot read what this kernel writes (recorded)')
    .addHelpText(
      'after',
      '\nThe gate: luod compares the handover formats this kernel writes with those the next\nkernel reads (docs/kernel-info.md) and refuses a mismatch (EPROTO) with its consequence.',
    )
    .action(
      commandAction(async (command, out) => {
        const kernel = command.args[0];
        const opts = command.opts<{
          initrd?: string;
          cmdline?: string;
          reuseCmdline?: boolean;
          emuVersion?: string;
          force?: boolean;
        }>();
        if (opts.cmdline !== undefined && opts.reuseCmdline) {
          throw new CodedError('EINVAL', '--cmdline and --reuse-cmdline exclude each other');
        }
        const reply = await askFor(
          {
            cmd: 'LOAD',
            ...(typeof kernel === 'string' && { kernel: path.resolve(kernel) }),
            ...(opts.initrd && { initrd: path.resolve(opts.initrd) }),
            ...(opts.cmdline !== undefined && { cmdline: opts.cmdline }),
            ...(opts.reuseCmdline && { cmdline: readFileSync('/proc/cmdline', 'utf8').trim() }),
            ...(opts.emuVersion && { emu_version: opts.emuVersion }),
            ...(opts.force && { force: true }),
          },
          { socket: socketOf(command) },
        );
        out.result(reply, () => {
          const { gate, ...loaded } = reply.loaded;
          const verdict = gate
            ? `\ngate: ${gate.forced ? 'FORCED past a mismatch: ' : ''}${gate.sentence}`
            : '';
          return `loaded: ${JSON.stringify(loaded)}${verdict}`;
        });
        return ExitCode.ok;
      }),
    );

  program
    .command('update')
    .description('run a live update through luod: barrier, then kexec (or abort)')
    .option('--timeout <duration>', 'how long clients have to say READY', '30s')
    .option('--dry-run', 'say who would take part, change nothing')
    .action(
      commandAction(async (command, out) => {
        const opts = command.opts<{ timeout: string; dryRun?: boolean }>();
        const timeoutMs = Math.round(parseSeconds(opts.timeout) * 1000);
        const reply = await askFor(
          { cmd: 'UPDATE', timeout_ms: timeoutMs, dry_run: opts.dryRun === true },
          { socket: socketOf(command), onEvent: progressPrinter(out) },
        );
        const failed = reply.failed ?? [];
        out.result(reply, () =>
          [
            `update ${reply.update}: ${reply.outcome}${reply.reason ? ` (${reply.reason})` : ''}`,
            ...failed.map((f) => `  failed: ${f.id}: ${f.reason}`),
            timelineText(reply.timeline),
          ].join('\n'),
        );
        return reply.outcome === 'rebooted' || reply.outcome === 'dry-run' ? ExitCode.ok : ExitCode.failure;
      }),
    );

  program
    .command('abort')
    .description('abort the update in progress (every client resumes)')
    .option('--reason <text>', 'told to the clients')
    .action(
      commandAction(async (command, out) => {
        const { reason } = command.opts<{ reason?: string }>();
        const reply = await askFor(
          { cmd: 'ABORT', ...(reason && { reason }) },
          { socket: socketOf(command) },
        );
        out.result(reply, () => 'update aborted');
        return ExitCode.ok;
      }),
    );
};
