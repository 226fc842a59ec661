/**
 * The kernel's rules for session names and file tokens, checked before an ioctl is sent
 * so a mistake is reported with what is wrong rather than a bare EINVAL.
 *
 * A session name goes into a 64-byte field that must hold a NUL, so it is 1..63 bytes of
 * UTF-8 (bytes, not characters: "é" counts 2). The kernel compares names byte for byte.
 * A token is any u64; JavaScript numbers are accepted only while they are exact.
 */

import { Errno } from '../sys/errno.js';
import { LuoError, type LuoOperation } from './errors.js';
import { SESSION_NAME_FIELD_BYTES } from './structs.js';

/** Longest session name in bytes: the field minus its terminating NUL. */
export const SESSION_NAME_MAX_BYTES = SESSION_NAME_FIELD_BYTES - 1;

export const TOKEN_MAX = (1n << 64n) - 1n;

/** Matches only unpaired surrogates, which UTF-8 cannot carry (they would become U+FFFD). */
const LONE_SURROGATE = /\p{Cs}/u;

/** Why CREATE_SESSION would refuse this name, or undefined if it is acceptable. */
export function sessionNameProblem(name: unknown): string | undefined {
  if (typeof name !== 'string') return `session name must be a string, got ${typeof name}`;
  if (name.length === 0) return 'session name is empty';
  if (name.includes('\0')) return 'session name contains a NUL byte';
  if (LONE_SURROGATE.test(name)) return 'session name is not valid Unicode (it has an unpaired surrogate)';
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes > SESSION_NAME_MAX_BYTES) {
    return `session name is ${bytes} bytes; the kernel allows at most ${SESSION_NAME_MAX_BYTES}`;
  }
  return undefined;
}

/** The name itself if the kernel would accept it; otherwise a LuoError EINVAL saying why. */
export function checkSessionName(name: unknown, operation: LuoOperation = 'CREATE_SESSION'): string {
  const problem = sessionNameProblem(name);
  if (problem !== undefined) throw new LuoError(operation, Errno.EINVAL, problem);
  return name as string;
}

/**
 * A token as the kernel's u64. Takes a bigint in [0, 2^64-1] or a non-negative safe
 * integer; a larger number has already lost precision, so it must come as a bigint.
 */
export function toToken(value: unknown, operation: LuoOperation = 'PRESERVE_FD'): bigint {
  const problem = tokenProblem(value);
  if (problem !== undefined) {
    throw new LuoError(operation, Errno.EINVAL, `token must be an unsigned 64-bit integer; ${problem}`);
  }
  return BigInt(value as bigint | number);
}

function tokenProblem(value: unknown): string | undefined {
  if (typeof value === 'bigint') {
    return value < 0n || value > TOKEN_MAX ? `got ${value}` : undefined;
  }
  if (typeof value !== 'number') return `got ${value === null ? 'null' : typeof value}`;
  if (Number.isSafeInteger(value)) return value < 0 ? `got ${value}` : undefined;
  if (Number.isInteger(value) && value > 0) {
    return `${value} is above Number.MAX_SAFE_INTEGER and may have lost precision; pass it as a bigint`;
  }
  return `got ${value}`;
}
