/**
 * AF_UNIX sockets with file descriptor passing (SCM_RIGHTS).
 *
 * Node's `net` cannot carry fds: libuv reads the bytes and drops the
 * ancillary data. luokit passes session fds and memfds between luod, VMMs and
 * the emulated kernel, so it speaks sendmsg/recvmsg itself. These are the
 * synchronous primitives; `unix-socket.ts` drives them from the event loop.
 */
import { Errno } from './errno.js';
import { SysError } from './error.js';
import { type FdLike, OwnedFd, rawFd } from './fd.js';
import {
  accept4Raw,
  allocNative,
  bindRaw,
  connectRaw,
  getsockoptRaw,
  listenRaw,
  type NativeBlock,
  recvmsgRaw,
  sendmsgRaw,
  setsockoptRaw,
  shutdownRaw,
  socketpairRaw,
  socketRaw,
} from './libc.js';

export const AF_UNIX = 1;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_SEQPACKET = 5;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;

const SOL_SOCKET = 1;
const SO_PEERCRED = 17;
const SO_RCVTIMEO = 20;
const SO_SNDTIMEO = 21;
const SCM_RIGHTS = 1;

export const MSG_TRUNC = 0x20;
export const MSG_CTRUNC = 0x8;
export const MSG_DONTWAIT = 0x40;
export const MSG_NOSIGNAL = 0x4000;
export const MSG_CMSG_CLOEXEC = 0x40000000;

/** SCM_MAX_FD in the kernel: the most fds one message can carry. */
export const MAX_FDS_PER_MESSAGE = 253;

/** sun_path is 108 bytes including the terminating NUL. */
const SUN_PATH_MAX = 107;

export type SocketType = 'stream' | 'seqpacket' | 'dgram';

function typeBits(type: SocketType): number {
  return type === 'stream' ? SOCK_STREAM : type === 'dgram' ? SOCK_DGRAM : SOCK_SEQPACKET;
}

/**
 * Encode a sockaddr_un. A path starting with '\0' is in the abstract
 * namespace (no file, gone when the socket closes).
 */
export function sockaddrUn(path: string): Buffer {
  const bytes = Buffer.from(path);
  if (bytes.length === 0 || bytes.length > SUN_PATH_MAX) {
    throw new SysError(
      'sockaddr_un',
      Errno.EINVAL,
      `unix socket path must be 1 to ${SUN_PATH_MAX} bytes, got ${bytes.length}: ${path}`,
    );
  }
  const abstract = bytes[0] === 0;
  const addr = Buffer.alloc(2 + bytes.length + (abstract ? 0 : 1));
  addr.writeUInt16LE(AF_UNIX, 0);
  bytes.copy(addr, 2);
  return addr;
}

export interface SocketOptions {
  nonBlocking?: boolean;
}

export function socket(type: SocketType, options: SocketOptions = {}): OwnedFd {
  const flags = SOCK_CLOEXEC | (options.nonBlocking ? SOCK_NONBLOCK : 0);
  return new OwnedFd(socketRaw(AF_UNIX, typeBits(type) | flags));
}

export function socketpair(type: SocketType, options: SocketOptions = {}): [OwnedFd, OwnedFd] {
  const flags = SOCK_CLOEXEC | (options.nonBlocking ? SOCK_NONBLOCK : 0);
  const [a, b] = socketpairRaw(AF_UNIX, typeBits(type) | flags);
  return [new OwnedFd(a), new OwnedFd(b)];
}

export function bind(fd: FdLike, path: string): void {
  bindRaw(rawFd(fd), sockaddrUn(path));
}

export function listen(fd: FdLike, backlog = 128): void {
  listenRaw(rawFd(fd), backlog);
}

export function connect(fd: FdLike, path: string): void {
  connectRaw(rawFd(fd), sockaddrUn(path));
}

/** accept4(); null when no connection is pending on a non-blocking socket. */
export function accept(fd: FdLike, options: SocketOptions = {}): OwnedFd | null {
  const ret = accept4Raw(rawFd(fd), SOCK_CLOEXEC | (options.nonBlocking ? SOCK_NONBLOCK : 0));
  if (ret >= 0) return new OwnedFd(ret);
  if (-ret === Errno.EAGAIN) return null;
  throw new SysError('accept4', -ret);
}

export function shutdown(fd: FdLike, how: 'read' | 'write' | 'both' = 'both'): void {
  shutdownRaw(rawFd(fd), how === 'read' ? 0 : how === 'write' ? 1 : 2);
}

export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

/** SO_PEERCRED: who is at the other end, as the kernel saw them at connect time. */
export function peerCredentials(fd: FdLike): PeerCredentials {
  const ucred = Buffer.alloc(12);
  getsockoptRaw(rawFd(fd), SOL_SOCKET, SO_PEERCRED, ucred);
  return { pid: ucred.readInt32LE(0), uid: ucred.readUInt32LE(4), gid: ucred.readUInt32LE(8) };
}

const SO_TYPE = 3;
const SO_ERROR = 4;

/** SO_ERROR: the socket's pending error (0 for none), which reading it clears. */
export function socketError(fd: FdLike): number {
  const value = Buffer.alloc(4);
  getsockoptRaw(rawFd(fd), SOL_SOCKET, SO_ERROR, value);
  return value.readInt32LE(0);
}

/** SO_TYPE: 'stream', 'seqpacket', 'dgram', or undefined for other socket types (and non-sockets throw ENOTSOCK). */
export function socketType(fd: FdLike): SocketType | undefined {
  const value = Buffer.alloc(4);
  getsockoptRaw(rawFd(fd), SOL_SOCKET, SO_TYPE, value);
  const type = value.readInt32LE(0);
  if (type === SOCK_STREAM) return 'stream';
  if (type === SOCK_SEQPACKET) return 'seqpacket';
  return type === SOCK_DGRAM ? 'dgram' : undefined;
}

/** SO_RCVTIMEO/SO_SNDTIMEO for blocking sockets: a dead peer must not hang us forever. */
export function setTimeouts(fd: FdLike, milliseconds: number): void {
  const tv = Buffer.alloc(16);
  tv.writeBigInt64LE(BigInt(Math.floor(milliseconds / 1000)), 0);
  tv.writeBigInt64LE(BigInt((milliseconds % 1000) * 1000), 8);
  setsockoptRaw(rawFd(fd), SOL_SOCKET, SO_RCVTIMEO, tv);
  setsockoptRaw(rawFd(fd), SOL_SOCKET, SO_SNDTIMEO, tv);
}

// struct msghdr (56 B), struct iovec (16 B) and struct cmsghdr (16 B header)
// on LP64 Linux (x86_64, arm64).
const MSGHDR_SIZE = 56;
const IOVEC_SIZE = 16;
const CMSG_HEADER = 16;
const CONTROL_SIZE = CMSG_HEADER + 8 * Math.ceil((MAX_FDS_PER_MESSAGE * 4) / 8);
/** Room for a destination sockaddr_un (110 bytes, rounded up). */
const NAME_SIZE = 112;
const NAME_OFFSET = MSGHDR_SIZE + IOVEC_SIZE + CONTROL_SIZE;
const HEADER_AREA = NAME_OFFSET + NAME_SIZE;

/**
 * One block of native memory holds the msghdr, its iovec, the control
 * buffer and the payload. JavaScript is single-threaded and these calls are
 * synchronous, so one block per process suffices; it grows for large sends.
 */
let arena: NativeBlock | null = null;

function arenaFor(payload: number): NativeBlock {
  const needed = HEADER_AREA + Math.max(payload, 64 * 1024);
  if (arena === null || arena.bytes.length < HEADER_AREA + payload) arena = allocNative(needed);
  return arena;
}

function prepareHeader(
  block: NativeBlock,
  payloadLength: number,
  controlLength: number,
  name: Buffer | null = null,
): void {
  const v = block.view;
  const base = block.address;
  const iovAddr = base + BigInt(MSGHDR_SIZE);
  const controlAddr = iovAddr + BigInt(IOVEC_SIZE);
  const dataAddr = base + BigInt(HEADER_AREA);
  if (name) block.bytes.set(name, NAME_OFFSET);
  v.setBigUint64(0, name ? base + BigInt(NAME_OFFSET) : 0n, true); // msg_name
  v.setUint32(8, name ? name.length : 0, true); // msg_namelen
  v.setBigUint64(16, iovAddr, true); // msg_iov
  v.setBigUint64(24, 1n, true); // msg_iovlen
  v.setBigUint64(32, controlLength ? controlAddr : 0n, true); // msg_control
  v.setBigUint64(40, BigInt(controlLength), true); // msg_controllen
  v.setInt32(48, 0, true); // msg_flags
  v.setBigUint64(MSGHDR_SIZE, dataAddr, true); // iov_base
  v.setBigUint64(MSGHDR_SIZE + 8, BigInt(payloadLength), true); // iov_len
}

/**
 * sendmsg() with fds attached. Returns the bytes sent, or -errno for
 * EAGAIN/EWOULDBLOCK (so the caller can wait for writability); other
 * errors throw. Never raises SIGPIPE.
 */
export function sendWithFds(fd: FdLike, data: Uint8Array, fds: readonly FdLike[] = []): number {
  return sendMessage(fd, data, fds, null);
}

/**
 * sendmsg() of one datagram to `address` (a path, or '\0name' for the
 * abstract namespace) on an unconnected SOCK_DGRAM socket, with fds
 * attached: what sd_pid_notify_with_fds() does with $NOTIFY_SOCKET.
 * Returns the bytes sent, or -errno for EAGAIN; other errors throw.
 */
export function sendToWithFds(
  fd: FdLike,
  address: string,
  data: Uint8Array,
  fds: readonly FdLike[] = [],
): number {
  return sendMessage(fd, data, fds, sockaddrUn(address));
}

function sendMessage(fd: FdLike, data: Uint8Array, fds: readonly FdLike[], name: Buffer | null): number {
  if (fds.length > MAX_FDS_PER_MESSAGE) {
    throw new SysError(
      'sendmsg',
      Errno.EINVAL,
      `sendmsg: at most ${MAX_FDS_PER_MESSAGE} fds per message, got ${fds.length}`,
    );
  }
  if (fds.length > 0 && data.length === 0) {
    throw new SysError('sendmsg', Errno.EINVAL, 'sendmsg: fds must travel with at least one byte of data');
  }
  const numbers = fds.map(rawFd);
  const block = arenaFor(data.length);
  const controlLength = numbers.length ? CMSG_HEADER + 8 * Math.ceil((numbers.length * 4) / 8) : 0;
  prepareHeader(block, data.length, controlLength, name);
  if (numbers.length) {
    const c = MSGHDR_SIZE + IOVEC_SIZE;
    const v = block.view;
    v.setBigUint64(c, BigInt(CMSG_HEADER + numbers.length * 4), true); // cmsg_len
    v.setInt32(c + 8, SOL_SOCKET, true);
    v.setInt32(c + 12, SCM_RIGHTS, true);
    for (const [i, n] of numbers.entries()) v.setInt32(c + CMSG_HEADER + 4 * i, n, true);
  }
  block.bytes.set(data, HEADER_AREA);
  const ret = sendmsgRaw(rawFd(fd), block.address, MSG_NOSIGNAL);
  if (ret >= 0) return ret;
  if (-ret === Errno.EAGAIN) return ret;
  throw new SysError('sendmsg', -ret);
}

export interface Received {
  /** Bytes read; empty with `eof` when the peer closed (stream) or sent nothing. */
  data: Buffer;
  /** fds that arrived with these bytes, already owned (close-on-exec). */
  fds: OwnedFd[];
  /** The peer closed its end. */
  eof: boolean;
  /** A datagram longer than `maxBytes` was cut (seqpacket only). */
  truncated: boolean;
  /** The kernel dropped fds because the control buffer was full. */
  fdsTruncated: boolean;
}

/**
 * recvmsg() of up to `maxBytes`, taking any fds that came with them.
 * Returns null on EAGAIN (nothing to read on a non-blocking socket).
 */
export function receiveWithFds(fd: FdLike, maxBytes = 64 * 1024): Received | null {
  const block = arenaFor(maxBytes);
  prepareHeader(block, maxBytes, CONTROL_SIZE);
  const ret = recvmsgRaw(rawFd(fd), block.address, MSG_CMSG_CLOEXEC);
  if (ret < 0) {
    if (-ret === Errno.EAGAIN) return null;
    throw new SysError('recvmsg', -ret);
  }
  const v = block.view;
  const flags = v.getInt32(48, true);
  const controlLength = Number(v.getBigUint64(40, true));
  const fds: OwnedFd[] = [];
  let offset = MSGHDR_SIZE + IOVEC_SIZE;
  const end = offset + controlLength;
  while (offset + CMSG_HEADER <= end) {
    const len = Number(v.getBigUint64(offset, true));
    if (len < CMSG_HEADER) break;
    const level = v.getInt32(offset + 8, true);
    const type = v.getInt32(offset + 12, true);
    if (level === SOL_SOCKET && type === SCM_RIGHTS) {
      const count = Math.floor((len - CMSG_HEADER) / 4);
      for (let i = 0; i < count; i++) fds.push(new OwnedFd(v.getInt32(offset + CMSG_HEADER + 4 * i, true)));
    }
    offset += 8 * Math.ceil(len / 8);
  }
  const data = Buffer.from(block.bytes.subarray(HEADER_AREA, HEADER_AREA + ret));
  return {
    data,
    fds,
    eof: ret === 0 && fds.length === 0,
    truncated: (flags & MSG_TRUNC) !== 0,
    fdsTruncated: (flags & MSG_CTRUNC) !== 0,
  };
}
