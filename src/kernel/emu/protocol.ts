/**
 * The emulated kernel's wire format (docs/emulator.md, "Wire protocol").
 *
 * One request, one reply, per ioctl, on SOCK_SEQPACKET sockets. The request
 * carries the caller's argument bytes exactly as they sit in its memory, so
 * the emulator can apply the kernel's own checks (size field, reserved bytes,
 * NULL pointer) to the same bytes. The C preload shim speaks this too.
 */
export const MAGIC = 0x454f554c;
export const PROTOCOL_VERSION = 1;

export const KIND_IOCTL = 1;
export const KIND_FROZEN_QUERY = 2;
/** On query.sock: release every connection whose last reference is closed, then answer (the shim's close()). */
export const KIND_SYNC = 3;

export const FLAG_ARG_NULL = 0x1;
export const FLAG_TAIL_NONZERO = 0x2;
export const FLAG_FD_INVALID = 0x4;
/** Reading the caller's struct faulted (after the bytes sent) before any non-zero byte was seen. */
export const FLAG_ARG_FAULT = 0x8;

/** The most argument bytes one message carries (larger structs: the tail is summarised by a flag). */
export const MAX_ARG_BYTES = 4096;

const REQUEST_HEADER = 20;
const REPLY_HEADER = 16;

export interface Request {
  kind: number;
  request: number;
  flags: number;
  arg: Buffer;
}

export interface Reply {
  kind: number;
  result: number;
  arg: Buffer;
}

export class ProtocolError extends Error {
  override name = 'ProtocolError';
}

export function encodeRequest(req: Request): Buffer {
  const buf = Buffer.alloc(REQUEST_HEADER + req.arg.length);
  buf.writeUInt32LE(MAGIC, 0);
  buf.writeUInt16LE(PROTOCOL_VERSION, 4);
  buf.writeUInt16LE(req.kind, 6);
  buf.writeUInt32LE(req.request >>> 0, 8);
  buf.writeUInt32LE(req.flags >>> 0, 12);
  buf.writeUInt32LE(req.arg.length, 16);
  req.arg.copy(buf, REQUEST_HEADER);
  return buf;
}

export function decodeRequest(msg: Buffer): Request {
  if (msg.length < REQUEST_HEADER)
    throw new ProtocolError(`request of ${msg.length} bytes is shorter than its header`);
  checkHeader(msg);
  const argLength = msg.readUInt32LE(16);
  if (argLength > MAX_ARG_BYTES || REQUEST_HEADER + argLength !== msg.length) {
    throw new ProtocolError(
      `request says ${argLength} argument bytes but carries ${msg.length - REQUEST_HEADER}`,
    );
  }
  return {
    kind: msg.readUInt16LE(6),
    request: msg.readUInt32LE(8),
    flags: msg.readUInt32LE(12),
    arg: msg.subarray(REQUEST_HEADER),
  };
}

export function encodeReply(reply: Reply): Buffer {
  const buf = Buffer.alloc(REPLY_HEADER + reply.arg.length);
  buf.writeUInt32LE(MAGIC, 0);
  buf.writeUInt16LE(PROTOCOL_VERSION, 4);
  buf.writeUInt16LE(reply.kind, 6);
  buf.writeInt32LE(reply.result, 8);
  buf.writeUInt32LE(reply.arg.length, 12);
  reply.arg.copy(buf, REPLY_HEADER);
  return buf;
}

export function decodeReply(msg: Buffer): Reply {
  if (msg.length < REPLY_HEADER)
    throw new ProtocolError(`reply of ${msg.length} bytes is shorter than its header`);
  checkHeader(msg);
  const argLength = msg.readUInt32LE(12);
  if (REPLY_HEADER + argLength !== msg.length) {
    throw new ProtocolError(
      `reply says ${argLength} argument bytes but carries ${msg.length - REPLY_HEADER}`,
    );
  }
  return { kind: msg.readUInt16LE(6), result: msg.readInt32LE(8), arg: msg.subarray(REPLY_HEADER) };
}

function checkHeader(msg: Buffer): void {
  const magic = msg.readUInt32LE(0);
  if (magic !== MAGIC) throw new ProtocolError(`bad magic 0x${magic.toString(16)}`);
  const version = msg.readUInt16LE(4);
  if (version !== PROTOCOL_VERSION) throw new ProtocolError(`unsupported protocol version ${version}`);
}
