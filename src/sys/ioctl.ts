/** ioctl(2) with a struct argument. */
import { ioctlRaw } from './libc.js';

/**
 * Issue `request` on `fd`; the kernel reads and writes `arg` in place.
 * `request` is the full 32-bit command number; null passes a NULL pointer.
 */
export function ioctl(fd: number, request: number, arg: Buffer | null): number {
  return ioctlRaw(fd, request >>> 0, arg);
}
