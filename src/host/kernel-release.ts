/**
 * What a kernel release number says about live update: whether the kernel can
 * have LUO at all, and which handover ABIs it speaks. The ABIs matter because
 * matching is exact: a luo-vN mismatch panics the next kernel and a kho-vN
 * mismatch silently cold-boots it (kernel-liveupdate-facts.md, Versioning).
 */

export interface KernelVersion {
  readonly major: number;
  readonly minor: number;
}

/** The compatible strings a kernel writes into, and expects from, the KHO handover. */
export interface HandoverAbi {
  readonly luo: string;
  readonly kho: string;
  readonly memfd: string;
}

/** LUO was merged in 6.19. */
export const FIRST_LUO_KERNEL: KernelVersion = { major: 6, minor: 19 };

const ABI_BY_KERNEL: ReadonlyArray<readonly [KernelVersion, HandoverAbi]> = [
  [
    { major: 6, minor: 19 },
    { luo: 'luo-v1', kho: 'kho-v1', memfd: 'memfd-v1' },
  ],
  [
    { major: 7, minor: 0 },
    { luo: 'luo-v1', kho: 'kho-v1', memfd: 'memfd-v1' },
  ],
  [
    { major: 7, minor: 1 },
    { luo: 'luo-v1', kho: 'kho-v2/v3', memfd: 'memfd-v2' },
  ],
  [
    { major: 7, minor: 2 },
    { luo: 'luo-v5', kho: 'kho-v4', memfd: 'memfd-v2' },
  ],
  [
    { major: 7, minor: 3 },
    { luo: 'luo-v5', kho: 'kho-v4', memfd: 'memfd-v2' },
  ],
];

/** The newest kernel whose ABI luokit knows; anything later must be qualified before use. */
export const NEWEST_KNOWN_KERNEL: KernelVersion = ABI_BY_KERNEL[ABI_BY_KERNEL.length - 1]![0];

/** `uname -r` text such as '7.2.13-amd64' or '6.18.44-fc-v595' to major.minor; undefined if unrecognisable. */
export function parseKernelRelease(release: string): KernelVersion | undefined {
  const match = /^(\d+)\.(\d+)/.exec(release);
  return match ? { major: Number(match[1]), minor: Number(match[2]) } : undefined;
}

export function compareKernelVersions(a: KernelVersion, b: KernelVersion): number {
  return a.major - b.major || a.minor - b.minor;
}

export function formatKernelVersion(version: KernelVersion): string {
  return `${version.major}.${version.minor}`;
}

/** The handover ABIs `version` speaks, or undefined before 6.19 and after the newest known kernel. */
export function handoverAbiOf(version: KernelVersion): HandoverAbi | undefined {
  return ABI_BY_KERNEL.find(([known]) => compareKernelVersions(known, version) === 0)?.[1];
}
