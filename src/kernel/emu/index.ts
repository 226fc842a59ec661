/**
 * The emulated kernel, as the rest of luokit uses it: start or find one for
 * a state directory, open its device, kexec it, stop it.
 */
import * as fs from 'node:fs';
import { Errno, errnoNumber } from '../../sys/errno.js';
import { CodedError, errorCode, SysError } from '../../sys/error.js';
import type { LiveUpdateDevice } from '../device.js';
import type { IoctlTransport } from '../transport.js';
import { controlRequest, emulatorPid, ensureEmulator, openEmulatedDevice } from './emulator-process.js';
import { defaultStateDir, type StatePaths, statePaths } from './paths.js';
import { emulatedTransport } from './transport.js';

export {
  adoptEmulatedSession,
  ensureEmulator,
  isEmulatedSessionFd,
  openEmulatedDevice,
} from './emulator-process.js';
export { defaultStateDir, type StatePaths, statePaths } from './paths.js';
export {
  checkEmulatedVersion,
  emulatedFormats,
  KERNEL_FORMATS,
  type KernelFormats,
  WRITABLE_VERSIONS,
} from './server/versions.js';

export interface KexecResult {
  kernel: { version: string; bootId: number; liveupdateNum: number };
  boot: { outcome: 'cold' | 'restored' | 'handover-ignored' | 'panic'; detail: string; sessions: number };
}

export interface Emulator {
  readonly paths: StatePaths;
  readonly pid: number | null;
  readonly transport: IoctlTransport;
  openDevice(): LiveUpdateDevice;
  /** The emulated kexec into `to` (default: the same version); rejects with the kernel's errno if refused. */
  kexec(options?: { to?: string }): Promise<KexecResult>;
  status(): Promise<Record<string, unknown>>;
  /** Make the next file retrieve fail with `errno` (to test a VMM's error handling). */
  injectFault(fault: { op: 'retrieve-fd'; errno: string }): Promise<void>;
  stop(): Promise<void>;
}

export interface StartOptions {
  stateDir?: string;
  kernel?: string;
}

export async function startEmulator(options: StartOptions = {}): Promise<Emulator> {
  const paths = statePaths(options.stateDir ?? defaultStateDir());
  ensureEmulator(paths, { kernel: options.kernel });
  return {
    paths,
    pid: emulatorPid(paths),
    transport: emulatedTransport,
    openDevice: () => openEmulatedDevice({ stateDir: paths.dir, start: false }),
    kexec: (opts = {}) => emulatorKexec(paths, opts.to),
    status: () => emulatorStatus(paths),
    injectFault: async (fault) => {
      const reply = await controlRequest(paths, { cmd: 'fault', ...fault });
      if (reply.ok !== true)
        throw new SysError('fault', Errno.EINVAL, `fault injection refused: ${JSON.stringify(reply.error)}`);
    },
    stop: () => stopEmulator(paths),
  };
}

export async function emulatorStatus(paths: StatePaths): Promise<Record<string, unknown>> {
  const reply = await controlRequest(paths, { cmd: 'status' });
  return reply;
}

export async function emulatorKexec(paths: StatePaths, to?: string): Promise<KexecResult> {
  const reply = await controlRequest(paths, { cmd: 'kexec', ...(to ? { to } : {}) });
  if (reply.ok !== true) {
    const error = reply.error as { code?: string; message?: string } | undefined;
    const code = errorCode(error);
    const message = `emulated kexec refused: ${code}: ${error?.message}`;
    const errno = errnoNumber(code);
    // The emulator's own code (an errno name, or one of its own) is the error's code.
    throw errno === undefined ? new CodedError(code, message) : new SysError('kexec', errno, message);
  }
  return reply as unknown as KexecResult;
}

/** Ask the emulator to stop and wait until its process is gone. */
export async function stopEmulator(paths: StatePaths, timeoutMs = 10_000): Promise<void> {
  const pid = emulatorPid(paths);
  await controlRequest(paths, { cmd: 'stop' }).catch((err) => {
    // Stopping, it may close the connection before its answer is out: the wait below tells.
    if ((err as SysError).errno !== Errno.ECONNRESET) throw err;
  });
  const deadline = Date.now() + timeoutMs;
  while (pid !== null && Date.now() < deadline) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  if (pid !== null && fs.existsSync(`/proc/${pid}`)) {
    throw new SysError('emulator', Errno.ETIMEDOUT, `the emulated kernel (pid ${pid}) did not stop`);
  }
}
