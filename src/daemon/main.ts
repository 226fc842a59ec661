#!/usr/bin/env node
/**
 * luod, in the foreground: `luod [--socket PATH] [--emulate [--state DIR]]
 * [--group NAME|GID] [--claim-timeout SECONDS] [--records DIR] [--keep-records N]
 * [--metrics-port PORT] [--metrics-textfile FILE] [--timeline FILE]
 * [--kexec-mode auto|standalone|systemd] [--systemctl PATH] [--state-file PATH]
 * [--ids-file PATH] [--line-timeout SECONDS] [--max-clients N] [--require-qualified DIR]`.
 *
 * --require-qualified DIR: the gate also refuses (EPERM) a next kernel whose pair with
 * this kernel has no passing qualification record in DIR (`luoctl qualify`; docs/qualify.md).
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
 *
 * Start-up order matters for crash safety (docs/operations.md): the fds
 * systemd passes are taken first, the holder's fds are sorted (keeper.ts)
 * before the device is probed, and READY=1 goes out only once luod listens.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { Command, CommanderError } from 'commander';
import pino from 'pino';
import { defaultStateDir } from '../kernel/emu/index.js';
import { DEVICE_PATH } from '../kernel/real/index.js';
import { DEFAULT_MAX_CLIENTS, socketPath } from '../protocol/messages.js';
import {
  DEFAULT_KEEP_RECORDS,
  DEFAULT_RECORDS_DIR,
  emulatedRecordsDir,
  RecordStore,
} from '../record/store.js';
import { Errno } from '../sys/errno.js';
import { errorCode, SysError } from '../sys/error.js';
import { packageVersion } from '../sys/package-version.js';
import { capacity } from './capacity.js';
import { type FdHolder, SystemdFdStore } from './fd-holder.js';
import { HolderProcess, holderSocketPath } from './holder-process.js';
import { IdOwners } from './id-owners.js';
import { SessionKeeper } from './keeper.js';
import { emulatedKernel, realKernel } from './kernel.js';
import { chooseKexecMode, KEXEC_MODES, systemdKexec } from './kexec-mode.js';
import { Luod, type PhaseEvent, RESERVED_SLOTS } from './luod.js';
import type { LuodMetrics } from './metrics.js';
import { SdNotify, takeListenFds } from './sd-notify.js';
import { LINE_TIMEOUT_MS, listen, prepareSocketDir } from './server.js';
import { ServiceNotifier } from './service-notify.js';

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
    const code = errorCode(err);
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

/**
 * The last resort for a bug. A rejection nobody handled is logged and luod
 * keeps serving: every command and update handles its own failures, so one
 * that escapes is a missed log line, not corrupt state. An exception thrown
 * out of the event loop may have left luod half-way through a change, so
 * luod exits (EX_SOFTWARE): the fd holder keeps every session, and the next
 * luod (systemd's Restart=, or the operator) takes them back.
 */
function lastResort(log: pino.Logger): void {
  process.on('unhandledRejection', (reason) => {
    log.error({ err: reason }, 'a rejection was not handled (a bug); luod keeps serving');
  });
  process.on('uncaughtException', (err) => {
    log.fatal({ err }, 'an exception escaped (a bug); luod exits, the fd holder keeps the sessions');
    process.exit(70);
  });
}

const program = new Command('luod')
  .description('the live update agent: owns /dev/liveupdate and carries VMs across kexec')
  .version(packageVersion())
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
  .option(
    '--kexec-mode <mode>',
    'auto (systemd when run by systemd 261+, else standalone), standalone (luod reboots), systemd (systemctl kexec)',
    'auto',
  )
  .option('--systemctl <path>', 'the systemctl command of the systemd kexec mode', 'systemctl')
  .option('--state-file <path>', "luod's state file (default: the socket path + .state.json)")
  .option(
    '--line-timeout <seconds>',
    'close a connection whose line stays unfinished this long',
    String(LINE_TIMEOUT_MS / 1000),
  )
  .option(
    '--require-qualified <dir>',
    'refuse to load a kernel whose (running, next) pair has no passing qualification record in DIR (luoctl qualify)',
  )
  .option('--ids-file <path>', 'which uid owns which client id (default: the socket path + .ids.json)')
  .option(
    '--max-clients <n>',
    'connections served at once: VMMs and operators (sizes the listen queue; needs open files, see luoctl doctor)',
    String(DEFAULT_MAX_CLIENTS),
  )
  .exitOverride();

/** fds systemd passed (the fd store): taken before anything else can open an fd at 3+. */
const listenFds = takeListenFds();

/** Everything after the fds are taken, in a function: the bundle (scripts/bundle.mjs) is a script, with no top-level await. */
async function main(): Promise<void> {
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
      kexecMode: string;
      systemctl: string;
      stateFile?: string;
      idsFile?: string;
      lineTimeout: string;
      maxClients: string;
      requireQualified?: string;
    }>();
    const lineTimeout = Number(opts.lineTimeout);
    if (!Number.isFinite(lineTimeout) || lineTimeout <= 0)
      throw new SysError('luod', Errno.EINVAL, '--line-timeout must be a positive number of seconds');
    if (!(KEXEC_MODES as readonly string[]).includes(opts.kexecMode))
      throw new SysError('luod', Errno.EINVAL, `--kexec-mode must be one of ${KEXEC_MODES.join(', ')}`);
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
    // A policy on a directory that is not there would refuse every kernel: say so at start.
    if (
      opts.requireQualified !== undefined &&
      !fs.statSync(opts.requireQualified, { throwIfNoEntry: false })?.isDirectory()
    )
      throw new SysError(
        'luod',
        Errno.ENOENT,
        `--require-qualified ${opts.requireQualified}: no such directory (luoctl qualify --dir writes the records there)`,
      );
    const maxClients = Number(opts.maxClients);
    if (!Number.isInteger(maxClients) || maxClients <= RESERVED_SLOTS)
      throw new SysError('luod', Errno.EINVAL, `--max-clients must be an integer above ${RESERVED_SLOTS}`);
    const keepRecords = Number(opts.keepRecords);
    if (!Number.isInteger(keepRecords) || keepRecords < 1)
      throw new SysError('luod', Errno.EINVAL, '--keep-records must be a positive integer');
    const metricsPort = opts.metricsPort === undefined ? undefined : Number(opts.metricsPort);
    if (
      metricsPort !== undefined &&
      !(Number.isInteger(metricsPort) && metricsPort >= 0 && metricsPort < 65536)
    )
      throw new SysError('luod', Errno.EINVAL, '--metrics-port must be a port number (0 to 65535)');
    // fd 1 as pino's default (asynchronous, flushed at exit), without making process.stdout (and its
    // stream modules) at start (docs/performance.md).
    const log = pino(
      { base: { service: 'luod' }, level: process.env.LUOKIT_LOG_LEVEL ?? 'info' },
      pino.destination({ dest: 1, sync: false }),
    );
    lastResort(log);
    const sized = capacity(maxClients);
    if (sized.open_files !== null && sized.open_files < sized.open_files_needed) {
      log.warn(
        { ...sized },
        `--max-clients ${maxClients} needs ${sized.open_files_needed} open files, luod may open ${sized.open_files}: raise LimitNOFILE= (or ulimit -n), or lower --max-clients`,
      );
    }
    const stateDir = opts.state ?? defaultStateDir();
    const notify = SdNotify.fromEnv();
    const mode = chooseKexecMode(opts.kexecMode as (typeof KEXEC_MODES)[number], {
      underSystemd: notify !== null,
      systemctlVersion: () => {
        const result = spawnSync(opts.systemctl, ['--version'], { encoding: 'utf8', timeout: 5000 });
        return result.error || result.status !== 0 ? undefined : result.stdout;
      },
    });
    const baseKernel = opts.emulate ? emulatedKernel(stateDir) : realKernel();
    const kernel = mode.mode === 'systemd' ? systemdKexec(baseKernel, opts.systemctl) : baseKernel;
    const path = socketPath(opts.socket);
    // Before the holder process binds next to the socket.
    prepareSocketDir(path);
    let holder: FdHolder;
    if (notify) {
      holder = new SystemdFdStore(notify, listenFds);
    } else {
      for (const { name, fd } of listenFds) {
        log.warn({ name }, 'an fd was passed with LISTEN_FDS without NOTIFY_SOCKET; closing it');
        fd.close();
      }
      holder = new HolderProcess(holderSocketPath(path), log);
    }
    const keeper = new SessionKeeper({
      holder,
      stateFile: opts.stateFile ?? `${path}.state.json`,
      bootId: () => kernel.bootId?.() ?? Promise.resolve('unknown'),
      log,
    });
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
      version: packageVersion(),
      records,
      owners: new IdOwners(opts.idsFile ?? `${path}.ids.json`, log),
      maxClients,
      ...(opts.requireQualified !== undefined && { requireQualified: opts.requireQualified }),
      ...(metrics && { metrics }),
      ...(onPhase && { onPhase }),
      keeper,
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
    const recovered = await keeper.start();
    luod.adoptRecovered(recovered);
    // The incoming sessions are back in luod; the holder takes its copies while luod listens.
    if (!recovered.incoming) await luod.restore();
    const server = listen(luod, {
      socketPath: path,
      lineTimeoutMs: lineTimeout * 1000,
      backlog: sized.listen_backlog,
      ...(opts.group ? { gid: groupId(opts.group) } : {}),
    });
    holder.warm?.(); // after listen: a holder process started now is not in luod's start-up
    const service = notify ? new ServiceNotifier(notify, luod, log) : null;
    service?.ready();
    (luod.updateId ? log.child({ update: luod.updateId }) : log).info(
      {
        socket: path,
        backend: kernel.backend,
        records: records.dir,
        kexecMode: mode.mode,
        why: mode.why,
        holder: holder.kind,
      },
      'luod ready',
    );
    const stop = (signal: string) => {
      log.info({ signal }, 'luod stopping');
      service?.stopping(`stopping (${signal}); held sessions stay with the ${holder.kind}`);
      stopTextfile();
      luod.close();
      holder.close();
      server.close();
      fs.rmSync(path, { force: true });
      // An update record being written is finished first (a slow disk gets 10 s).
      const written = luod.recordsWritten();
      const timeout = new Promise((resolve) => setTimeout(resolve, 10_000).unref());
      void Promise.race([written, timeout]).finally(() => process.exit(0));
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode === 0 ? 0 : 2;
    } else {
      process.stderr.write(`luod: ${errorCode(err)}: ${(err as Error).message}\n`);
      if (process.env.LUOKIT_DEBUG === '1') process.stderr.write(`${(err as Error).stack}\n`);
      process.exitCode = 1;
    }
  }
}

void main();
