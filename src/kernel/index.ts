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

/**
 * Wrap a session fd this process received (from luod over SCM_RIGHTS, from
 * an fd store) in the Session API, whichever kernel it belongs to.
 */
export function adoptSession(fd: OwnedFd): Session {
  const target = fdTarget(fd);
  if (REAL_SESSION_TARGET.test(target)) return adoptRealSession(fd);
  if (isEmulatedSessionFd(fd)) return adoptEmulatedSession(fd);
  throw luoError('GET_NAME', Errno.EINVAL, `fd ${fd.fd} (${target}) is not a live update session`);
}
