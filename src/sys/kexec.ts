/**
 * Loading and executing the next kernel.
 *
 * KHO (and so every LUO session) reaches the next kernel only through
 * kexec_file_load(2): the kernel builds the handover FDT while loading the
 * image. The older kexec_load(2) would boot a kernel that sees nothing.
 */
import { arch } from 'node:os';
import { Errno } from './errno.js';
import { SysError } from './error.js';
import { type FdLike, rawFd } from './fd.js';
import { kexecFileLoadRaw, rebootRaw } from './libc.js';

export const KEXEC_FILE_UNLOAD = 0x1;
export const KEXEC_FILE_ON_CRASH = 0x2;
export const KEXEC_FILE_NO_INITRAMFS = 0x4;
const KEXEC_FILE_FLAGS = KEXEC_FILE_UNLOAD | KEXEC_FILE_ON_CRASH | KEXEC_FILE_NO_INITRAMFS | 0x8 | 0x10;

export const LINUX_REBOOT_CMD_KEXEC = 0x45584543;

/** The syscall number differs per architecture (no C library wrapper exists). */
const KEXEC_FILE_LOAD_NR: Record<string, number> = { x64: 320, arm64: 294, riscv64: 294, loong64: 294 };

function syscallNumber(): number {
  const nr = KEXEC_FILE_LOAD_NR[arch()];
  if (nr === undefined) {
    throw new SysError('kexec_file_load', Errno.ENOSYS, `kexec_file_load: not supported on ${arch()}`);
  }
  return nr;
}

export interface KexecFileLoadOptions {
  /** The initramfs; omitted means KEXEC_FILE_NO_INITRAMFS. */
  initrd?: FdLike;
  cmdline: string;
  flags?: number;
}

/** Load `kernel` (a bzImage or Image fd) as the image the next reboot(KEXEC) starts. */
export function kexecFileLoad(kernel: FdLike, options: KexecFileLoadOptions): void {
  const cmdline = Buffer.from(`${options.cmdline}\0`);
  let flags = options.flags ?? 0;
  if (options.initrd === undefined) flags |= KEXEC_FILE_NO_INITRAMFS;
  const initrdFd = options.initrd === undefined ? -1 : rawFd(options.initrd);
  kexecFileLoadRaw(syscallNumber(), rawFd(kernel), initrdFd, cmdline, flags);
}

/** Unload a previously loaded kexec image. */
export function kexecFileUnload(): void {
  kexecFileLoadRaw(syscallNumber(), -1, -1, Buffer.from('\0'), KEXEC_FILE_UNLOAD);
}

export type KexecFileLoadAvailability = 'available' | 'not-permitted' | 'missing';

/**
 * Is kexec_file_load usable here, without loading anything? The kernel
 * checks permission first (EPERM: not root, or kexec_load_disabled) and the
 * flags second, so a call with an invalid flag answers EINVAL when the
 * syscall exists and we may use it, and changes nothing.
 */
export function probeKexecFileLoad(): KexecFileLoadAvailability {
  try {
    kexecFileLoadRaw(syscallNumber(), -1, -1, Buffer.from('\0'), ~KEXEC_FILE_FLAGS & 0x7fffffff);
    return 'available';
  } catch (err) {
    const code = (err as SysError).errno;
    if (code === Errno.EINVAL || code === Errno.EBADF) return 'available';
    if (code === Errno.EPERM) return 'not-permitted';
    return 'missing';
  }
}

/**
 * reboot(LINUX_REBOOT_CMD_KEXEC): on success this does not return. LUO
 * freezes every preserved file first; if one refuses, the kernel returns
 * the error here and the host keeps running.
 */
export function rebootKexec(): void {
  rebootRaw(LINUX_REBOOT_CMD_KEXEC);
}
