import { errnoName, errnoNumber, errnoText } from './errno.js';

/**
 * A failed system call. `code` is the errno name (`EBADF`), `errno` its number,
 * `syscall` what was attempted. Raw koffi and Node errors are translated into
 * this class at the edge of `src/sys`, so nothing above it sees them.
 */
export class SysError extends Error {
  readonly code: string;
  readonly errno: number;
  readonly syscall: string;
  /** The caller's own account of the failure, when it gave one (instead of the C library's text). */
  readonly detail: string | undefined;

  constructor(syscall: string, errno: number, message?: string) {
    super(message ?? `${syscall}: ${errnoName(errno)} (${errnoText(errno)})`);
    this.detail = message;
    this.name = 'SysError';
    this.code = errnoName(errno);
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
