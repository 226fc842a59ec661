#!/usr/bin/env node
/**
 * luod, in the foreground: `luod [--socket PATH] [--emulate [--state DIR]]
 * [--group NAME|GID] [--claim-timeout SECONDS] [--records DIR] [--keep-records N]
 * [--metrics-port PORT] [--metrics-textfile FILE] [--timeline FILE]`.
 *
 * --timeline appends every phase mark (load, update-start, barrier-done,
 * kexec, luod-ready, claim, ...) to FILE as one JSON line the moment it
 * happens, written before luod moves on (the `kexec` line before the reboot
 * call): the real-kernel bench points it at /dev/console to time a live
 * update from outside the guest (docs/vm.md).
 *
 * Without --emulate luod drives the real /dev/liveupdate and refuses to
 * start where there is none: a host must never believe it preserves VMs
 * when it does not.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { Command, CommanderError } from 'commander';
import pino from 'pino';
import { defaultStateDir } from '../kernel/emu/paths.js';
import { DEVICE_PATH } from '../kernel/real/index.js';
import { socketPath } from '../protocol/messages.js';
import { Errno } from '../sys/errno.js';
import { SysError } from '../sys/error.js';
import { emulatedKernel, realKernel } from './kernel.js';
import { Luod, type PhaseEvent } from './luod.js';
import type { LuodMetrics } from './metrics.js';
import {
  DEFAULT_KEEP_RECORDS,
  DEFAULT_RECORDS_DIR,
  emulatedRecordsDir,
  RecordStore,
} from './record-store.js';
import { listen } from './server.js';

function version(): string {
  return String(JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version);
}

function groupId(group: string): number {
  if (/^\d+$/.test(group)) return Number(group);
  try {
    return Number(execFileSync('getent', ['group', group], { encoding: 'utf8' }).split(':')[2]);
  } catch {
    throw new SysError('luod', Errno.EINVAL, `unknown group ${group}`);
  }
}

/**
 * One synchronous write per mark (`{"luod_phase":...,"update":...,"at":...}`):
 * the line is out of luod before it acts on the next step, a reboot included.
 */
function timelineWriter(file: string): (mark: PhaseEvent) => void {
  let fd: number;
  try {
    fd = fs.openSync(file, 'a');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
    throw new SysError(
      'luod',
      Errno[code as keyof typeof Errno] ?? Errno.EIO,
      `cannot open --timeline ${file}: ${code}`,
    );
  }
  return ({ phase, update, client, at }) => {
    const line = { luod_phase: phase, ...(update && { update }), ...(client && { client }), at };
    fs.writeSync(fd, `${JSON.stringify(line)}\n`);
  };
}

const program = new Command('luod')
  .description('the live update agent: owns /dev/liveupdate and carries VMs across kexec')
  .version(version())
  .option('--socket <path>', 'listening socket (default $LUOD_SOCKET or /run/luod/liveupdate.sock)')
  .option('--emulate', "use luokit's emulated kernel instead of /dev/liveupdate")
  .option('--state <dir>', 'state directory of the emulated kernel (with --emulate)')
  .option('--group <group>', 'group allowed to connect to the socket')
  .option('--claim-timeout <seconds>', 'how long incoming sessions wait for their CLAIM', '60')
  .option(
    '--records <dir>',
    `where each update's record is written (default ${DEFAULT_RECORDS_DIR}; with --emulate, STATE/updates)`,
  )
  .option('--keep-records <n>', 'how many update records to keep', String(DEFAULT_KEEP_RECORDS))
  .option('--metrics-port <port>', 'serve Prometheus metrics on 127.0.0.1:PORT/metrics (0: any free port)')
  .option('--metrics-textfile <file>', "keep Prometheus metrics in FILE (node_exporter's textfile collector)")
  .option('--timeline <file>', 'append every phase mark to this file as a JSON line, as it happens')
  .exitOverride();

try {
  program.parse(process.argv);
  const opts = program.opts<{
    socket?: string;
    emulate?: boolean;
    state?: string;
    group?: string;
    claimTimeout: string;
    records?: string;
    keepRecords: string;
    metricsPort?: string;
    metricsTextfile?: string;
    timeline?: string;
  }>();
  if (opts.state && !opts.emulate)
    throw new SysError('luod', Errno.EINVAL, '--state applies only with --emulate');
  const claimTimeout = Number(opts.claimTimeout);
  if (!Number.isFinite(claimTimeout) || claimTimeout <= 0)
    throw new SysError('luod', Errno.EINVAL, '--claim-timeout must be a positive number of seconds');
  if (!opts.emulate && !fs.existsSync(DEVICE_PATH)) {
    throw new SysError(
      'luod',
      Errno.ENOENT,
      `${DEVICE_PATH} does not exist: this kernel cannot live update (see luoctl doctor); use --emulate to run against the emulated kernel`,
    );
  }
  const keepRecords = Number(opts.keepRecords);
  if (!Number.isInteger(keepRecords) || keepRecords < 1)
    throw new SysError('luod', Errno.EINVAL, '--keep-records must be a positive integer');
  const metricsPort = opts.metricsPort === undefined ? undefined : Number(opts.metricsPort);
  if (
    metricsPort !== undefined &&
    !(Number.isInteger(metricsPort) && metricsPort >= 0 && metricsPort < 65536)
  )
    throw new SysError('luod', Errno.EINVAL, '--metrics-port must be a port number (0 to 65535)');
  const log = pino({ base: { service: 'luod' }, level: process.env.LUOKIT_LOG_LEVEL ?? 'info' });
  const stateDir = opts.state ?? defaultStateDir();
  const kernel = opts.emulate ? emulatedKernel(stateDir) : realKernel();
  const records = new RecordStore(
    opts.records ?? (opts.emulate ? emulatedRecordsDir(stateDir) : DEFAULT_RECORDS_DIR),
    keepRecords,
  );
  // prom-client only when metrics are asked for: luod's start after a kexec is part of the
  // VMs' blackout, and a module not loaded is one not compiled (docs/vm.md).
  const metrics: LuodMetrics | undefined =
    metricsPort !== undefined || opts.metricsTextfile !== undefined
      ? new (await import('./metrics.js')).LuodMetrics()
      : undefined;
  const onPhase = opts.timeline ? timelineWriter(opts.timeline) : undefined;
  const luod = new Luod({
    kernel,
    log,
    claimTimeoutMs: claimTimeout * 1000,
    version: version(),
    records,
    ...(metrics && { metrics }),
    ...(onPhase && { onPhase }),
  });
  if (metrics && metricsPort !== undefined) {
    const { port } = await metrics.serve(metricsPort);
    log.info({ metrics: `http://127.0.0.1:${port}/metrics`, port }, 'metrics served');
  }
  const stopTextfile =
    metrics && opts.metricsTextfile
      ? metrics.startTextfile(opts.metricsTextfile, {
          onError: (err) =>
            log.error({ err, file: opts.metricsTextfile }, 'the metrics textfile could not be written'),
        })
      : () => {};
  luod.recover();
  const path = socketPath(opts.socket);
  const server = listen(luod, { socketPath: path, ...(opts.group ? { gid: groupId(opts.group) } : {}) });
  (luod.updateId ? log.child({ update: luod.updateId }) : log).info(
    { socket: path, backend: kernel.backend, records: records.dir },
    'luod ready',
  );
  const stop = (signal: string) => {
    log.info({ signal }, 'luod stopping');
    stopTextfile();
    luod.close();
    server.close();
    fs.rmSync(path, { force: true });
    process.exit(0);
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
} catch (err) {
  if (err instanceof CommanderError) {
    process.exitCode = err.exitCode === 0 ? 0 : 2;
  } else {
    const code = (err as { code?: string }).code ?? 'EIO';
    process.stderr.write(`luod: ${code}: ${(err as Error).message}\n`);
    if (process.env.LUOKIT_DEBUG === '1') process.stderr.write(`${(err as Error).stack}\n`);
    process.exitCode = 1;
  }
}
