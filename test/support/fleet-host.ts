/**
 * An emulated fleet host for the fleet tests: luod --emulate with its own emulated kernel
 * (state directory) and socket, its example VMMs, and its fleet agent (`luoctl fleet agent`),
 * each a real process as on a host, all under one temporary directory the reaper knows.
 * kill() is a host dying (SIGKILL to every process, the emulator too); close() cleans up.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { LuoClient } from '../../src/client/index.js';
import { statePaths, stopEmulator } from '../../src/kernel/emu/index.js';
import { ROOT } from './luod.js';
import { processesUsing, reapOnExit } from './reaper.js';

export interface FleetHostOptions {
  readonly id: string;
  readonly etcd: string;
  readonly prefix: string;
  readonly vms?: number;
  /** Each VMM's `--misbehave` (fail: the host's update aborts). */
  readonly misbehave?: 'none' | 'fail';
  /** Start the agent process (default true). */
  readonly agent?: boolean;
  readonly ttlSeconds?: number;
}

export interface FleetHost {
  readonly id: string;
  readonly dir: string;
  readonly socket: string;
  readonly state: string;
  /** The agent's output (pino JSON lines on stderr). */
  agentLog(): string;
  startAgent(): void;
  /** The agent killed (SIGKILL), as one that crashes mid-update; resolves once it is gone. */
  killAgent(): Promise<void>;
  /**
   * Write into every page of each VM's guest RAM behind its VMM's back (through
   * /proc/PID/fd): the VMM's checksums no longer match, so after the reboot the VM fails
   * its verification and does not resume.
   */
  corruptRam(): void;
  /** A host that dies: every process SIGKILLed, nothing given back. */
  kill(): Promise<void>;
  close(): Promise<void>;
}

export async function startFleetHost(options: FleetHostOptions): Promise<FleetHost> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `luokit-fleet-${options.id}-`));
  reapOnExit(dir);
  const socket = path.join(dir, 'luod.sock');
  const state = path.join(dir, 'emu');
  const children: ChildProcess[] = [];
  const log = fs.openSync(path.join(dir, 'processes.log'), 'a');
  const luod = spawn(
    process.execPath,
    [
      path.join(ROOT, 'dist/daemon/luod-bin.cjs'),
      '--emulate',
      '--state',
      state,
      '--socket',
      socket,
      '--claim-timeout',
      '20',
    ],
    { stdio: ['ignore', log, log], env: { ...process.env, LUOKIT_LOG_LEVEL: 'warn' } },
  );
  children.push(luod);
  (await LuoClient.connectWithRetry(socket, { timeoutMs: 60_000 })).close();
  const vmms: ChildProcess[] = [];
  for (let i = 1; i <= (options.vms ?? 1); i++) {
    vmms.push(
      spawn(
        process.execPath,
        [
          path.join(ROOT, 'dist/example-vmm/main.js'),
          '--id',
          `${options.id}-vm${i}`,
          '--mem',
          '1M',
          '--socket',
          socket,
          '--updates',
          '2',
          '--tick-ms',
          '50',
          '--quiet',
          ...(options.misbehave && options.misbehave !== 'none' ? ['--misbehave', options.misbehave] : []),
        ],
        { stdio: ['ignore', log, log] },
      ),
    );
  }
  children.push(...vmms);
  // Every VMM subscribed before the host joins the fleet.
  const admin = await LuoClient.connectWithRetry(socket, { timeoutMs: 30_000 });
  try {
    const deadline = Date.now() + 60_000;
    while ((await admin.status()).subscribers.length < (options.vms ?? 1)) {
      if (Date.now() > deadline) throw new Error(`host ${options.id}: VMMs did not subscribe`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    admin.close();
  }
  let agentOutput = '';
  let agent: ChildProcess | undefined;
  const startAgent = () => {
    agent = spawn(
      process.execPath,
      [
        path.join(ROOT, 'dist/cli/luoctl-bin.cjs'),
        '--socket',
        socket,
        'fleet',
        'agent',
        '--etcd',
        options.etcd,
        '--prefix',
        options.prefix,
        '--id',
        options.id,
        '--ttl',
        String(options.ttlSeconds ?? 5),
        '--settle-timeout',
        '10',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    agent.stderr!.setEncoding('utf8').on('data', (d: string) => {
      agentOutput += d;
    });
    children.push(agent);
  };
  const killAgent = async () => {
    if (!agent || agent.exitCode !== null || agent.signalCode !== null) return;
    const gone = new Promise((r) => agent!.once('exit', r));
    agent.kill('SIGKILL');
    await gone;
  };
  if (options.agent !== false) startAgent();
  const kill = async () => {
    for (const c of children) c.kill('SIGKILL');
    for (const { pid } of processesUsing([dir])) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  };
  return {
    id: options.id,
    dir,
    socket,
    state,
    agentLog: () => agentOutput,
    startAgent,
    killAgent,
    corruptRam: () => {
      for (const vmm of vmms) {
        for (const fd of fs.readdirSync(`/proc/${vmm.pid}/fd`)) {
          let link: string;
          try {
            link = fs.readlinkSync(`/proc/${vmm.pid}/fd/${fd}`);
          } catch {
            continue;
          }
          if (!link.startsWith('/memfd:guest-ram:')) continue;
          const ram = fs.openSync(`/proc/${vmm.pid}/fd/${fd}`, 'r+');
          try {
            const size = fs.fstatSync(ram).size;
            for (let at = 2048; at < size; at += 4096) fs.writeSync(ram, Buffer.from('corrupt'), 0, 7, at);
          } finally {
            fs.closeSync(ram);
          }
        }
      }
    },
    kill,
    close: async () => {
      for (const c of children) c.kill('SIGTERM');
      await stopEmulator(statePaths(state)).catch(() => {});
      await new Promise((r) => setTimeout(r, 200));
      await kill();
      fs.closeSync(log);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
