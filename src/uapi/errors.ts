/**
 * Errors from /dev/liveupdate in LUO's terms.
 *
 * A bare `EINVAL` from an ioctl tells an operator nothing; the same errno can mean a
 * wrong session direction, a bad name or an unsupported command. A LuoError keeps the
 * errno (it is still a SysError, so generic handling works) and adds the LUO operation
 * and a sentence saying what the kernel objected to.
 */

import { errnoName, errnoText } from '../sys/errno.js';
import { SysError } from '../sys/error.js';
import { explain } from './explanations.js';
import { isLuoIoctlName } from './ioctl.js';

export type { LuoOperation } from './explanations.js';

export class LuoError extends SysError {
  /** The LUO operation, e.g. 'PRESERVE_FD', 'OPEN', or a caller's own name for a step. */
  readonly operation: string;
  /** What went wrong, as a sentence in LUO terms. */
  readonly reason: string;

  /** `syscall` defaults to what the operation issues: open(2) for OPEN, ioctl(2) for commands. */
  constructor(operation: string, errno: number, reason: string, syscall = syscallOf(operation)) {
    super(syscall, errno, `${operation}: ${errnoName(errno)}: ${reason}`);
    this.name = 'LuoError';
    this.operation = operation;
    this.reason = reason;
  }
}

/**
 * A LuoError for `errno` from `operation`, explained from what the kernel source says
 * that errno means there; errnos LUO does not document keep the C library's text.
 * `detail` adds the caller's context, such as which fd or token was involved.
 */
export function luoError(operation: string, errno: number, detail?: string): LuoError {
  const explanation = explain(operation, errnoName(errno)) ?? lowerFirst(errnoText(errno));
  const reason = detail === undefined ? explanation : `${explanation}; ${detail}`;
  return new LuoError(operation, errno, reason);
}

function syscallOf(operation: string): string {
  if (operation === 'OPEN') return 'open';
  return isLuoIoctlName(operation) ? 'ioctl' : operation;
}

function lowerFirst(text: string): string {
  return text.charAt(0).toLowerCase() + text.slice(1);
}
