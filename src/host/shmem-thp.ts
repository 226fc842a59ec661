/**
 * The host's policy for transparent huge pages in shmem, which is what memfd guest RAM
 * is. It decides the size of the folios LUO preserves: in 4 KiB folios, the next
 * kernel's KHO restore reserves each one during early boot, and its time grows faster
 * than linearly with how scattered they are (docs/vm.md measured it on real kernels);
 * in 2 MiB folios there are 512 times fewer.
 */
import { readHostText } from './host-files.js';

export const SHMEM_THP_CONTROL = '/sys/kernel/mm/transparent_hugepage/shmem_enabled';

/** Policies under which a memfd sized up front gets huge folios without any madvise(). */
export const HUGE_SHMEM_POLICIES: ReadonlySet<string> = new Set(['always', 'within_size', 'force']);

export type ShmemThpFacts =
  /** The control file is absent: no CONFIG_TRANSPARENT_HUGEPAGE, or /sys is not the host's. */
  | { readonly available: false }
  /** `policy`: the selected word, e.g. 'never'; undefined when the file did not say. */
  | { readonly available: true; readonly policy: string | undefined };

/** "always within_size advise [never] deny force": the policy is the word in brackets. */
export function parseShmemThp(text: string): string | undefined {
  return /\[([^\]\s]+)\]/.exec(text)?.[1];
}

export function readShmemThpFacts(root: string): ShmemThpFacts {
  const text = readHostText(root, SHMEM_THP_CONTROL);
  if (text === undefined) return { available: false };
  return { available: true, policy: parseShmemThp(text) };
}
