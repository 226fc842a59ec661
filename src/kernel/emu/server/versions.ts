/**
 * The kernels the emulator can be, and the handover formats each speaks
 * (kernel-liveupdate-facts.md, "Versioning"). Matching is exact, as in the
 * kernel: there is no backward compatibility between format versions.
 */
import { Errno } from '../../../sys/errno.js';
import { SysError } from '../../../sys/error.js';

export interface KernelFormats {
  kho: string;
  luo: string;
  memfd: string;
}

export const KERNEL_FORMATS: Readonly<Record<string, KernelFormats>> = {
  '6.19': { kho: 'kho-v1', luo: 'luo-v1', memfd: 'memfd-v1' },
  '7.0': { kho: 'kho-v1', luo: 'luo-v1', memfd: 'memfd-v1' },
  '7.1': { kho: 'kho-v3', luo: 'luo-v1', memfd: 'memfd-v2' },
  '7.2': { kho: 'kho-v4', luo: 'luo-v5', memfd: 'memfd-v2' },
  '7.3': { kho: 'kho-v4', luo: 'luo-v5', memfd: 'memfd-v2' },
};

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

export function checkKernelVersion(version: string): string {
  if (!(version in KERNEL_FORMATS)) {
    throw new SysError(
      'emulator',
      Errno.EINVAL,
      `unknown emulated kernel ${JSON.stringify(version)}; choose one of ${Object.keys(KERNEL_FORMATS).join(', ')}`,
    );
  }
  return version;
}
