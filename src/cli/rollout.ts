/**
 * `luoctl rollout start|control|status|pause|resume|abort`: a fleet's live update, kept in
 * etcd (docs/fleet.md). `start` writes the rollout and then drives it as a controller
 * (`--detach`: write it only); `control` drives the rollout etcd holds, which is how a
 * killed controller is replaced, or a standby one run; only the elected controller acts.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import * as path from 'node:path';
import { Controller } from '../fleet/controller.js';
import { etcdError } from '../fleet/etcd.js';
import {
  createRollout,
  type HostProgress,
  type RolloutSpec,
  type RolloutView,
  readRollout,
  setRolloutState,
} from '../fleet/rollout.js';
import { fleetReportHtml } from '../report/fleet-html.js';
import { writeFileAtomic } from '../sys/atomic-file.js';
import { CodedError } from '../sys/error.js';
import type { RegisterCommand } from './environment.js';
import {
  type FleetOptions,
  fleetLog,
  openFleet,
  positiveInt,
  stopSignal,
  withFleetOptions,
} from './fleet-connection.js';
import { commandAction, ExitCode, type Output } from './output.js';

/** Comma-separated ids or globs (`*`, `?`) over the registered hosts. */
export function selectHosts(selector: string, registered: readonly string[]): string[] {
  const sorted = [...registered].sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  const chosen: string[] = [];
  for (const term of selector
    .split(',')
    .map((t) => t.trim())
    .filter((t) => t !== '')) {
    if (!/[*?]/.test(term)) {
      if (!registered.includes(term)) throw new CodedError('ENOENT', `host ${term} has no running agent`);
      if (!chosen.includes(term)) chosen.push(term);
      continue;
    }
    const re = new RegExp(
      `^${term
        .replace(/[.+^${}()|[\]\\]/g, '\\$&')
        .replaceAll('*', '.*')
        .replaceAll('?', '.')}$`,
    );
    for (const id of sorted) if (re.test(id) && !chosen.includes(id)) chosen.push(id);
  }
  if (chosen.length === 0)
    throw new CodedError('ENOENT', `no registered host matches ${JSON.stringify(selector)}`);
  return chosen;
}

/** The rollout as `status --json` shows it. */
export function statusOf(view: RolloutView) {
  const spec = view.spec;
  const hosts = (spec?.hosts ?? []).map((id) => {
    const p: HostProgress = view.hosts.get(id)?.progress ?? { id, state: 'pending' };
    const duration =
      p.started_at !== undefined && p.finished_at !== undefined ? p.finished_at - p.started_at : null;
    return {
      id,
      state: p.state,
      ...(p.reason !== undefined && { reason: p.reason }),
      from: p.from ?? null,
      to: p.to ?? null,
      assigned_at: p.assigned_at ?? null,
      started_at: p.started_at ?? null,
      finished_at: p.finished_at ?? null,
      duration_ms: duration,
      blackout_ms: p.record?.blackout_ms ?? null,
      update: p.record?.update ?? null,
      record: p.record ?? null,
    };
  });
  const count = (s: string) => hosts.filter((h) => h.state === s).length;
  return {
    rollout: spec?.id ?? null,
    state: view.state,
    kernel: spec?.kernel ?? null,
    max_parallel: spec?.max_parallel ?? null,
    max_failures: spec?.max_failures ?? null,
    failures: view.failures,
    counts: {
      pending: count('pending'),
      assigned: count('assigned'),
      updating: count('updating'),
      done: count('done'),
      skipped: count('skipped'),
      failed: count('failed'),
    },
    failed: hosts
      .filter((h) => h.state === 'failed')
      .map((h) => ({ id: h.id, reason: h.reason ?? 'failed' })),
    hosts,
  };
}
export type RolloutStatus = ReturnType<typeof statusOf>;

function statusText(s: RolloutStatus): string {
  if (!s.rollout) return 'no rollout';
  const c = s.counts;
  const lines = [
    `rollout ${s.rollout}: ${s.state} (kernel ${s.kernel}, max ${s.max_parallel} at once, stops at ${s.max_failures} failures)`,
    `hosts: ${c.done} done, ${c.skipped} skipped, ${c.failed} failed, ${c.updating} updating, ${c.assigned} assigned, ${c.pending} pending`,
  ];
  for (const h of s.hosts) {
    const figures = [
      h.duration_ms !== null ? `${h.duration_ms} ms` : '',
      h.blackout_ms !== null ? `blackout ${h.blackout_ms} ms` : '',
      h.from && h.to ? `${h.from} -> ${h.to}` : '',
    ].filter((x) => x !== '');
    lines.push(
      `  ${h.id.padEnd(16)} ${h.state.padEnd(9)} ${figures.join('  ')}${h.reason ? `  ${h.reason}` : ''}`,
    );
  }
  return lines.join('\n');
}

async function drive(options: FleetOptions, out: Output): Promise<ExitCode> {
  const { etcd, keys } = openFleet(options);
  const { signal, done } = stopSignal();
  try {
    const name = `${hostname()}-${process.pid}`;
    const controller = new Controller({ etcd, keys, name, log: fleetLog('luoctl-rollout') });
    const outcome = await controller.run(signal);
    const view = await readRollout(etcd, keys);
    const status = statusOf(view);
    out.result({ ...status, interrupted: outcome === null }, () => statusText(status));
    return outcome?.state === 'done' ? ExitCode.ok : ExitCode.failure;
  } catch (err) {
    throw etcdError(err, 'rollout');
  } finally {
    done();
    etcd.close();
  }
}

export const register: RegisterCommand = (program) => {
  const rollout = program
    .command('rollout')
    .description('live update a fleet of hosts, kept in etcd (docs/fleet.md)');

  withFleetOptions(rollout.command('start'))
    .description('start a rollout and drive it as its controller')
    .requiredOption('--kernel <image>', 'emu:VERSION, or the path of the kernel image on every host')
    .option('--initrd <file>', 'initramfs, on every host')
    .requiredOption('--max-parallel <n>', 'hosts updating at once, at most')
    .requiredOption('--max-failures <n>', 'the rollout stops when this many hosts have failed')
    .option('--hosts <selector>', 'registered hosts: ids or globs, comma-separated', '*')
    .option(
      '--qualified <pairs>',
      'qualified FROM:TO release pairs, comma-separated; any other pair is refused',
    )
    .option('--detach', 'write the rollout and return (run `rollout control` to drive it)')
    .action(
      commandAction(async (command, out) => {
        const o = command.opts<
          FleetOptions & {
            kernel: string;
            initrd?: string;
            maxParallel: string;
            maxFailures: string;
            hosts: string;
            qualified?: string;
            detach?: boolean;
          }
        >();
        const { etcd, keys } = openFleet(o);
        let spec: RolloutSpec;
        try {
          const registered = (await etcd.getAll().prefix(keys.hosts()).keys()).map((k) =>
            keys.idOf(keys.hosts(), k),
          );
          spec = {
            id: `r-${new Date()
              .toISOString()
              .replace(/[-:]|\.\d+Z$/g, '')
              .replace('T', '-')}-${randomBytes(2).toString('hex')}`,
            kernel: o.kernel,
            ...(o.initrd !== undefined && { initrd: o.initrd }),
            max_parallel: positiveInt('--max-parallel', o.maxParallel),
            max_failures: positiveInt('--max-failures', o.maxFailures),
            hosts: selectHosts(o.hosts, registered),
            ...(o.qualified !== undefined && { qualified: parsePairs(o.qualified) }),
            created: new Date().toISOString(),
          };
          await createRollout(etcd, keys, spec);
        } catch (err) {
          throw etcdError(err, 'rollout start');
        } finally {
          etcd.close();
        }
        if (o.detach) {
          out.result(
            { rollout: spec.id, state: 'running', hosts: spec.hosts },
            () => `rollout ${spec.id} started over ${spec.hosts.length} hosts`,
          );
          return ExitCode.ok;
        }
        return drive(o, out);
      }),
    );

  withFleetOptions(rollout.command('control'))
    .description('drive the rollout etcd holds (after a controller died, or as a standby)')
    .action(commandAction(async (command, out) => drive(command.opts<FleetOptions>(), out)));

  withFleetOptions(rollout.command('status'))
    .description('the rollout: its state and, per host, state, durations and blackout')
    .option('--html <file>', 'also write the timeline page: one lane per host, blackouts marked')
    .action(
      commandAction(async (command, out) => {
        const o = command.opts<FleetOptions & { html?: string }>();
        const { etcd, keys } = openFleet(o);
        try {
          const status = statusOf(await readRollout(etcd, keys));
          const html = o.html ? path.resolve(o.html) : undefined;
          if (html) writeFileAtomic(html, fleetReportHtml(status));
          out.result(
            { ...status, ...(html && { html }) },
            () => `${statusText(status)}${html ? `\ntimeline: ${html}` : ''}`,
          );
          return ExitCode.ok;
        } catch (err) {
          throw etcdError(err, 'rollout status');
        } finally {
          etcd.close();
        }
      }),
    );

  for (const action of ['pause', 'resume', 'abort'] as const) {
    withFleetOptions(rollout.command(action))
      .description(
        {
          pause: 'start no more hosts (those updating finish)',
          resume: 'start hosts again',
          abort: 'end the rollout: no more hosts start (those updating finish)',
        }[action],
      )
      .action(
        commandAction(async (command, out) => {
          const { etcd, keys } = openFleet(command.opts<FleetOptions>());
          try {
            const state = await setRolloutState(etcd, keys, action);
            out.result({ state }, () => `rollout ${state}`);
            return ExitCode.ok;
          } catch (err) {
            throw etcdError(err, `rollout ${action}`);
          } finally {
            etcd.close();
          }
        }),
      );
  }
};

export function parsePairs(text: string): [string, string][] {
  return text.split(',').map((pair) => {
    const [from, to, ...rest] = pair.trim().split(':');
    if (!from || !to || rest.length > 0)
      throw new CodedError('EINVAL', `--qualified takes FROM:TO pairs, not ${pair}`);
    return [from, to];
  });
}
