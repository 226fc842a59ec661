/**
 * Which kernels speak which handover ABI, and what happens when they disagree.
 *
 * Every layer is versioned by an exact compatible string, with no backward
 * compatibility: the successor compares and refuses. What refusal means differs by layer:
 * - KHO root (`kho-vN`): kho_populate() rejects the FDT, disables KHO revival and the
 *   kernel boots as from cold. Every preserved byte is silently lost.
 * - LUO (`luo-vN`): luo_early_startup() fails and LUO panics (luo_restore_fail()).
 * - A file handler (`memfd-vN`): no handler matches during session deserialization,
 *   so every open of /dev/liveupdate fails with EIO.
 *
 * The table is what luokit knows from kernel sources (7.2) and their history; 7.1's
 * development cycle used both kho-v2 and kho-v3, and its release is taken as kho-v3.
 */
import { AbiError } from './errors.js';

export type CompatibleKind = 'kho' | 'luo' | 'file-handler' | 'kho-subtree';

export interface KnownCompatible {
  compatible: string;
  kind: CompatibleKind;
  /** Kernel releases (major.minor) writing and accepting it. */
  kernels: readonly string[];
  layout: string;
}

export const KNOWN_COMPATIBLES: readonly KnownCompatible[] = [
  {
    compatible: 'kho-v1',
    kind: 'kho',
    kernels: ['6.19', '7.0'],
    layout: 'bitmap chunk list; subtrees are FDTs',
  },
  { compatible: 'kho-v2', kind: 'kho', kernels: ['7.1'], layout: 'radix tree (7.1 development)' },
  { compatible: 'kho-v3', kind: 'kho', kernels: ['7.1'], layout: 'radix tree; subtrees without blob-size' },
  {
    compatible: 'kho-v4',
    kind: 'kho',
    kernels: ['7.2', '7.3'],
    layout: 'radix tree; subtrees with blob-size',
  },
  { compatible: 'luo-v1', kind: 'luo', kernels: ['6.19', '7.0', '7.1'], layout: 'FDT subtree' },
  { compatible: 'luo-v5', kind: 'luo', kernels: ['7.2', '7.3'], layout: 'luo_ser and block chains' },
  { compatible: 'memfd-v1', kind: 'file-handler', kernels: ['6.19', '7.0'], layout: 'no seals' },
  {
    compatible: 'memfd-v2',
    kind: 'file-handler',
    kernels: ['7.1', '7.2', '7.3'],
    layout: 'seals; vmalloc folio array',
  },
  { compatible: 'memblock-v1', kind: 'kho-subtree', kernels: ['7.2', '7.3'], layout: 'memblock FDT subtree' },
  {
    compatible: 'reserve-mem-v1',
    kind: 'kho-subtree',
    kernels: ['7.2', '7.3'],
    layout: 'reserve_mem region node',
  },
];

export interface KernelAbi {
  /** major.minor */
  kernel: string;
  kho: string;
  luo: string;
  fileHandlers: readonly string[];
}

export const KERNEL_ABIS: readonly KernelAbi[] = ['6.19', '7.0', '7.1', '7.2', '7.3'].map((kernel) => {
  const spoken = (kind: CompatibleKind): string[] =>
    KNOWN_COMPATIBLES.filter((c) => c.kind === kind && c.kernels.includes(kernel)).map((c) => c.compatible);
  return {
    kernel,
    kho: spoken('kho').at(-1)!,
    luo: spoken('luo').at(-1)!,
    fileHandlers: spoken('file-handler'),
  };
});

export function knownCompatible(compatible: string): KnownCompatible | undefined {
  return KNOWN_COMPATIBLES.find((c) => c.compatible === compatible);
}

/** The ABI of a kernel release such as `7.2`, `7.2.13` or `7.2.0-1-amd64`; undefined if unknown. */
export function kernelAbi(release: string): KernelAbi | undefined {
  const match = /^(\d+)\.(\d+)/.exec(release);
  return match ? KERNEL_ABIS.find((abi) => abi.kernel === `${match[1]}.${match[2]}`) : undefined;
}

/** The compatible strings a handover carries, read by handoverCompatibles() in handover.ts. */
export interface HandoverCompatibles {
  /** The KHO root's compatible list (empty when the FDT is unreadable). */
  kho: string[];
  /** luo_ser's compatible; absent when there is no LUO subtree. */
  luo?: string;
  /** Every preserved file's handler, in session and preserve order. */
  fileHandlers: string[];
}

export type BootOutcome = 'ok' | 'kho-mismatch' | 'luo-mismatch' | `unknown-handler:${string}`;

/**
 * What booting `target` on a handover with these compatibles does, checked in the order
 * the kernel meets them: 'kho-mismatch' (cold boot, data silently lost), 'luo-mismatch'
 * (panic), `unknown-handler:<name>` (/dev/liveupdate opens fail with EIO), or 'ok'.
 */
export function bootOutcome(compatibles: HandoverCompatibles, target: string | KernelAbi): BootOutcome {
  const abi = typeof target === 'string' ? kernelAbi(target) : target;
  if (!abi) throw new AbiError('kernel-abi', {}, `no handover ABI known for kernel ${String(target)}`);
  if (!compatibles.kho.includes(abi.kho)) return 'kho-mismatch';
  if (compatibles.luo !== undefined && compatibles.luo !== abi.luo) return 'luo-mismatch';
  const unknown = compatibles.fileHandlers.find((handler) => !abi.fileHandlers.includes(handler));
  return unknown === undefined ? 'ok' : `unknown-handler:${unknown}`;
}
