/**
 * The client side of the emulator protocol: ioctl(2) semantics over a
 * SOCK_SEQPACKET socket, synchronous as the real ioctl is.
 *
 * The caller's struct goes out as bytes; the reply's struct comes back into
 * the caller's buffer in place, with the number of any fd the emulator
 * passed written into its `fd` field, exactly as the kernel would have
 * written the number of an fd it installed.
 */
import { Errno } from '../../sys/errno.js';
import { SysError } from '../../sys/error.js';
import { OwnedFd } from '../../sys/fd.js';
import { isOpen, setCloseOnExec } from '../../sys/file.js';
import { waitReadable } from '../../sys/mm.js';
import { receiveWithFds, sendWithFds } from '../../sys/socket.js';
import { LIVEUPDATE_SESSION_PRESERVE_FD } from '../../uapi/ioctl.js';
import type { IoctlTransport } from '../transport.js';
import {
  decodeReply,
  encodeRequest,
  FLAG_ARG_FAULT,
  FLAG_ARG_NULL,
  FLAG_FD_INVALID,
  FLAG_TAIL_NONZERO,
  KIND_IOCTL,
  MAX_ARG_BYTES,
  ProtocolError,
  type Reply,
} from './protocol.js';

/** How long an ioctl may wait for the emulator before failing with ETIMEDOUT. */
const REPLY_TIMEOUT_MS = 60_000;

/** The offset of `s32 fd` in every LUO struct that carries one. */
const FD_FIELD = 4;

/** Send one request and wait for its reply; a vanished emulator is EIO, as a dead kernel object would be. */
export function exchange(fd: number, message: Buffer, attach: number[]): { reply: Reply; fd: number | null } {
  let sent: number;
  try {
    sent = sendWithFds(fd, message, attach);
  } catch (err) {
    throw gone(err);
  }
  if (sent < 0) {
    // A non-blocking socket whose buffer is full: the emulator is not reading.
    throw new SysError('ioctl', Errno.EIO, 'ioctl: the emulated kernel is not accepting requests');
  }
  for (;;) {
    let got: ReturnType<typeof receiveWithFds>;
    try {
      got = receiveWithFds(fd, MAX_ARG_BYTES + 64);
    } catch (err) {
      throw gone(err);
    }
    if (got === null) {
      // EAGAIN: a non-blocking socket, or SO_RCVTIMEO expired. Wait for the reply.
      if (!waitReadable(fd, REPLY_TIMEOUT_MS)) {
        throw new SysError('ioctl', Errno.ETIMEDOUT, 'ioctl: the emulated kernel did not answer');
      }
      continue;
    }
    if (got.eof) throw gone(null);
    if (got.fds.length > 1) {
      for (const f of got.fds) f.close();
      throw new SysError('ioctl', Errno.EIO, 'ioctl: the emulated kernel sent more than one fd');
    }
    try {
      return { reply: decodeReply(got.data), fd: got.fds[0]?.release() ?? null };
    } catch (err) {
      for (const f of got.fds) f.close();
      if (err instanceof ProtocolError) throw new SysError('ioctl', Errno.EIO, `ioctl: ${err.message}`);
      throw err;
    }
  }
}

function gone(err: unknown): SysError {
  const detail = err instanceof SysError ? ` (${err.code})` : '';
  return new SysError(
    'ioctl',
    Errno.EIO,
    `ioctl: the emulated kernel behind this fd is gone (stopped, or an emulated kexec happened)${detail}`,
  );
}

/** The argument bytes as the kernel would read them from the caller's memory. */
function outgoingArgument(
  request: number,
  arg: Buffer | null,
): { bytes: Buffer; flags: number; attach: number[] } {
  if (arg === null || arg.length < 4) return { bytes: Buffer.alloc(0), flags: FLAG_ARG_NULL, attach: [] };
  const userSize = arg.readUInt32LE(0);
  const sent = Math.max(4, Math.min(userSize, MAX_ARG_BYTES, arg.length));
  let flags = 0;
  if (userSize > sent) {
    // What lies beyond the bytes sent: non-zero bytes first, or the end of the caller's memory.
    if (arg.subarray(sent, Math.min(userSize, arg.length)).some((b) => b !== 0)) flags |= FLAG_TAIL_NONZERO;
    else if (userSize > arg.length) flags |= FLAG_ARG_FAULT;
  }
  const attach: number[] = [];
  if (request >>> 0 === LIVEUPDATE_SESSION_PRESERVE_FD && arg.length >= FD_FIELD + 4) {
    const fd = arg.readInt32LE(FD_FIELD);
    if (fd >= 0 && isOpen(fd)) attach.push(fd);
    else flags |= FLAG_FD_INVALID;
  }
  return { bytes: arg.subarray(0, sent), flags, attach };
}

/** VFS-generic ioctls the kernel answers before any driver sees them: FIOCLEX, FIONCLEX. */
const FIONCLEX = 0x5450;
const FIOCLEX = 0x5451;

export const emulatedTransport: IoctlTransport = {
  backend: 'emulated',
  ioctl(fd, request, arg) {
    if (request >>> 0 === FIOCLEX || request >>> 0 === FIONCLEX) {
      setCloseOnExec(fd, request >>> 0 === FIOCLEX);
      return 0;
    }
    const { bytes, flags, attach } = outgoingArgument(request, arg);
    const message = encodeRequest({ kind: KIND_IOCTL, request, flags, arg: bytes });
    const { reply, fd: received } = exchange(fd, message, attach);
    if (reply.result < 0) {
      if (received !== null) new OwnedFd(received).close(); // errors carry no fd; never leak one
      throw new SysError('ioctl', -reply.result);
    }
    if (arg !== null) {
      const back = Buffer.from(reply.arg);
      if (received !== null && back.length >= FD_FIELD + 4) back.writeInt32LE(received, FD_FIELD);
      back.copy(arg, 0, 0, Math.min(back.length, arg.length, arg.length >= 4 ? arg.readUInt32LE(0) : 0));
    }
    return reply.result;
  },
};
