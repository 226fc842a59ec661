/**
 * `luoctl kernel-info IMAGE`: the release and handover formats a kernel image speaks, read
 * from the image itself (docs/kernel-info.md). Exit status 0 when the image was read (with
 * or without live update), 1 when it is not a kernel or cannot be read.
 */
import type { KernelInfo } from '../image/kernel-info.js';
import type { RegisterCommand } from './environment.js';
import { commandAction, ExitCode } from './output.js';

export const register: RegisterCommand = (program) => {
  program
    .command('kernel-info')
    .description('read a kernel image: its release and the live update formats it speaks')
    .argument('<image>', 'bzImage, vmlinux (plain or compressed), arm64 Image or Image.gz, EFI zboot')
    .action(
      commandAction(async (command, out) => {
        // Imported when used: other commands do not compile the image reader.
        const { readKernelInfo } = await import('../image/kernel-info.js');
        const info = await readKernelInfo(String(command.args[0]));
        out.result(info, () => renderKernelInfo(info));
        return ExitCode.ok;
      }),
    );
};

export function renderKernelInfo(info: KernelInfo): string {
  const layers =
    info.container.join(' > ') + (info.compression.length ? ` (${info.compression.join(', ')})` : '');
  const lines = [`${info.image}: Linux ${info.release}${info.arch ? ` ${info.arch}` : ''}, ${layers}`];
  if (!info.kho) {
    lines.push('live update: no (built without KHO: a kexec into or from this kernel preserves nothing)');
  } else if (!info.liveupdate) {
    lines.push(`live update: no LUO (KHO ${info.formats.kho} only: /dev/liveupdate does not exist)`);
  } else {
    lines.push('live update: yes');
  }
  if (info.formats.kho) lines.push(`  KHO root       ${info.formats.kho}`);
  if (info.formats.luo) lines.push(`  LUO            ${info.formats.luo}`);
  if (info.liveupdate) lines.push(`  file handlers  ${info.formats.files.join(' ') || 'none'}`);
  if (info.kho_subtrees.length) lines.push(`  KHO subtrees   ${info.kho_subtrees.join(' ')}`);
  if (info.liveupdate_versions) {
    lines.push(
      `  .liveupdate_versions v${info.liveupdate_versions.version}: ${info.liveupdate_versions.entries.join(' ') || 'empty'}`,
    );
  }
  for (const w of info.warnings) lines.push(`warning: ${w}`);
  return lines.join('\n');
}
