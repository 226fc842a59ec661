/**
 * What the running kernel writes at a live update, for the gate: read from its own image
 * when one is installed where distributions put it (/boot/vmlinuz-R, /lib/modules/R/vmlinuz),
 * else the KHO root's compatible from live debugfs (kho/out/fdt) with the rest from luokit's
 * table, else the table alone. `source` says which, so the operator can judge.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { decodeFdt } from '../abi/fdt.js';
import { kernelAbi } from '../abi/versions.js';
import { KHO_DEBUGFS_OUT } from '../host/kho-debugfs.js';
import type { SpokenFormats } from './gate.js';
import { readKernelInfoCached } from './kernel-info.js';

export function runningImageCandidates(release: string, root = '/'): string[] {
  return [
    `/boot/vmlinuz-${release}`,
    `/lib/modules/${release}/vmlinuz`,
    `/usr/lib/modules/${release}/vmlinuz`,
  ].map((p) => path.join(root, p));
}

export async function runningKernelFormats(release: string, root = '/'): Promise<SpokenFormats> {
  for (const image of runningImageCandidates(release, root)) {
    if (!fs.existsSync(image)) continue;
    try {
      const info = await readKernelInfoCached(image);
      if (info.release === release) {
        return {
          release,
          ...(info.formats.kho && { kho: info.formats.kho }),
          ...(info.formats.luo && { luo: info.formats.luo }),
          files: info.formats.files,
          source: `image ${image}`,
        };
      }
    } catch {
      // Unreadable or another kernel's: the next source.
    }
  }
  const abi = kernelAbi(release);
  const table: SpokenFormats = abi
    ? { release, kho: abi.kho, luo: abi.luo, files: [...abi.fileHandlers], source: 'table' }
    : { release, files: [], source: 'unknown' };
  try {
    const fdt = decodeFdt(fs.readFileSync(path.join(root, KHO_DEBUGFS_OUT, 'fdt')));
    const compatible = fdt.root.props.get('compatible');
    if (compatible) {
      const kho = Buffer.from(compatible).toString('latin1').split('\0')[0]!;
      return { ...table, kho, source: `debugfs kho/out/fdt, ${table.source} for the rest` };
    }
  } catch {
    // No debugfs: the table.
  }
  return table;
}
