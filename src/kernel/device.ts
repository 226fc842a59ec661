/**
 * The device API: one interface in front of the real kernel (`/dev/liveupdate`)
 * and the emulated kernel, so that luod, the client library and the tests run
 * unchanged on both.
 *
 * Lifecycle (mirrors kernel/liveupdate/luo_session.c):
 *  - Outgoing: `createSession(name)` on the device gives a session that
 *    accepts `preserveFd(fd, token)`. The session lives as long as any fd
 *    refers to it; closing the last one before kexec unpreserves every file.
 *  - kexec: the kernel serializes every outgoing session and freezes its files.
 *  - Incoming (next kernel): `retrieveSession(name)` gives the session back;
 *    `retrieveFd(token)` returns each file; `finish()` ends the session.
 *    Closing a retrieved session is an implicit finish.
 *
 * Every method is synchronous, as the ioctls are, and throws `LuoError`
 * (src/uapi/errors.ts) carrying the kernel's errno name.
 */
import type { FdLike, OwnedFd } from '../sys/fd.js';

/** Which kernel answers: the real `/dev/liveupdate` or luokit's emulator. */
export type Backend = 'real' | 'emulated';

/** How this process obtained a session fd. */
export type SessionOrigin = 'created' | 'retrieved' | 'adopted';

export interface LiveUpdateDevice extends Disposable {
  readonly backend: Backend;
  /** The device fd; the device is opened exclusively (a second open fails EBUSY). */
  readonly fd: number;
  readonly closed: boolean;
  /** LIVEUPDATE_IOCTL_CREATE_SESSION: a new outgoing session. */
  createSession(name: string): Session;
  /** LIVEUPDATE_IOCTL_RETRIEVE_SESSION: an incoming session handed over by the previous kernel. */
  retrieveSession(name: string): Session;
  /** Release the device (sessions stay alive through their own fds). */
  close(): void;
}

export interface Session extends Disposable {
  /** The name given at create/retrieve time (or read with GET_NAME for adopted fds). */
  readonly name: string;
  readonly origin: SessionOrigin;
  readonly backend: Backend;
  /** The session fd, e.g. to pass to another process with SCM_RIGHTS. */
  readonly fd: number;
  readonly closed: boolean;
  /** LIVEUPDATE_SESSION_PRESERVE_FD: hand `fd` to the next kernel under `token`. */
  preserveFd(fd: FdLike, token: bigint): void;
  /** LIVEUPDATE_SESSION_RETRIEVE_FD: the file preserved under `token`, as a new fd. */
  retrieveFd(token: bigint): OwnedFd;
  /** LIVEUPDATE_SESSION_FINISH: done with this incoming session. */
  finish(): void;
  /** LIVEUPDATE_SESSION_GET_NAME (7.2+): the session's name as the kernel knows it. */
  getName(): string;
  /** Close this process's reference to the session fd. */
  close(): void;
}
