/**
 * Byte codecs for the argument structs of the /dev/liveupdate ioctls
 * (include/uapi/linux/liveupdate.h), in the little-endian layout of x86_64 and arm64.
 *
 * Every struct opens with `u32 size`: the kernel reads it first and refuses anything
 * smaller than its own struct (EINVAL), so encoders fill in the real size unless a test
 * overrides it on purpose. Two layouts serve two ioctls each: CREATE_SESSION and
 * RETRIEVE_SESSION share the session struct, PRESERVE_FD and RETRIEVE_FD the fd struct.
 * The codecs only move bytes; the kernel's rules on names and tokens live in names.ts.
 */

/** Bytes in a session name field, the terminating NUL included (LIVEUPDATE_SESSION_NAME_LENGTH). */
export const SESSION_NAME_FIELD_BYTES = 64;

/** `{u32 size; s32 fd (out); u8 name[64]}`: CREATE_SESSION and RETRIEVE_SESSION. */
export const SESSION_ARG_SIZE = 72;
/** `{u32 size; s32 fd; u64 token}`: PRESERVE_FD (fd in) and RETRIEVE_FD (fd out). */
export const FD_ARG_SIZE = 16;
/** `{u32 size; u32 reserved}`: SESSION_FINISH. */
export const FINISH_ARG_SIZE = 8;
/** `{u32 size; u32 reserved; u8 name[64] (out)}`: SESSION_GET_NAME. */
export const GET_NAME_ARG_SIZE = 72;

const SIZE_OFFSET = 0;
const FD_OFFSET = 4;
const RESERVED_OFFSET = 4;
const TOKEN_OFFSET = 8;
const NAME_OFFSET = 8;

const U32_MAX = 0xffff_ffff;
const U64_MAX = (1n << 64n) - 1n;

export interface SessionArg {
  size: number;
  fd: number;
  name: string;
}

export interface FdArg {
  size: number;
  fd: number;
  token: bigint;
}

export interface FinishArg {
  size: number;
  reserved: number;
}

export interface GetNameArg {
  size: number;
  reserved: number;
  name: string;
}

/**
 * A name given as text is written as UTF-8; given as bytes it is written as is, so tests
 * can hand the kernel what no valid name produces (a full 64 bytes with no NUL).
 */
export type NameInput = string | Uint8Array;

export function encodeSessionArg(arg: { name: NameInput; fd?: number; size?: number }): Buffer {
  const buf = Buffer.alloc(SESSION_ARG_SIZE);
  const view = viewOf(buf);
  view.setUint32(SIZE_OFFSET, checkU32('size', arg.size ?? SESSION_ARG_SIZE), true);
  view.setInt32(FD_OFFSET, checkS32('fd', arg.fd ?? 0), true);
  writeName(buf, arg.name);
  return buf;
}

export function decodeSessionArg(bytes: Uint8Array): SessionArg {
  const view = viewOfAtLeast(bytes, SESSION_ARG_SIZE, 'session');
  return {
    size: view.getUint32(SIZE_OFFSET, true),
    fd: view.getInt32(FD_OFFSET, true),
    name: readName(bytes),
  };
}

export function encodeFdArg(arg: { token: bigint; fd?: number; size?: number }): Buffer {
  const buf = Buffer.alloc(FD_ARG_SIZE);
  const view = viewOf(buf);
  view.setUint32(SIZE_OFFSET, checkU32('size', arg.size ?? FD_ARG_SIZE), true);
  view.setInt32(FD_OFFSET, checkS32('fd', arg.fd ?? 0), true);
  view.setBigUint64(TOKEN_OFFSET, checkU64('token', arg.token), true);
  return buf;
}

export function decodeFdArg(bytes: Uint8Array): FdArg {
  const view = viewOfAtLeast(bytes, FD_ARG_SIZE, 'fd');
  return {
    size: view.getUint32(SIZE_OFFSET, true),
    fd: view.getInt32(FD_OFFSET, true),
    token: view.getBigUint64(TOKEN_OFFSET, true),
  };
}

export function encodeFinishArg(arg: { reserved?: number; size?: number } = {}): Buffer {
  const buf = Buffer.alloc(FINISH_ARG_SIZE);
  const view = viewOf(buf);
  view.setUint32(SIZE_OFFSET, checkU32('size', arg.size ?? FINISH_ARG_SIZE), true);
  view.setUint32(RESERVED_OFFSET, checkU32('reserved', arg.reserved ?? 0), true);
  return buf;
}

export function decodeFinishArg(bytes: Uint8Array): FinishArg {
  const view = viewOfAtLeast(bytes, FINISH_ARG_SIZE, 'finish');
  return {
    size: view.getUint32(SIZE_OFFSET, true),
    reserved: view.getUint32(RESERVED_OFFSET, true),
  };
}

/** The caller sends an empty name; the kernel's reply (or an emulator's) carries one. */
export function encodeGetNameArg(arg: { name?: NameInput; reserved?: number; size?: number } = {}): Buffer {
  const buf = Buffer.alloc(GET_NAME_ARG_SIZE);
  const view = viewOf(buf);
  view.setUint32(SIZE_OFFSET, checkU32('size', arg.size ?? GET_NAME_ARG_SIZE), true);
  view.setUint32(RESERVED_OFFSET, checkU32('reserved', arg.reserved ?? 0), true);
  writeName(buf, arg.name ?? '');
  return buf;
}

export function decodeGetNameArg(bytes: Uint8Array): GetNameArg {
  const view = viewOfAtLeast(bytes, GET_NAME_ARG_SIZE, 'get-name');
  return {
    size: view.getUint32(SIZE_OFFSET, true),
    reserved: view.getUint32(RESERVED_OFFSET, true),
    name: readName(bytes),
  };
}

function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function viewOfAtLeast(bytes: Uint8Array, size: number, what: string): DataView {
  if (bytes.byteLength < size) {
    throw new RangeError(`${what} struct needs ${size} bytes, got ${bytes.byteLength}`);
  }
  return viewOf(bytes);
}

/** Copies the name into the 64-byte field; the zero-filled rest supplies the NUL. */
function writeName(buf: Buffer, name: NameInput): void {
  const bytes = typeof name === 'string' ? Buffer.from(name, 'utf8') : name;
  if (bytes.byteLength > SESSION_NAME_FIELD_BYTES) {
    throw new RangeError(
      `name is ${bytes.byteLength} bytes; the name field holds ${SESSION_NAME_FIELD_BYTES}`,
    );
  }
  buf.set(bytes, NAME_OFFSET);
}

/** The name field up to its first NUL (or all 64 bytes if there is none), as UTF-8. */
function readName(bytes: Uint8Array): string {
  const field = bytes.subarray(NAME_OFFSET, NAME_OFFSET + SESSION_NAME_FIELD_BYTES);
  const nul = field.indexOf(0);
  return Buffer.from(field.buffer, field.byteOffset, nul === -1 ? field.byteLength : nul).toString('utf8');
}

/** DataView setters wrap out-of-range values silently; a codec must not. */
function checkU32(field: string, value: number): number {
  if (!Number.isInteger(value) || value < 0 || value > U32_MAX) {
    throw new RangeError(`${field} must be an unsigned 32-bit integer, got ${value}`);
  }
  return value;
}

function checkS32(field: string, value: number): number {
  if (!Number.isInteger(value) || value < -0x8000_0000 || value > 0x7fff_ffff) {
    throw new RangeError(`${field} must be a signed 32-bit integer, got ${value}`);
  }
  return value;
}

function checkU64(field: string, value: bigint): bigint {
  if (typeof value !== 'bigint' || value < 0n || value > U64_MAX) {
    throw new RangeError(`${field} must be an unsigned 64-bit bigint, got ${String(value)}`);
  }
  return value;
}
