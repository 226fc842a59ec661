/**
 * Raw ioctl dispatch, as luo_ioctl() and luo_session_ioctl() do it.
 *
 * The request number and the caller's argument bytes arrive unchanged, and
 * are checked in the kernel's order: command number range (EINVAL), reading
 * the size field (EFAULT for a NULL pointer), exact command match (ENOTTY,
 * the VFS's translation of ENOIOCTLCMD), session direction (EINVAL), the
 * size field against the struct (EINVAL when too small, E2BIG when bytes the
 * kernel does not know are non-zero), then the operation itself. Numbers,
 * struct sizes and directions come from uapi/ioctl.ts's LUO_IOCTLS, the one
 * table of the uAPI; this file only says what each command does.
 */
import { Errno } from '../../../sys/errno.js';
import type { OwnedFd } from '../../../sys/fd.js';
import { LUO_IOCTLS, type LuoFdKind, type LuoIoctl, type LuoIoctlName } from '../../../uapi/ioctl.js';
import { SESSION_NAME_FIELD_BYTES } from '../../../uapi/structs.js';
import { FLAG_ARG_FAULT, FLAG_ARG_NULL, FLAG_FD_INVALID, FLAG_TAIL_NONZERO } from '../protocol.js';
import { KernelError } from './errors.js';
import type { EmuSession, IncomingSession, Luo, OutgoingSession } from './luo.js';

/** What an ioctl gives back: the struct to copy to the caller, and maybe a new fd for it. */
export interface IoctlOutcome {
  arg: Buffer;
  /** A session (socket end) or retrieved file to pass to the caller. */
  fd?: { file: OwnedFd; closeAfterSend: boolean };
  /** For CREATE/RETRIEVE_SESSION: the session the new fd stands for. */
  session?: EmuSession;
}

export interface RawIoctl {
  request: number;
  flags: number;
  arg: Buffer;
  /** The fd a PRESERVE_FD named, received with the request (null when absent). */
  file: OwnedFd | null;
}

/** What a command does to its target, once every check of `run` has passed. */
type Execute<T> = (target: T, arg: Buffer) => IoctlOutcome;

/** The commands of one kind of fd, in number order: luo_ioctl()'s table. */
function commandsOf(fd: LuoFdKind): LuoIoctl[] {
  return LUO_IOCTLS.filter((c) => c.fd === fd).sort((a, b) => a.nr - b.nr);
}

const DEVICE_COMMANDS = commandsOf('device');
const SESSION_COMMANDS = commandsOf('session');

/** The union ucmd_buffer is never smaller than any struct; sizes equal min sizes for every LUO struct. */
function readStruct(ioctl: RawIoctl, size: number): { arg: Buffer; userSize: number } {
  if (ioctl.flags & FLAG_ARG_NULL || ioctl.arg.length < 4) throw new KernelError(Errno.EFAULT);
  const userSize = ioctl.arg.readUInt32LE(0);
  return { arg: Buffer.alloc(size), userSize };
}

/**
 * copy_struct_from_user(): a larger struct must be zero beyond ours (E2BIG,
 * or EFAULT if the caller's memory ends first, whichever comes first, as the
 * client reports with its flags); then our part is copied (EFAULT if the
 * caller's memory ends before it), zero-extended when the caller's is smaller.
 */
function copyStruct(ioctl: RawIoctl, into: Buffer, userSize: number): void {
  const sent = ioctl.arg.length;
  if (userSize > into.length) {
    if (ioctl.arg.subarray(into.length, Math.min(sent, userSize)).some((b) => b !== 0)) {
      throw new KernelError(Errno.E2BIG);
    }
    if (userSize > sent) {
      if (ioctl.flags & FLAG_TAIL_NONZERO) throw new KernelError(Errno.E2BIG);
      if (ioctl.flags & FLAG_ARG_FAULT) throw new KernelError(Errno.EFAULT);
    }
  }
  if (Math.min(into.length, userSize) > sent) throw new KernelError(Errno.EFAULT);
  ioctl.arg.copy(into, 0, 0, Math.min(userSize, into.length));
}

/** luo_ucmd_respond(): the caller gets min(its size, ours) bytes back. */
function respond(arg: Buffer, userSize: number): Buffer {
  return arg.subarray(0, Math.min(userSize, arg.length));
}

function nameOf(arg: Buffer, offset: number): string {
  const field = arg.subarray(offset, offset + SESSION_NAME_FIELD_BYTES);
  const nul = field.indexOf(0);
  return field.subarray(0, nul < 0 ? field.length : nul).toString('latin1');
}

function nameBytes(name: string): Buffer {
  return Buffer.from(name, 'latin1');
}

function run<T>(
  commands: readonly LuoIoctl[],
  execute: Readonly<Partial<Record<LuoIoctlName, Execute<T>>>>,
  target: T,
  ioctl: RawIoctl,
  direction: 'incoming' | 'outgoing' | null,
): IoctlOutcome {
  const nr = ioctl.request & 0xff;
  const base = commands[0]!.nr;
  if (nr < base || nr - base >= commands.length) throw new KernelError(Errno.EINVAL);
  const command = commands[nr - base]!;
  const { arg, userSize } = readStruct(ioctl, command.structSize);
  if (ioctl.request >>> 0 !== command.number) throw new KernelError(Errno.ENOTTY);
  const accepts = command.direction ?? 'both';
  if (direction !== null && accepts !== 'both' && accepts !== direction) throw new KernelError(Errno.EINVAL);
  if (userSize < command.structSize) throw new KernelError(Errno.EINVAL);
  copyStruct(ioctl, arg, userSize);
  const outcome = execute[command.name]!(target, arg);
  return { ...outcome, arg: respond(outcome.arg, userSize) };
}

export function deviceIoctl(luo: Luo, ioctl: RawIoctl): IoctlOutcome {
  ioctl.file?.close();
  return run<Luo>(
    DEVICE_COMMANDS,
    {
      CREATE_SESSION: (l, arg) => {
        const name = arg.subarray(8, 8 + SESSION_NAME_FIELD_BYTES);
        const nul = name.indexOf(0);
        if (nul <= 0) throw new KernelError(Errno.EINVAL);
        return { arg, session: l.createSession(nameOf(arg, 8)) };
      },
      RETRIEVE_SESSION: (l, arg) => ({ arg, session: l.retrieveSession(nameOf(arg, 8)) }),
    },
    luo,
    ioctl,
    null,
  );
}

export function sessionIoctl(luo: Luo, session: EmuSession, ioctl: RawIoctl): IoctlOutcome {
  const direction = session.kind;
  const file = ioctl.file;
  ioctl.file = null;
  let consumed = false;
  const execute: Partial<Record<LuoIoctlName, Execute<EmuSession>>> = {
    PRESERVE_FD: (s, arg) => {
      const token = arg.readBigUInt64LE(8);
      const received = ioctl.flags & FLAG_FD_INVALID ? null : file;
      if (received === null) file?.close();
      consumed = true;
      luo.preserveFd(s as OutgoingSession, token, received);
      return { arg };
    },
    RETRIEVE_FD: (s, arg) => {
      const retrieved = luo.retrieveFd(s as IncomingSession, arg.readBigUInt64LE(8));
      return { arg, fd: { file: retrieved, closeAfterSend: false } };
    },
    FINISH: (s, arg) => {
      if (arg.readUInt32LE(4) !== 0) throw new KernelError(Errno.EINVAL);
      luo.finish(s as IncomingSession);
      return { arg };
    },
    GET_NAME: (s, arg) => {
      if (arg.readUInt32LE(4) !== 0) throw new KernelError(Errno.EINVAL);
      arg.fill(0, 8);
      nameBytes(s.name).copy(arg, 8, 0, SESSION_NAME_FIELD_BYTES - 1);
      return { arg };
    },
  };
  try {
    return run(SESSION_COMMANDS, execute, session, ioctl, direction);
  } finally {
    // The fd that came with the request is LUO's now (preserveFd keeps it or
    // closes it) or must not leak.
    if (!consumed) file?.close();
  }
}
