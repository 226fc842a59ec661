/**
 * `luoctl fleet agent` and `luoctl fleet fleetlock-server`: the long-running fleet pieces.
 *
 * The agent is a companion of luod rather than `luod --fleet` (docs/fleet.md): luod stays
 * free of etcd, gRPC and the network, the agent is an admin client of luod's socket like
 * luoctl itself, and each can be restarted without the other.
 */
import type { Command } from 'commander';
import { Agent } from '../fleet/agent.js';
import { etcdError } from '../fleet/etcd.js';
import { FleetLockClient } from '../fleet/fleetlock-client.js';
import { FleetLockServer } from '../fleet/fleetlock-server.js';
import { updateWithFleetLock } from '../fleet/fleetlock-update.js';
import { checkGroup } from '../fleet/keys.js';
import { socketPath } from '../protocol/messages.js';
import { CodedError } from '../sys/error.js';
import type { RegisterCommand } from './environment.js';
import {
  type FleetOptions,
  fleetLog,
  openFleet,
  positiveInt,
  positiveNumber,
  stopSignal,
  withFleetOptions,
} from './fleet-connection.js';
import { commandAction, ExitCode } from './output.js';
import { parsePairs } from './rollout.js';

interface UpdateTimeoutOptions {
  readyTimeout: string;
  settleTimeout: string;
}

/** The two timeouts of a host's update (fleet/host-update.ts), the same for the agent and a FleetLock update. */
function withUpdateTimeouts(command: Command): Command {
  return command
    .option('--ready-timeout <seconds>', 'how long VMs have to say READY', '30')
    .option('--settle-timeout <seconds>', 'how long VMs have to come back after the reboot', '120');
}

function updateTimeouts(o: UpdateTimeoutOptions): { readyTimeoutMs: number; settleTimeoutMs: number } {
  return {
    readyTimeoutMs: positiveInt('--ready-timeout', o.readyTimeout) * 1000,
    settleTimeoutMs: positiveInt('--settle-timeout', o.settleTimeout) * 1000,
  };
}

export const register: RegisterCommand = (program) => {
  const fleet = program
    .command('fleet')
    .description('per-host fleet agent and FleetLock server (docs/fleet.md)');

  withUpdateTimeouts(withFleetOptions(fleet.command('agent')))
    .description(
      "take part in rollouts: update this host's luod when the controller says (runs until SIGTERM)",
    )
    .requiredOption('--id <host>', "this host's id in the fleet")
    .option('--ttl <seconds>', 'lease TTL: a dead agent gives its slot back after about this long', '10')
    .action(
      commandAction(async (command, out) => {
        const o = command.opts<FleetOptions & UpdateTimeoutOptions & { id: string; ttl: string }>();
        const socket = socketPath(command.optsWithGlobals<{ socket?: string }>().socket);
        const { etcd, keys } = openFleet(o);
        const log = fleetLog('luoctl-fleet-agent').child({ host: o.id });
        const agent = new Agent({
          etcd,
          keys,
          id: o.id,
          log,
          socket,
          ttlSeconds: positiveInt('--ttl', o.ttl),
          ...updateTimeouts(o),
        });
        const { signal, done } = stopSignal();
        try {
          await agent.run(signal);
          await agent.close();
        } catch (err) {
          throw etcdError(err, 'fleet agent');
        } finally {
          done();
          etcd.close();
        }
        out.result({ stopped: true }, () => 'agent stopped');
        return ExitCode.ok;
      }),
    );

  withUpdateTimeouts(fleet.command('update'))
    .description("update this host's luod under a FleetLock server (airlock, Kubernetes FleetLock, luokit's)")
    .requiredOption('--fleetlock <url>', "the FleetLock server's base URL")
    .requiredOption('--id <host>', "this host's FleetLock client id")
    .option('--group <group>', 'FleetLock reboot group', 'default')
    .requiredOption('--kernel <image>', 'emu:VERSION, or the path of the kernel image')
    .option('--initrd <file>', 'initramfs')
    .option(
      '--qualified <pairs>',
      'qualified FROM:TO release pairs, comma-separated; any other pair is refused',
    )
    .option('--lock-timeout <seconds>', 'give up waiting for a slot after this long')
    .option('--retry <seconds>', 'pause between two pre-reboot attempts', '1')
    .action(
      commandAction(async (command, out) => {
        const o = command.opts<
          {
            fleetlock: string;
            id: string;
            group: string;
            kernel: string;
            initrd?: string;
            qualified?: string;
            lockTimeout?: string;
            retry: string;
          } & UpdateTimeoutOptions
        >();
        const socket = socketPath(command.optsWithGlobals<{ socket?: string }>().socket);
        const { signal, done } = stopSignal();
        try {
          const result = await updateWithFleetLock({
            fleetlock: new FleetLockClient(o.fleetlock, o.id, o.group),
            target: { kernel: o.kernel, ...(o.initrd !== undefined && { initrd: o.initrd }) },
            ...(o.qualified !== undefined && { qualified: parsePairs(o.qualified) }),
            socket,
            log: fleetLog('luoctl-fleet-update').child({ host: o.id }),
            ...(o.lockTimeout !== undefined && {
              lockTimeoutMs: positiveInt('--lock-timeout', o.lockTimeout) * 1000,
            }),
            retryMs: positiveNumber('--retry', o.retry) * 1000,
            ...updateTimeouts(o),
            signal,
          });
          out.result(
            result,
            () =>
              `${o.id}: ${result.state}${result.reason ? ` (${result.reason})` : ''}${result.holds_slot ? '; the FleetLock slot stays held' : ''}${result.record?.blackout_ms != null ? `; blackout ${result.record.blackout_ms} ms` : ''}`,
          );
          return result.state === 'failed' ? ExitCode.failure : ExitCode.ok;
        } finally {
          done();
        }
      }),
    );

  withFleetOptions(fleet.command('fleetlock-server'))
    .description('serve FleetLock (Zincati, airlock clients) on the etcd semaphore (runs until SIGTERM)')
    .option('--listen <host:port>', 'address to listen on', '127.0.0.1:3333')
    .option('--slots <n>', 'slots of any group not given with --group')
    .option('--group <name=slots...>', 'slots of one group (repeatable)')
    .action(
      commandAction(async (command, out) => {
        const o = command.opts<FleetOptions & { listen: string; slots?: string; group?: string[] }>();
        const groups: Record<string, number> = {};
        for (const g of o.group ?? []) {
          const [name, n] = g.split('=');
          if (!name || n === undefined) throw new CodedError('EINVAL', `--group takes NAME=SLOTS, not ${g}`);
          groups[checkGroup(name)] = positiveInt('--group', n);
        }
        const defaultSlots = o.slots !== undefined ? positiveInt('--slots', o.slots) : undefined;
        if (defaultSlots === undefined && Object.keys(groups).length === 0)
          throw new CodedError('EINVAL', 'no slots: give --slots N or --group NAME=N');
        const match = /^(.*):(\d+)$/.exec(o.listen);
        if (!match) throw new CodedError('EINVAL', `--listen takes HOST:PORT, not ${o.listen}`);
        const { etcd, keys } = openFleet(o);
        const server = new FleetLockServer({
          etcd,
          keys,
          groups,
          ...(defaultSlots !== undefined && { defaultSlots }),
          log: fleetLog('luoctl-fleetlock'),
        });
        const { signal, done } = stopSignal();
        try {
          const address = await server.listen(Number(match[2]), match[1]!.replace(/^\[|\]$/g, ''));
          // One line on stdout once it serves, so a supervisor (or a test) knows the port.
          out.result(
            { listening: `${address.address}:${address.port}` },
            () => `FleetLock server on ${address.address}:${address.port}`,
          );
          await new Promise<void>((resolve) =>
            signal.addEventListener('abort', () => resolve(), { once: true }),
          );
        } finally {
          done();
          await server.close();
          etcd.close();
        }
        return ExitCode.ok;
      }),
    );
};
