/**
 * The device API implemented once, over any IoctlTransport.
 *
 * Arguments are validated here before any kernel sees them (a name the
 * kernel would refuse, a token that is not a u64, a closed fd), and every
 * failure is a LuoError carrying the kernel's errno and a sentence in LUO
 * terms. The argument structs are encoded with the codecs of `src/uapi`,
 * exactly as a C program would lay them out.
 */
import { Errno } from '../sys/errno.js';
import { errorCode, SysError } from '../sys/error.js';
import { type FdLike, OwnedFd, rawFd } from '../sys/fd.js';
import { isOpen } from '../sys/file.js';
import { LuoError, luoError } from '../uapi/errors.js';
import {
  LIVEUPDATE_IOCTL_CREATE_SESSION,
  LIVEUPDATE_IOCTL_RETRIEVE_SESSION,
  LIVEUPDATE_SESSION_FINISH,
  LIVEUPDATE_SESSION_GET_NAME,
  LIVEUPDATE_SESSION_PRESERVE_FD,
  LIVEUPDATE_SESSION_RETRIEVE_FD,
  type LuoIoctlName,
} from '../uapi/ioctl.js';
import { checkSessionName, sessionNameProblem, toToken } from '../uapi/names.js';
import {
  decodeFdArg,
  decodeGetNameArg,
  decodeSessionArg,
  encodeFdArg,
  encodeFinishArg,
  encodeGetNameArg,
  encodeSessionArg,
} from '../uapi/structs.js';
import type { Backend, LiveUpdateDevice, Session, SessionOrigin } from './device.js';
import type { IoctlTransport } from './transport.js';

/** Run one ioctl, turning a failure into a LuoError for `operation`. */
function call(
  transport: IoctlTransport,
  operation: LuoIoctlName,
  fd: number,
  request: number,
  arg: Buffer,
): number {
  try {
    return transport.ioctl(fd, request, arg);
  } catch (err) {
    if (err instanceof SysError && !(err instanceof LuoError))
      throw luoError(operation, err.errno, err.detail);
    throw err;
  }
}

function closedError(operation: string, what: string): LuoError {
  return luoError(operation, Errno.EBADF, `${what} is already closed`);
}

export class LuoDevice implements LiveUpdateDevice {
  readonly backend: Backend;
  readonly #transport: IoctlTransport;
  readonly #fd: OwnedFd;

  constructor(transport: IoctlTransport, fd: OwnedFd) {
    this.backend = transport.backend;
    this.#transport = transport;
    this.#fd = fd;
  }

  get fd(): number {
    return this.#fd.fd;
  }

  get closed(): boolean {
    return this.#fd.closed;
  }

  createSession(name: string): Session {
    checkSessionName(name, 'CREATE_SESSION');
    return this.#open('CREATE_SESSION', LIVEUPDATE_IOCTL_CREATE_SESSION, name, 'created');
  }

  retrieveSession(name: string): Session {
    // The kernel does not validate names here: one it could never have
    // preserved is simply not found.
    const problem = sessionNameProblem(name);
    if (problem !== undefined) throw luoError('RETRIEVE_SESSION', Errno.ENOENT, problem);
    return this.#open('RETRIEVE_SESSION', LIVEUPDATE_IOCTL_RETRIEVE_SESSION, name, 'retrieved');
  }

  #open(operation: LuoIoctlName, request: number, name: string, origin: SessionOrigin): Session {
    if (this.#fd.closed) throw closedError(operation, 'the live update device');
    const arg = encodeSessionArg({ name });
    call(this.#transport, operation, this.#fd.fd, request, arg);
    const session = new OwnedFd(decodeSessionArg(arg).fd);
    return new LuoSession(this.#transport, session, name, origin);
  }

  close(): void {
    this.#fd.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

export class LuoSession implements Session {
  readonly name: string;
  readonly origin: SessionOrigin;
  readonly backend: Backend;
  readonly #transport: IoctlTransport;
  readonly #fd: OwnedFd;

  constructor(transport: IoctlTransport, fd: OwnedFd, name: string, origin: SessionOrigin) {
    this.backend = transport.backend;
    this.#transport = transport;
    this.#fd = fd;
    this.name = name;
    this.origin = origin;
  }

  /**
   * Wrap a session fd obtained some other way (SCM_RIGHTS, fd store), reading
   * its name from the kernel. Kernels before 7.2 lack GET_NAME: then
   * `knownName` (what the sender called it), when given, stands instead.
   * `trustName`: `knownName` is the caller's own, taken without asking.
   */
  static adopt(transport: IoctlTransport, fd: OwnedFd, knownName?: string, trustName = false): LuoSession {
    if (trustName && knownName !== undefined) return new LuoSession(transport, fd, knownName, 'adopted');
    const probe = new LuoSession(transport, fd, '', 'adopted');
    try {
      return new LuoSession(transport, fd, probe.getName(), 'adopted');
    } catch (err) {
      if (knownName === undefined || errorCode(err) === 'EBADF') throw err;
      return new LuoSession(transport, fd, knownName, 'adopted');
    }
  }

  get fd(): number {
    return this.#fd.fd;
  }

  get closed(): boolean {
    return this.#fd.closed;
  }

  #sessionFd(operation: string): number {
    if (this.#fd.closed) throw closedError(operation, `session ${JSON.stringify(this.name)}`);
    return this.#fd.fd;
  }

  preserveFd(fd: FdLike, token: bigint): void {
    const session = this.#sessionFd('PRESERVE_FD');
    const value = toToken(token, 'PRESERVE_FD');
    let file: number;
    try {
      file = rawFd(fd);
    } catch {
      throw luoError('PRESERVE_FD', Errno.EBADF, `${String(fd)} is not an open file descriptor`);
    }
    if (!isOpen(file)) throw luoError('PRESERVE_FD', Errno.EBADF, `fd ${file} is not open in this process`);
    const arg = encodeFdArg({ fd: file, token: value });
    call(this.#transport, 'PRESERVE_FD', session, LIVEUPDATE_SESSION_PRESERVE_FD, arg);
  }

  retrieveFd(token: bigint): OwnedFd {
    const session = this.#sessionFd('RETRIEVE_FD');
    const arg = encodeFdArg({ token: toToken(token, 'RETRIEVE_FD') });
    call(this.#transport, 'RETRIEVE_FD', session, LIVEUPDATE_SESSION_RETRIEVE_FD, arg);
    return new OwnedFd(decodeFdArg(arg).fd);
  }

  finish(): void {
    const session = this.#sessionFd('FINISH');
    call(this.#transport, 'FINISH', session, LIVEUPDATE_SESSION_FINISH, encodeFinishArg());
  }

  getName(): string {
    const session = this.#sessionFd('GET_NAME');
    const arg = encodeGetNameArg();
    call(this.#transport, 'GET_NAME', session, LIVEUPDATE_SESSION_GET_NAME, arg);
    return decodeGetNameArg(arg).name;
  }

  close(): void {
    this.#fd.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
