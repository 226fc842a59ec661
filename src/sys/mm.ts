/**
 * Memory mappings, filesystem identity and in-kernel copies: what the
 * emulated kernel needs to hold preserved memfds the way LUO does and to move
 * their bytes into and out of its emulated physical memory without passing
 * them through JavaScript.
 */
import { readSync } from 'node:fs';
import { Errno } from './errno.js';
import { SysError } from './error.js';
import { type FdLike, OwnedFd, rawFd } from './fd.js';
import { O_CLOEXEC, pwriteAll } from './file.js';
import {
  closeRaw,
  copyFileRangeRaw,
  fstatfsTypeRaw,
  lseekRaw,
  madviseRaw,
  mmapRaw,
  munmapRaw,
  peekRaw,
  pipe2Raw,
  pollManyRaw,
  pollOneRaw,
  sendfileRaw,
  vmspliceRaw,
} from './libc.js';

export const TMPFS_MAGIC = 0x01021994;
export const HUGETLBFS_MAGIC = 0x958458f6;

export const PROT_READ = 0x1;
export const PROT_WRITE = 0x2;
export const MAP_SHARED = 0x1;
/** madvise: fault every page in as a read would (Linux 5.14). */
export const MADV_POPULATE_READ = 22;

export const POLLIN = 0x1;
export const POLLOUT = 0x4;
export const POLLHUP = 0x10;
export const POLLRDHUP = 0x2000;

/** The filesystem magic of the file behind `fd` (statfs f_type). */
export function filesystemType(fd: FdLike): number {
  return fstatfsTypeRaw(rawFd(fd)) >>> 0;
}

/** A shared mapping of a file, unmapped exactly once. */
export class Mapping {
  #address: number;
  readonly length: number;

  constructor(fd: FdLike, length: number, prot: number = PROT_READ | PROT_WRITE) {
    if (!Number.isSafeInteger(length) || length <= 0) {
      throw new SysError('mmap', Errno.EINVAL, `mmap: length must be positive, got ${length}`);
    }
    this.length = length;
    this.#address = mmapRaw(rawFd(fd), length, prot, MAP_SHARED);
  }

  /** madvise over the whole mapping. */
  advise(advice: number): void {
    if (this.#address === 0) throw new SysError('madvise', Errno.EINVAL, 'madvise: the mapping is gone');
    madviseRaw(this.#address, this.length, advice);
  }

  /**
   * Queue the mapping's first `length` bytes into a new pipe by reference (vmsplice without
   * gift): the pipe holds the page cache pages, an extra reference on each, until its read
   * end, which is returned, is closed.
   */
  pinIntoPipe(length: number): OwnedFd {
    if (this.#address === 0) throw new SysError('vmsplice', Errno.EINVAL, 'vmsplice: the mapping is gone');
    const [readEnd, writeEnd] = pipe2Raw(O_CLOEXEC);
    try {
      vmspliceRaw(writeEnd, this.#address, Math.min(length, this.length));
    } catch (err) {
      closeRaw(readEnd);
      throw err;
    } finally {
      closeRaw(writeEnd);
    }
    return new OwnedFd(readEnd);
  }

  unmap(): void {
    if (this.#address === 0) return;
    const address = this.#address;
    this.#address = 0;
    munmapRaw(address, this.length);
  }
}

/**
 * Give every page of a shmem file's first `size` bytes a folio, up to date (zeroed where it
 * was a hole or fallocated but never written): a read fault of a shared mapping does that in
 * shmem, and it is what pinning every page does (memfd_pin_folios) when LUO preserves a memfd.
 * Afterwards SEEK_HOLE finds no hole below the size.
 */
export function populateFile(fd: FdLike, size: number): void {
  if (size <= 0) return;
  const mapping = new Mapping(fd, size, PROT_READ);
  try {
    mapping.advise(MADV_POPULATE_READ);
  } finally {
    mapping.unmap();
  }
}

/**
 * Copy `length` bytes between files inside the kernel. copy_file_range is
 * tried first; between different filesystems (a memfd and a file on
 * /dev/shm are different superblocks) the kernel refuses with EXDEV, and
 * sendfile does the copy instead, still without passing through userspace.
 */
export function copyRange(
  from: FdLike,
  fromOffset: number,
  to: FdLike,
  toOffset: number,
  length: number,
): void {
  const inFd = rawFd(from);
  const outFd = rawFd(to);
  let done = 0;
  while (done < length) {
    const n = copyFileRangeRaw(inFd, fromOffset + done, outFd, toOffset + done, length - done);
    if (n > 0) {
      done += n;
      continue;
    }
    if (n === 0)
      throw new SysError(
        'copy_file_range',
        Errno.EIO,
        `copy_file_range: source ended ${length - done} bytes early`,
      );
    if (!([Errno.EXDEV, Errno.EINVAL, Errno.EOPNOTSUPP, Errno.ENOSYS] as number[]).includes(-n)) {
      throw new SysError('copy_file_range', -n);
    }
    copyBySendfile(inFd, fromOffset + done, outFd, toOffset + done, length - done);
    return;
  }
}

function copyBySendfile(
  inFd: number,
  fromOffset: number,
  outFd: number,
  toOffset: number,
  length: number,
): void {
  lseekRaw(outFd, toOffset, 0);
  let done = 0;
  while (done < length) {
    const n = sendfileRaw(outFd, inFd, fromOffset + done, length - done);
    if (n > 0) {
      done += n;
      continue;
    }
    if (n === 0)
      throw new SysError('sendfile', Errno.EIO, `sendfile: source ended ${length - done} bytes early`);
    if (-n === Errno.EINVAL || -n === Errno.ENOSYS) {
      copyByReading(inFd, fromOffset + done, outFd, toOffset + done, length - done);
      return;
    }
    throw new SysError('sendfile', -n);
  }
}

const COPY_CHUNK = 8 << 20;
let copyBuffer: Buffer | null = null;

function copyByReading(
  inFd: number,
  fromOffset: number,
  outFd: number,
  toOffset: number,
  length: number,
): void {
  copyBuffer ??= Buffer.allocUnsafe(COPY_CHUNK);
  for (let done = 0; done < length; ) {
    const want = Math.min(COPY_CHUNK, length - done);
    const n = readSync(inFd, copyBuffer, 0, want, fromOffset + done);
    if (n === 0) throw new SysError('pread', Errno.EIO, 'pread: source ended early');
    pwriteAll(outFd, copyBuffer.subarray(0, n), toOffset + done);
    done += n;
  }
}

/** Block until `fd` is readable (or has hung up); false on timeout. */
export function waitReadable(fd: FdLike, timeoutMs: number): boolean {
  return pollOneRaw(rawFd(fd), POLLIN, timeoutMs) !== 0;
}

/**
 * Which of these sockets has a peer that closed, with nothing left to read?
 * (The kernel releases a file the moment its last fd closes; an event loop
 * learns of it a little later, and callers that must act in the kernel's
 * order ask first.)
 */
export function peersClosed(fds: readonly number[]): number[] {
  const revents = pollManyRaw(fds, POLLRDHUP);
  return fds.filter((fd, i) => (revents[i]! & (POLLHUP | POLLRDHUP)) !== 0 && peekRaw(fd) === 0);
}
