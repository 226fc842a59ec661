/**
 * The bench's part `kernel-info` (#16): `luoctl kernel-info`'s reader on the bench's own LUO
 * kernels, run on the host: each bzImage, and the vmlinux it was built from when the build
 * tree is cached, must read as LUO-capable with the formats luokit's table knows for that
 * release; and the gate must find every pair of them compatible (they are: 7.2 and 7.3 both
 * speak kho-v4, luo-v5, memfd-v2), as the live update part then shows on the real kernels.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { kernelAbi } from '../../src/abi/versions.js';
import { gateVerdict, type SpokenFormats } from '../../src/image/gate.js';
import { type KernelInfo, readKernelInfo } from '../../src/image/kernel-info.js';

export interface KernelInfoCheck {
  name: string;
  ok: boolean;
  detail: string;
}

/** The build tree of a cached kernel (kernels/7.2.13-1-HASH -> kbuild/7.2.13-1), if still there. */
function vmlinuxOf(bzImage: string): string | undefined {
  const cache = process.env.LUOKIT_CACHE ?? path.join(os.homedir(), '.cache/luokit');
  const version = /^(.*)-[0-9a-f]{12}$/.exec(path.basename(path.dirname(bzImage)))?.[1];
  const vmlinux = version && path.join(cache, 'kbuild', version, 'vmlinux');
  return vmlinux && fs.existsSync(vmlinux) ? vmlinux : undefined;
}

function judge(label: string, info: KernelInfo): KernelInfoCheck {
  const abi = kernelAbi(info.release);
  const problems: string[] = [];
  if (!info.liveupdate) problems.push('no LUO found');
  if (!abi) problems.push(`release ${info.release} unknown to the table`);
  else {
    if (info.formats.kho !== abi.kho) problems.push(`KHO ${info.formats.kho} (table: ${abi.kho})`);
    if (info.formats.luo !== abi.luo) problems.push(`LUO ${info.formats.luo} (table: ${abi.luo})`);
    if (info.formats.files.join(' ') !== abi.fileHandlers.join(' '))
      problems.push(`files ${info.formats.files.join(' ')} (table: ${abi.fileHandlers.join(' ')})`);
  }
  const formats = `${info.release}: ${info.formats.kho} ${info.formats.luo} ${info.formats.files.join(' ')}`;
  return { name: `kernel-info ${label}`, ok: problems.length === 0, detail: problems.join('; ') || formats };
}

export async function kernelInfoChecks(
  images: { version: string; bzImage: string }[],
): Promise<KernelInfoCheck[]> {
  const checks: KernelInfoCheck[] = [];
  const spoken: SpokenFormats[] = [];
  for (const { version, bzImage } of images) {
    const info = await readKernelInfo(bzImage);
    checks.push(judge(`${version} bzImage`, info));
    spoken.push({ release: info.release, ...info.formats, source: 'image' } as SpokenFormats);
    const vmlinux = vmlinuxOf(bzImage);
    if (vmlinux) {
      const elf = await readKernelInfo(vmlinux);
      const same =
        JSON.stringify(elf.formats) === JSON.stringify(info.formats) && elf.release === info.release;
      checks.push({
        ...judge(`${version} vmlinux`, elf),
        ...(!same && { ok: false, detail: 'differs from its bzImage' }),
      });
    }
  }
  for (const from of spoken) {
    for (const to of spoken) {
      const verdict = gateVerdict(from, to);
      checks.push({
        name: `gate ${from.release} -> ${to.release}`,
        ok: verdict.outcome === 'works',
        detail: verdict.sentence,
      });
    }
  }
  return checks;
}
