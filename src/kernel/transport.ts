/**
 * How an ioctl reaches a kernel.
 *
 * The real kernel takes ioctl(2) on `/dev/liveupdate` and session fds; the
 * emulated kernel takes the same request number and the same argument bytes
 * over a socket. Everything that encodes, checks and decodes LUO arguments
 * (`luo-device.ts`) sits above this one call, so it is the same code on both
 * kernels and a difference between them can only come from the kernel side.
 */
export interface IoctlTransport {
  readonly backend: 'real' | 'emulated';
  /**
   * Issue `request` on `fd` with `arg` (null passes a NULL pointer). As with
   * ioctl(2), output fields are written back into `arg` in place, including
   * the numbers of new fds the call created in this process. Returns the
   * ioctl's non-negative result; throws SysError with the errno on failure.
   */
  ioctl(fd: number, request: number, arg: Buffer | null): number;
}
