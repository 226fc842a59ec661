/**
 * The kernels the emulator can be, and the handover formats each speaks: the
 * ones abi/versions.ts knows (kernel-liveupdate-facts.md, "Versioning"), in the
 * shape the emulator uses. Matching is exact, as in the kernel: there is no
 * backward compatibility between format versions.
 */
import { KERNEL_ABIS } from '../../../abi/versions.js';
import { Errno } from '../../../sys/errno.js';
import { SysError } from '../../../sys/error.js';

export interface KernelFormats {
  kho: string;
  luo: string;
  memfd: string;
}

export const KERNEL_FORMATS: Readonly<Record<string, KernelFormats>> = Object.fromEntries(
  KERNEL_ABIS.map((abi) => [
    abi.kernel,
    { kho: abi.kho, luo: abi.luo, memfd: abi.fileHandlers.find((h) => h.startsWith('memfd-'))! },
  ]),
);

/**
 * What an emulated kernel writes and reads, in the shape of image/gate.ts's SpokenFormats
 * (the gate judges emulated kernels with the same code as images).
 */
export function emulatedFormats(version: string): {
  release: string;
  kho?: string;
  luo?: string;
  files: string[];
  source: string;
} {
  const formats = KERNEL_FORMATS[version];
  if (!formats) return { release: version, files: [], source: 'emulator' };
  return { release: version, kho: formats.kho, luo: formats.luo, files: [formats.memfd], source: 'emulator' };
}

/** The versions whose handover layout the emulator writes byte for byte (the others are outcomes only). */
export const WRITABLE_VERSIONS = new Set(['7.2', '7.3']);

/** `version` if the emulator can be that kernel, else EINVAL naming the ones it can be. */
export function checkEmulatedVersion(version: string): string {
  if (!(version in KERNEL_FORMATS)) {
    throw new SysError(
      'emulator',
      Errno.EINVAL,
      `unknown emulated kernel ${JSON.stringify(version)}; choose one of ${Object.keys(KERNEL_FORMATS).join(', ')}`,
    );
  }
  return version;
}
