/**
 * Finding, starting and talking to an emulated kernel.
 *
 * `openEmulatedDevice()` is synchronous like open(2): it starts the emulator
 * for the state directory if none is running (one per directory), connects
 * to its device socket and waits for the handshake (EBUSY when another fd
 * holds the device). Management (status, kexec, stop) goes over the control
 * socket, asynchronously.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Errno } from '../../sys/errno.js';
import { errorCode, SysError } from '../../sys/error.js';
import type { OwnedFd } from '../../sys/fd.js';
import { waitReadable } from '../../sys/mm.js';
import { fdTarget } from '../../sys/proc.js';
import { connect, receiveWithFds, setTimeouts, socket, socketType } from '../../sys/socket.js';
import { UnixSocket } from '../../sys/unix-socket.js';
import { luoError } from '../../uapi/errors.js';
import { LuoDevice, LuoSession } from '../luo-device.js';
import { defaultStateDir, type StatePaths, statePaths } from './paths.js';
import { decodeReply } from './protocol.js';
import { emulatedTransport } from './transport.js';

const START_TIMEOUT_MS = 15_000;
const HANDSHAKE_TIMEOUT_MS = 10_000;

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Is an emulator listening in this state directory? (connecting to query.sock opens nothing) */
export function emulatorRunning(paths: StatePaths): boolean {
  const fd = socket('seqpacket');
  try {
    connect(fd, paths.querySocket);
    return true;
  } catch {
    return false;
  } finally {
    fd.close();
  }
}

/** The emulator's entry point, compiled (dist) or source (run through tsx in development and tests). */
function serverEntry(): { args: string[] } {
  const self = fileURLToPath(import.meta.url);
  if (self.endsWith('.ts')) {
    return { args: ['--import', 'tsx', fileURLToPath(new URL('./server/main.ts', import.meta.url))] };
  }
  return { args: [fileURLToPath(new URL('./server/main.js', import.meta.url))] };
}

/**
 * The environment for the emulator's own process: never under the preload
 * shim (a program run by `luoctl emu exec` may start it), whose every call
 * would otherwise first check whether it is talking to itself.
 */
function withoutShim(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const preload = (env.LD_PRELOAD ?? '')
    .split(/[:\s]+/)
    .filter((lib) => lib !== '' && !lib.endsWith('/libluoemu.so') && lib !== 'libluoemu.so');
  const { LD_PRELOAD: _, ...rest } = env;
  return preload.length > 0 ? { ...rest, LD_PRELOAD: preload.join(':') } : rest;
}

export interface EnsureOptions {
  /** The emulated kernel version to boot when starting (default 7.2). */
  kernel?: string;
}

/** Start the emulator for `paths` unless one is running; returns once it accepts connections. */
export function ensureEmulator(paths: StatePaths, options: EnsureOptions = {}): void {
  if (emulatorRunning(paths)) return;
  fs.mkdirSync(paths.dir, { recursive: true, mode: 0o700 });
  const log = fs.openSync(paths.logFile, 'a');
  const { args } = serverEntry();
  const child = spawn(
    process.execPath,
    [...args, '--state', paths.dir, '--kernel', options.kernel ?? '7.2'],
    {
      detached: true,
      stdio: ['ignore', log, log],
      env: withoutShim(process.env),
    },
  );
  fs.closeSync(log);
  child.unref();
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (emulatorRunning(paths)) return;
    if (child.exitCode !== null) break;
    sleepSync(20);
  }
  throw new SysError(
    'emulator',
    Errno.EIO,
    `the emulated kernel did not start in ${paths.dir} (see ${paths.logFile})`,
  );
}

export interface OpenEmulatedOptions {
  stateDir?: string;
  kernel?: string;
  /** Start the emulator if none runs (default true). */
  start?: boolean;
}

/** open("/dev/liveupdate") on the emulated kernel. */
export function openEmulatedDevice(options: OpenEmulatedOptions = {}): LuoDevice {
  const paths = statePaths(options.stateDir ?? defaultStateDir());
  if (options.start ?? true) ensureEmulator(paths, { kernel: options.kernel });
  const fd = socket('seqpacket');
  try {
    try {
      connect(fd, paths.deviceSocket);
    } catch (err) {
      throw luoError(
        'OPEN',
        Errno.ENOENT,
        `no emulated kernel listens in ${paths.dir} (${(err as SysError).code})`,
      );
    }
    setTimeouts(fd, HANDSHAKE_TIMEOUT_MS);
    if (!waitReadable(fd, HANDSHAKE_TIMEOUT_MS))
      throw luoError('OPEN', Errno.ETIMEDOUT, 'the emulated kernel did not answer');
    const got = receiveWithFds(fd);
    if (got === null || got.eof) {
      throw luoError(
        'OPEN',
        Errno.EIO,
        `the emulated kernel in ${paths.dir} refused the open (it may have panicked: see luoctl emu status)`,
      );
    }
    const result = decodeReply(got.data).result;
    if (result < 0) throw luoError('OPEN', -result, `emulated kernel in ${paths.dir}`);
    setTimeouts(fd, 0);
    return new LuoDevice(emulatedTransport, fd);
  } catch (err) {
    fd.close();
    throw err;
  }
}

/**
 * Is this fd a session of an emulated kernel? Emulator fds are
 * SOCK_SEQPACKET sockets (real session fds are anon inodes). `target`: what
 * /proc/self/fd says `fd` is, when the caller has read it already.
 */
export function isEmulatedSessionFd(fd: OwnedFd, target = fdTarget(fd)): boolean {
  if (!target.startsWith('socket:')) return false;
  try {
    return socketType(fd) === 'seqpacket';
  } catch {
    return false;
  }
}

export function adoptEmulatedSession(fd: OwnedFd, knownName?: string, trustName = false): LuoSession {
  return LuoSession.adopt(emulatedTransport, fd, knownName, trustName);
}

/**
 * One request on the control socket: a JSON line each way. Over the same
 * koffi-backed socket as the device, not node:net, whose stream modules would
 * otherwise load at luod's start only to ask the emulator its boot id
 * (docs/performance.md).
 */
export function controlRequest(
  paths: StatePaths,
  request: object,
  timeoutMs = 120_000,
): Promise<Record<string, unknown>> {
  let conn: UnixSocket;
  try {
    conn = UnixSocket.connect(paths.controlSocket);
  } catch (err) {
    return Promise.reject(
      new SysError('emulator', Errno.ENOENT, `no emulated kernel runs in ${paths.dir} (${errorCode(err)})`),
    );
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let settled = false;
    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      conn.close();
      fn();
    };
    const timer = setTimeout(
      () =>
        settle(() =>
          reject(
            new SysError('emulator', Errno.ETIMEDOUT, `the emulated kernel in ${paths.dir} did not answer`),
          ),
        ),
      timeoutMs,
    );
    conn.on('data', (chunk, fds) => {
      for (const fd of fds) fd.close();
      chunks.push(chunk);
      const newline = chunk.indexOf(0x0a);
      if (newline < 0) return;
      const all = Buffer.concat(chunks);
      settle(() => {
        try {
          resolve(JSON.parse(all.subarray(0, all.indexOf(0x0a)).toString('utf8')));
        } catch (err) {
          reject(err);
        }
      });
    });
    const lost = (why: string) =>
      settle(() =>
        reject(new SysError('emulator', Errno.ECONNRESET, `the emulated kernel in ${paths.dir} ${why}`)),
      );
    conn.on('error', (err) => lost(`failed the request (${errorCode(err)})`));
    conn.on('end', () => lost('closed the connection before answering'));
    conn
      .send(Buffer.from(`${JSON.stringify(request)}\n`))
      .catch((err) => lost(`failed the request (${errorCode(err)})`));
  });
}

/** Read the emulator's pid, or null when no pid file exists. */
export function emulatorPid(paths: StatePaths): number | null {
  try {
    const pid = Number.parseInt(fs.readFileSync(paths.pidFile, 'utf8'), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}
