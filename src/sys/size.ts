/**
 * Memory sizes as people write them on command lines ("64M", "1G",
 * "512KiB", "4096"): shared by luoctl and the example VMM, so it lives below
 * both.
 */
import { Errno } from './errno.js';
import { SysError } from './error.js';

/** "64M", "1G", "4096", "512KiB" -> bytes. */
export function parseSize(text: string): number {
  const m = /^(\d+)\s*([KMGT]?)(i?B)?$/i.exec(text.trim());
  if (!m)
    throw new SysError('size', Errno.EINVAL, `not a size: ${JSON.stringify(text)} (e.g. 64M, 1G, 65536)`);
  const shift = { '': 0, K: 10, M: 20, G: 30, T: 40 }[m[2]!.toUpperCase() as '' | 'K' | 'M' | 'G' | 'T'];
  const bytes = Number(m[1]) * 2 ** shift;
  if (!Number.isSafeInteger(bytes) || bytes <= 0)
    throw new SysError('size', Errno.EINVAL, `size out of range: ${text}`);
  return bytes;
}
