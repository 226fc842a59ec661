import { errnoName, errnoNumber, errnoText } from './errno.js';

/**
 * The one error shape luokit throws: an errno-style `code` ('EBUSY') and a
 * sentence. Every error a layer makes is one of these (or a subclass), built
 * with its code, so no code is patched onto an error after construction, and
 * anything that reports an error reads the code with errorCode().
 */
export class CodedError extends Error {
  readonly code: string;

  constructor(code: string, message: string) {
    super(message);
    this.name = 'CodedError';
    this.code = code;
  }
}

/**
 * The errno-style code of any thrown value (a CodedError, a Node fs error, an
 * error reply's body): its `code` when that is a non-empty string, else `fallback`.
 */
export function errorCode(err: unknown, fallback = 'EIO'): string {
  const code = (err as { code?: unknown } | null | undefined)?.code;
  return typeof code === 'string' && code !== '' ? code : fallback;
}

/**
 * A failed system call. `code` is the errno name (`EBADF`), `errno` its number,
 * `syscall` what was attempted. Raw koffi and Node errors are translated into
 * this class at the edge of `src/sys`, so nothing above it sees them.
 */
export class SysError extends CodedError {
  readonly errno: number;
  readonly syscall: string;
  /** The caller's own account of the failure, when it gave one (instead of the C library's text). */
  readonly detail: string | undefined;

  constructor(syscall: string, errno: number, message?: string) {
    super(errnoName(errno), message ?? `${syscall}: ${errnoName(errno)} (${errnoText(errno)})`);
    this.detail = message;
    this.name = 'SysError';
    this.errno = errno;
    this.syscall = syscall;
  }
}

/** Translate an error thrown by Node's `fs` (code 'EBADF', errno -9) into a SysError. */
export function fromNodeError(syscall: string, err: unknown): SysError {
  if (err instanceof SysError) return err;
  const e = err as NodeJS.ErrnoException;
  const errno = typeof e?.errno === 'number' ? Math.abs(e.errno) : (errnoNumber(String(e?.code)) ?? 5);
  return new SysError(syscall, errno);
}
