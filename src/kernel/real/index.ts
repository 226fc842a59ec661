/**
 * The real kernel's `/dev/liveupdate`.
 *
 * The device is exclusive: while one process holds it open every other open
 * fails with EBUSY. Sessions outlive the device fd (each session is its own
 * fd), so an agent should close the device as soon as it has what it needs.
 */
import { SysError } from '../../sys/error.js';
import type { OwnedFd } from '../../sys/fd.js';
import { O_RDWR, open } from '../../sys/file.js';
import { luoError } from '../../uapi/errors.js';
import { LuoDevice, LuoSession } from '../luo-device.js';
import { realTransport } from './transport.js';

export const DEVICE_PATH = '/dev/liveupdate';

export function openRealDevice(path: string = DEVICE_PATH): LuoDevice {
  try {
    return new LuoDevice(realTransport, open(path, O_RDWR));
  } catch (err) {
    if (err instanceof SysError) throw luoError('OPEN', err.errno, `opening ${path}`);
    throw err;
  }
}

/** A real session fd received from elsewhere ('anon_inode:[luo_session] NAME'). */
export function adoptRealSession(fd: OwnedFd, knownName?: string, trustName = false): LuoSession {
  return LuoSession.adopt(realTransport, fd, knownName, trustName);
}
