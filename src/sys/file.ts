/**
 * Plain file operations on fds, with errors as SysError.
 *
 * Node's `fs` already does open/read/write/pread/pwrite/fstat correctly on any
 * fd (and opens with O_CLOEXEC), so these wrap it rather than the C library;
 * what Node lacks (fallocate, seals, lseek on an fd) comes from `libc.ts`.
 */
import * as fs from 'node:fs';
import { Errno } from './errno.js';
import { fromNodeError, SysError } from './error.js';
import { type FdLike, OwnedFd, rawFd } from './fd.js';
import { fallocateRaw, fcntlInt, ftruncateRaw, lseekRaw } from './libc.js';

export const O_RDONLY = 0;
export const O_WRONLY = 1;
export const O_RDWR = 2;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;
export const O_TRUNC = 0o1000;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;

export const F_DUPFD_CLOEXEC = 1030;
export const F_GETFD = 1;
export const F_SETFD = 2;
export const F_GETFL = 3;
export const F_SETFL = 4;
export const FD_CLOEXEC = 1;

export const SEEK_SET = 0;
export const SEEK_CUR = 1;
export const SEEK_END = 2;

/** fallocate(2) modes. */
export const FALLOC_FL_KEEP_SIZE = 1;
export const FALLOC_FL_PUNCH_HOLE = 2;

function checkLength(what: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new SysError(what, Errno.EINVAL, `${what}: expected a non-negative integer, got ${String(value)}`);
  }
}

/** open(2); the fd is always close-on-exec. */
export function open(path: string, flags: number = O_RDONLY, mode = 0o600): OwnedFd {
  try {
    return new OwnedFd(fs.openSync(path, flags | O_CLOEXEC, mode));
  } catch (err) {
    throw fromNodeError(`open ${path}`, err);
  }
}

/** Read up to `length` bytes at the current position (or at `position`, pread). */
export function read(fd: FdLike, length: number, position: number | null = null): Buffer {
  checkLength('read', length);
  const buf = Buffer.allocUnsafe(length);
  try {
    const n = fs.readSync(rawFd(fd), buf, 0, length, position);
    return buf.subarray(0, n);
  } catch (err) {
    throw fromNodeError(position === null ? 'read' : 'pread', err);
  }
}

/** Write `data` at the current position (or at `position`, pwrite); returns bytes written. */
export function write(fd: FdLike, data: Uint8Array, position: number | null = null): number {
  try {
    return fs.writeSync(rawFd(fd), data, 0, data.length, position);
  } catch (err) {
    throw fromNodeError(position === null ? 'write' : 'pwrite', err);
  }
}

export const pread = (fd: FdLike, length: number, position: number): Buffer => read(fd, length, position);
export const pwrite = (fd: FdLike, data: Uint8Array, position: number): number => write(fd, data, position);

/** Write all of `data` at `position`, looping over short writes. */
export function pwriteAll(fd: FdLike, data: Uint8Array, position: number): void {
  let done = 0;
  while (done < data.length) {
    const n = pwrite(fd, data.subarray(done), position + done);
    if (n === 0)
      throw new SysError('pwrite', Errno.EIO, 'pwrite: wrote nothing (short write at end of file)');
    done += n;
  }
}

export interface FileStat {
  dev: bigint;
  ino: bigint;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: bigint;
  size: number;
  blocks: number;
  isFile: boolean;
  isCharDevice: boolean;
  isSocket: boolean;
}

export function fstat(fd: FdLike): FileStat {
  try {
    const st = fs.fstatSync(rawFd(fd), { bigint: true });
    return {
      dev: st.dev,
      ino: st.ino,
      mode: Number(st.mode),
      nlink: Number(st.nlink),
      uid: Number(st.uid),
      gid: Number(st.gid),
      rdev: st.rdev,
      size: Number(st.size),
      blocks: Number(st.blocks),
      isFile: st.isFile(),
      isCharDevice: st.isCharacterDevice(),
      isSocket: st.isSocket(),
    };
  } catch (err) {
    throw fromNodeError('fstat', err);
  }
}

export function ftruncate(fd: FdLike, length: number): void {
  checkLength('ftruncate', length);
  ftruncateRaw(rawFd(fd), length);
}

export function fallocate(fd: FdLike, offset: number, length: number, mode = 0): void {
  checkLength('fallocate', offset);
  checkLength('fallocate', length);
  fallocateRaw(rawFd(fd), mode, offset, length);
}

export function lseek(fd: FdLike, offset: number, whence: number = SEEK_SET): number {
  if (!Number.isSafeInteger(offset))
    throw new SysError('lseek', Errno.EINVAL, 'lseek: offset must be an integer');
  return lseekRaw(rawFd(fd), offset, whence);
}

export function getFileStatusFlags(fd: FdLike): number {
  return fcntlInt(rawFd(fd), F_GETFL, 0);
}

export function setNonBlocking(fd: FdLike, nonBlocking: boolean): void {
  const raw = rawFd(fd);
  const flags = fcntlInt(raw, F_GETFL, 0);
  fcntlInt(raw, F_SETFL, nonBlocking ? flags | O_NONBLOCK : flags & ~O_NONBLOCK);
}

export function isCloseOnExec(fd: FdLike): boolean {
  return (fcntlInt(rawFd(fd), F_GETFD, 0) & FD_CLOEXEC) !== 0;
}

export function setCloseOnExec(fd: FdLike, closeOnExec: boolean): void {
  const raw = rawFd(fd);
  const flags = fcntlInt(raw, F_GETFD, 0);
  fcntlInt(raw, F_SETFD, closeOnExec ? flags | FD_CLOEXEC : flags & ~FD_CLOEXEC);
}

/** dup(2) with close-on-exec: a second, independently owned reference to the same open file. */
export function dup(fd: FdLike): OwnedFd {
  return new OwnedFd(fcntlInt(rawFd(fd), F_DUPFD_CLOEXEC, 0));
}

/** Does this fd number refer to an open file in this process? */
export function isOpen(fd: number): boolean {
  try {
    fcntlInt(fd, F_GETFD, 0);
    return true;
  } catch {
    return false;
  }
}
