/**
 * The C library, bound with koffi. This file is the only place in luokit that
 * imports koffi: koffi pointers are untyped and a wrong one crashes the
 * process instead of throwing, so every binding lives here, typed, and the
 * rest of `src/sys` wraps them in functions that validate their arguments
 * and throw `SysError` on failure.
 *
 * Variadic C functions (ioctl, fcntl, syscall) are called with explicit
 * argument types, as the x86_64 and arm64 calling conventions require.
 */
import koffi from 'koffi';
import { Errno } from './errno.js';
import { SysError } from './error.js';

/**
 * The process's global symbol scope (dlopen(NULL)), not libc.so.6's own: a
 * call here resolves as a C program's call to libc does, so a preloaded
 * library interposes it too (under `luoctl emu exec`, the emulated kernel's
 * shim sees luokit's own ftruncate, fallocate and close). Node links libc, so
 * every symbol below is found there.
 */
const libc = koffi.load(null);

const fn = {
  close: libc.func('int close(int fd)'),
  ioctl: libc.func('int ioctl(int fd, unsigned long request, ...)'),
  fcntl: libc.func('int fcntl(int fd, int cmd, ...)'),
  memfd_create: libc.func('int memfd_create(const char *name, unsigned int flags)'),
  ftruncate: libc.func('int ftruncate(int fd, int64_t length)'),
  fallocate: libc.func('int fallocate(int fd, int mode, int64_t offset, int64_t len)'),
  lseek: libc.func('int64_t lseek(int fd, int64_t offset, int whence)'),
  socket: libc.func('int socket(int domain, int type, int protocol)'),
  socketpair: libc.func('int socketpair(int domain, int type, int protocol, _Out_ int *sv)'),
  bind: libc.func('int bind(int fd, const void *addr, uint32_t addrlen)'),
  listen: libc.func('int listen(int fd, int backlog)'),
  accept4: libc.func('int accept4(int fd, void *addr, void *addrlen, int flags)'),
  connect: libc.func('int connect(int fd, const void *addr, uint32_t addrlen)'),
  sendmsg: libc.func('intptr_t sendmsg(int fd, void *msg, int flags)'),
  recvmsg: libc.func('intptr_t recvmsg(int fd, void *msg, int flags)'),
  shutdown: libc.func('int shutdown(int fd, int how)'),
  getsockopt: libc.func('int getsockopt(int fd, int level, int name, void *value, _Inout_ uint32_t *len)'),
  setsockopt: libc.func('int setsockopt(int fd, int level, int name, const void *value, uint32_t len)'),
  syscall: libc.func('long syscall(long number, ...)'),
  reboot: libc.func('int reboot(int cmd)'),
  fstatfs: libc.func('int fstatfs(int fd, void *buf)'),
  mmap: libc.func('intptr_t mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset)'),
  munmap: libc.func('int munmap(intptr_t addr, size_t length)'),
  madvise: libc.func('int madvise(intptr_t addr, size_t length, int advice)'),
  pipe2: libc.func('int pipe2(_Out_ int *fds, int flags)'),
  vmsplice: libc.func('intptr_t vmsplice(int fd, const void *iov, size_t nr_segs, unsigned int flags)'),
  copy_file_range: libc.func(
    'intptr_t copy_file_range(int in_fd, _Inout_ int64_t *in_off, int out_fd, _Inout_ int64_t *out_off, size_t len, unsigned int flags)',
  ),
  poll: libc.func('int poll(void *fds, unsigned long nfds, int timeout)'),
  recv: libc.func('intptr_t recv(int fd, void *buf, size_t len, int flags)'),
  sendfile: libc.func('intptr_t sendfile(int out_fd, int in_fd, _Inout_ int64_t *offset, size_t count)'),
};

/** Throw a SysError for a C call that returned a negative value, using the saved errno. */
function check(name: string, ret: number | bigint): number {
  const value = Number(ret);
  if (value < 0) throw new SysError(name, koffi.errno());
  return value;
}

export function closeRaw(fd: number): void {
  if (fn.close(fd) < 0) {
    const errno = koffi.errno();
    // Linux always releases the fd, even on EINTR/EIO: only EBADF is a real
    // error, and it means a double close somewhere, which must be loud.
    if (errno === Errno.EBADF) throw new SysError('close', errno);
  }
}

export function ioctlRaw(fd: number, request: number, arg: Buffer | null): number {
  return check('ioctl', fn.ioctl(fd, request, 'void *', arg));
}

export function fcntlInt(fd: number, cmd: number, arg: number): number {
  return check('fcntl', fn.fcntl(fd, cmd, 'int', arg));
}

export function memfdCreateRaw(name: string, flags: number): number {
  return check('memfd_create', fn.memfd_create(name, flags));
}

export function ftruncateRaw(fd: number, length: number): void {
  check('ftruncate', fn.ftruncate(fd, length));
}

export function fallocateRaw(fd: number, mode: number, offset: number, length: number): void {
  check('fallocate', fn.fallocate(fd, mode, offset, length));
}

export function lseekRaw(fd: number, offset: number, whence: number): number {
  return check('lseek', fn.lseek(fd, offset, whence));
}

export function socketRaw(domain: number, type: number): number {
  return check('socket', fn.socket(domain, type, 0));
}

export function socketpairRaw(domain: number, type: number): [number, number] {
  const sv = new Int32Array(2);
  check('socketpair', fn.socketpair(domain, type, 0, sv));
  return [sv[0]!, sv[1]!];
}

export function bindRaw(fd: number, addr: Buffer): void {
  check('bind', fn.bind(fd, addr, addr.length));
}

export function listenRaw(fd: number, backlog: number): void {
  check('listen', fn.listen(fd, backlog));
}

/** accept4(); returns -errno instead of throwing, because EAGAIN is the normal end of a batch. */
export function accept4Raw(fd: number, flags: number): number {
  const ret = fn.accept4(fd, null, null, flags);
  return ret < 0 ? -koffi.errno() : ret;
}

/**
 * The calls below may block (a blocking socket, with or without SO_RCVTIMEO or
 * SO_SNDTIMEO) and then return EINTR when a handled signal arrives: nothing
 * happened, so they are made again. (AF_UNIX connect() interrupted while it
 * waits for room in a full backlog leaves the socket unconnected, unlike TCP.)
 */
function again(call: () => number | bigint): number {
  for (;;) {
    const ret = Number(call());
    if (ret >= 0) return ret;
    const errno = koffi.errno();
    if (errno !== Errno.EINTR) return -errno;
    interrupted.count++;
  }
}

/** How many calls a signal interrupted (EINTR) and that were made again: tests show the path ran. */
export const interrupted = { count: 0 };

export function connectRaw(fd: number, addr: Buffer): void {
  const ret = again(() => fn.connect(fd, addr, addr.length));
  if (ret < 0) throw new SysError('connect', -ret);
}

/** sendmsg()/recvmsg() on a native msghdr; return -errno instead of throwing (EAGAIN is routine). */
export function sendmsgRaw(fd: number, msghdr: bigint, flags: number): number {
  return again(() => fn.sendmsg(fd, msghdr, flags));
}

export function recvmsgRaw(fd: number, msghdr: bigint, flags: number): number {
  return again(() => fn.recvmsg(fd, msghdr, flags));
}

export function shutdownRaw(fd: number, how: number): void {
  check('shutdown', fn.shutdown(fd, how));
}

export function getsockoptRaw(fd: number, level: number, name: number, value: Buffer): number {
  const len = [value.length];
  check('getsockopt', fn.getsockopt(fd, level, name, value, len));
  return len[0]!;
}

export function setsockoptRaw(fd: number, level: number, name: number, value: Buffer): void {
  check('setsockopt', fn.setsockopt(fd, level, name, value, value.length));
}

/** kexec_file_load(2) has no C library wrapper: call it by number. */
export function kexecFileLoadRaw(
  nr: number,
  kernelFd: number,
  initrdFd: number,
  cmdline: Buffer,
  flags: number,
): void {
  check(
    'kexec_file_load',
    fn.syscall(
      nr,
      'int',
      kernelFd,
      'int',
      initrdFd,
      'unsigned long',
      cmdline.length,
      'const char *',
      cmdline,
      'unsigned long',
      flags,
    ),
  );
}

/** fstatfs(2): returns f_type, the filesystem magic (first field of struct statfs on LP64). */
export function fstatfsTypeRaw(fd: number): number {
  const buf = Buffer.alloc(120);
  check('fstatfs', fn.fstatfs(fd, buf));
  return Number(buf.readBigInt64LE(0));
}

/** mmap(2) of a whole file, returning the address as a number (the mapping is never read from JS). */
export function mmapRaw(fd: number, length: number, prot: number, flags: number): number {
  const addr = Number(fn.mmap(null, length, prot, flags, fd, 0));
  if (addr === -1) throw new SysError('mmap', koffi.errno());
  return addr;
}

export function munmapRaw(addr: number, length: number): void {
  check('munmap', fn.munmap(addr, length));
}

export function pipe2Raw(flags: number): [number, number] {
  const fds = new Int32Array(2);
  check('pipe2', fn.pipe2(fds, flags));
  return [fds[0]!, fds[1]!];
}

/** vmsplice(2) of one user range [addr, addr + length) into a pipe; returns bytes queued. */
export function vmspliceRaw(fd: number, addr: number, length: number): number {
  const iov = Buffer.alloc(16);
  iov.writeBigUInt64LE(BigInt(addr), 0);
  iov.writeBigUInt64LE(BigInt(length), 8);
  return check('vmsplice', fn.vmsplice(fd, iov, 1, 0));
}

export function madviseRaw(addr: number, length: number, advice: number): void {
  check('madvise', fn.madvise(addr, length, advice));
}

/** copy_file_range(2) between explicit offsets; returns bytes copied, or -errno. */
export function copyFileRangeRaw(
  inFd: number,
  inOffset: number,
  outFd: number,
  outOffset: number,
  length: number,
): number {
  const ret = Number(fn.copy_file_range(inFd, [inOffset], outFd, [outOffset], length, 0));
  return ret < 0 ? -koffi.errno() : ret;
}

/** sendfile(2) from `inFd` at `inOffset` to `outFd`'s current position; returns bytes copied, or -errno. */
export function sendfileRaw(outFd: number, inFd: number, inOffset: number, length: number): number {
  const ret = Number(fn.sendfile(outFd, inFd, [inOffset], length));
  return ret < 0 ? -koffi.errno() : ret;
}

/** poll(2) one fd for `events`; returns revents (0 on timeout). */
export function pollOneRaw(fd: number, events: number, timeoutMs: number): number {
  const pfd = Buffer.alloc(8);
  pfd.writeInt32LE(fd, 0);
  pfd.writeInt16LE(events, 4);
  for (;;) {
    const ret = fn.poll(pfd, 1, timeoutMs);
    if (ret >= 0) return ret === 0 ? 0 : pfd.readInt16LE(6);
    const errno = koffi.errno();
    if (errno !== Errno.EINTR) throw new SysError('poll', errno);
  }
}

/** poll(2) many fds at once with a zero timeout; returns each fd's revents. */
export function pollManyRaw(fds: readonly number[], events: number): Int16Array {
  const pfds = Buffer.alloc(8 * fds.length);
  fds.forEach((fd, i) => {
    pfds.writeInt32LE(fd, 8 * i);
    pfds.writeInt16LE(events, 8 * i + 4);
  });
  // A zero timeout still returns EINTR when a signal lands while the kernel walks
  // the fds (do_poll: nothing ready and a signal pending): with a thousand fds and a
  // sampling profiler's SIGPROF, or any handled signal, that is routine, and once it
  // killed the fd holder with every session's copy in it. Ask again.
  while (fds.length > 0 && fn.poll(pfds, fds.length, 0) < 0) {
    const errno = koffi.errno();
    if (errno !== Errno.EINTR) throw new SysError('poll', errno);
    interrupted.count++;
  }
  return Int16Array.from(fds, (_fd, i) => pfds.readInt16LE(8 * i + 6));
}

/** recv(2) of one byte with MSG_PEEK|MSG_DONTWAIT: 0 means the peer closed and nothing is queued. */
export function peekRaw(fd: number): number {
  const ret = Number(fn.recv(fd, Buffer.alloc(1), 1, 0x2 | 0x40));
  return ret < 0 ? -koffi.errno() : ret;
}

export function rebootRaw(cmd: number): void {
  check('reboot', fn.reboot(cmd));
}

/**
 * Native memory for message headers: the kernel writes into it during
 * recvmsg, so it must not be a JS-managed buffer that could be reused.
 */
export interface NativeBlock {
  readonly address: bigint;
  readonly bytes: Uint8Array;
  readonly view: DataView;
}

export function allocNative(size: number): NativeBlock {
  const ptr = koffi.alloc('uint8_t', size) as unknown as bigint;
  const address = koffi.address(ptr) as bigint;
  const buffer = koffi.view(ptr, size) as ArrayBuffer;
  return { address, bytes: new Uint8Array(buffer), view: new DataView(buffer) };
}

/** Watch an fd for readiness on Node's event loop (libuv uv_poll). */
export interface FdWatcher {
  start(events: { readable?: boolean; writable?: boolean }, onReady: (ev: ReadyEvents) => void): void;
  stop(): void;
  close(): void;
  ref(): void;
  unref(): void;
}

export interface ReadyEvents {
  readonly status: number;
  readonly readable: boolean;
  readonly writable: boolean;
  readonly disconnect: boolean;
}

export function watchFd(fd: number): FdWatcher {
  // koffi calls the callback as (status, events); its typings show only (events).
  type RawCallback = (
    status: number,
    ev: { readable: boolean; writable: boolean; disconnect: boolean },
  ) => void;
  let handle: ReturnType<typeof koffi.node.poll> | null = null;
  let referenced = true;
  let current: (ev: ReadyEvents) => void = () => {};
  const dispatch: RawCallback = (status, ev) => current({ status, ...ev });
  return {
    start(events, onReady) {
      current = onReady;
      const opts = { readable: !!events.readable, writable: !!events.writable, disconnect: true };
      if (handle === null) {
        handle = koffi.node.poll(fd, opts, dispatch as unknown as (ev: unknown) => void);
        if (!referenced) handle.unref();
      } else {
        handle.start(opts, dispatch as unknown as (ev: unknown) => void);
      }
    },
    stop() {
      handle?.stop();
    },
    close() {
      handle?.close();
      handle = null;
    },
    ref() {
      referenced = true;
      handle?.ref();
    },
    unref() {
      referenced = false;
      handle?.unref();
    },
  };
}
