/**
 * Choosing a kernel: `openDevice()` is how every layer above gets a
 * LiveUpdateDevice.
 *
 * `backend: 'real'` means `/dev/liveupdate` and nothing else. The library's
 * default, 'auto', takes the emulated kernel where no device exists, so
 * that developers can work anywhere; luod and `luoctl update` never use
 * 'auto' (they ask for 'emulated' only under --emulate), because a host
 * that silently fell back would believe it preserves VMs while it does not.
 */
import * as fs from 'node:fs';
import { Errno } from '../sys/errno.js';
import type { OwnedFd } from '../sys/fd.js';
import { fdTarget } from '../sys/proc.js';
import { luoError } from '../uapi/errors.js';
import type { Backend, LiveUpdateDevice, Session } from './device.js';
import { adoptEmulatedSession, isEmulatedSessionFd, openEmulatedDevice } from './emu/index.js';
import { adoptRealSession, DEVICE_PATH, openRealDevice } from './real/index.js';

export type { Backend, LiveUpdateDevice, Session, SessionOrigin } from './device.js';

export interface OpenDeviceOptions {
  /** 'auto' (default): the real kernel where /dev/liveupdate exists, else the emulated one. */
  backend?: Backend | 'auto';
  /** Path of the real device (tests, unusual hosts). */
  devicePath?: string;
  /** The emulated kernel's state directory (default: $LUOKIT_EMU_STATE or a per-user runtime directory). */
  stateDir?: string;
}

/** Which backend `openDevice()` would use on this host. */
export function detectBackend(devicePath: string = DEVICE_PATH): Backend {
  return fs.existsSync(devicePath) ? 'real' : 'emulated';
}

export function openDevice(options: OpenDeviceOptions = {}): LiveUpdateDevice {
  const devicePath = options.devicePath ?? DEVICE_PATH;
  const backend =
    options.backend === undefined || options.backend === 'auto' ? detectBackend(devicePath) : options.backend;
  if (backend === 'real') return openRealDevice(devicePath);
  return openEmulatedDevice({ stateDir: options.stateDir });
}

/** The kernel's name for a real session fd: 'anon_inode:[luo_session] NAME'. */
const REAL_SESSION_TARGET = /^anon_inode:\[luo_session\]/;

/** Which kernel a session fd belongs to, or null when it is not a session fd at all. */
export function sessionBackend(fd: OwnedFd): Backend | null {
  // One readlink of /proc/self/fd for both questions (a restarted luod asks for a thousand fds).
  const target = fdTarget(fd);
  if (REAL_SESSION_TARGET.test(target)) return 'real';
  if (isEmulatedSessionFd(fd, target)) return 'emulated';
  return null;
}

export interface AdoptOptions {
  /**
   * The name the sender gave it (luod's START_PRESERVATION or CLAIM, a held
   * fd's name): used where the kernel cannot tell (no GET_NAME before 7.2).
   */
  name?: string;
  /**
   * `name` is this process's own word, not a sender's: taken as the name
   * without asking the kernel (GET_NAME). luod's keeper, taking back the fds
   * it gave the holder under names it made itself, adopts a thousand
   * sessions before it listens: on the emulated kernel each GET_NAME is a
   * round trip to its process. Whether the fd is a session is checked anyway.
   */
  trustName?: boolean;
}

/**
 * Wrap a session fd this process received (from luod over SCM_RIGHTS, from
 * an fd store) in the Session API, whichever kernel it belongs to. The one
 * place that decides it: luod's keeper and the client library both call it.
 */
export function adoptSession(fd: OwnedFd, options: AdoptOptions = {}): Session {
  const backend = sessionBackend(fd);
  const trusted = options.trustName === true;
  if (backend === 'real') return adoptRealSession(fd, options.name, trusted);
  if (backend === 'emulated') return adoptEmulatedSession(fd, options.name, trusted);
  throw luoError('GET_NAME', Errno.EINVAL, `fd ${fd.fd} (${fdTarget(fd)}) is not a live update session`);
}
