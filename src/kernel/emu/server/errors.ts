/** An errno the emulated kernel returns to the caller, as `return -EBUSY;` does in the kernel. */
import { errnoName } from '../../../sys/errno.js';

export class KernelError extends Error {
  readonly errno: number;

  constructor(errno: number, message?: string) {
    super(message ?? errnoName(errno));
    this.name = 'KernelError';
    this.errno = errno;
  }
}
