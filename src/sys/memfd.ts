/**
 * memfd_create(2) and file seals: guest RAM in luokit is a memfd, and memfds
 * are what the kernel's "memfd-v2" live update handler preserves.
 */
import { Errno } from './errno.js';
import { SysError } from './error.js';
import { type FdLike, OwnedFd, rawFd } from './fd.js';
import { fcntlInt, memfdCreateRaw } from './libc.js';

export const MFD_CLOEXEC = 0x1;
export const MFD_ALLOW_SEALING = 0x2;
export const MFD_HUGETLB = 0x4;
export const MFD_NOEXEC_SEAL = 0x8;
export const MFD_EXEC = 0x10;

export const F_ADD_SEALS = 1033;
export const F_GET_SEALS = 1034;

export const F_SEAL_SEAL = 0x1;
export const F_SEAL_SHRINK = 0x2;
export const F_SEAL_GROW = 0x4;
export const F_SEAL_WRITE = 0x8;
export const F_SEAL_FUTURE_WRITE = 0x10;
export const F_SEAL_EXEC = 0x20;

const SEAL_NAMES: ReadonlyArray<readonly [number, string]> = [
  [F_SEAL_SEAL, 'SEAL'],
  [F_SEAL_SHRINK, 'SHRINK'],
  [F_SEAL_GROW, 'GROW'],
  [F_SEAL_WRITE, 'WRITE'],
  [F_SEAL_FUTURE_WRITE, 'FUTURE_WRITE'],
  [F_SEAL_EXEC, 'EXEC'],
];

/** Seal bits as names, e.g. 0x0a -> ['SHRINK', 'WRITE']; unknown bits as hex. */
export function sealNames(seals: number): string[] {
  const names: string[] = [];
  let rest = seals;
  for (const [bit, name] of SEAL_NAMES) {
    if (seals & bit) names.push(name);
    rest &= ~bit;
  }
  if (rest) names.push(`0x${rest.toString(16)}`);
  return names;
}

/** The name memfd_create accepts: at most 249 bytes ("memfd:" prefix plus NUL fit in 255). */
const MEMFD_NAME_MAX = 249;

export function memfdCreate(name: string, flags: number = MFD_CLOEXEC | MFD_ALLOW_SEALING): OwnedFd {
  const bytes = Buffer.byteLength(name);
  if (bytes > MEMFD_NAME_MAX || name.includes('\0')) {
    throw new SysError(
      'memfd_create',
      Errno.EINVAL,
      `memfd_create: name must be at most ${MEMFD_NAME_MAX} bytes without NUL`,
    );
  }
  // Every fd luokit opens is close-on-exec; children get fds only on purpose.
  return new OwnedFd(memfdCreateRaw(name, flags | MFD_CLOEXEC));
}

export function addSeals(fd: FdLike, seals: number): void {
  fcntlInt(rawFd(fd), F_ADD_SEALS, seals);
}

export function getSeals(fd: FdLike): number {
  return fcntlInt(rawFd(fd), F_GET_SEALS, 0);
}
