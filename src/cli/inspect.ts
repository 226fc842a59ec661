/**
 * `luoctl inspect`: shows a live-update handover and says whether the next kernel can
 * restore it (docs/inspect.md).
 *
 *   inspect [--debugfs DIR]                          live host: KHO's debugfs (root)
 *   inspect --state DIR                              an emulator state directory
 *   inspect --fdt FILE --memory DUMP [--memory-base ADDR]
 *   inspect --memory DUMP [--fdt-pa ADDR]            root FDT read from (or found in) the dump
 *   ... [--check] [--ranges N|all] [--json]
 */
import type { Command } from 'commander';
import { DEFAULT_DEBUGFS, inspectDebugfs } from '../inspect/debugfs.js';
import { renderCheck, renderDebugfs, renderHandover } from '../inspect/render.js';
import { DEFAULT_LISTED_RANGES, inspectHandover } from '../inspect/report.js';
import { type OpenedHandover, openDump, openStateDir } from '../inspect/sources.js';
import { Errno } from '../sys/errno.js';
import { SysError } from '../sys/error.js';
import type { RegisterCommand } from './environment.js';
import { commandAction, commandPath, ExitCode, type Output } from './output.js';

interface InspectOptions {
  state?: string;
  fdt?: string;
  fdtPa?: string;
  memory?: string;
  memoryBase?: string;
  debugfs?: string;
  check?: boolean;
  ranges: string;
}

const HELP = `
Sources (one of):
  (none)                      the live host's KHO debugfs (<debugfs>/kho, root only)
  --state DIR                 an emulated kernel's state directory (kho-in.dtb or kho.dtb, memory.img)
  --memory DUMP               a guest memory dump: raw (byte 0 at --memory-base, default 0)
                              or a QEMU dump-guest-memory ELF core (detected by its magic),
                              with the root FDT from --fdt FILE, from --fdt-pa ADDR in the dump,
                              or found by scanning the dump

Exit status: 0 when the handover was read (with --check: and nothing in it stops a
restore; warnings allowed); 1 when it could not be read, is not a KHO handover (the next
kernel would boot cold), or --check found a problem; 2 for bad options.`;

export const register: RegisterCommand = (program) => {
  program
    .command('inspect')
    .description('show a live-update handover (KHO/LUO) and check whether the next kernel can restore it')
    .option('--state <dir>', 'emulator state directory')
    .option('--fdt <file>', 'root KHO FDT file (with --memory)')
    .option('--fdt-pa <addr>', 'physical address of the root KHO FDT in the dump (with --memory)')
    .option('--memory <dump>', 'physical memory dump: raw, or an ELF core')
    .option('--memory-base <addr>', 'physical address of the first byte of a raw dump')
    .option('--debugfs <dir>', 'where debugfs is mounted (live host)', DEFAULT_DEBUGFS)
    .option('--check', 'validate everything; exit 1 on any problem that stops a restore')
    .option('--ranges <n>', 'preserved runs to list, or "all"', String(DEFAULT_LISTED_RANGES))
    .addHelpText('after', HELP)
    .action(commandAction((command, out) => inspect(command, out)));
};

function inspect(command: Command, out: Output): ExitCode {
  const options = command.opts<InspectOptions>();
  const usage = usageProblem(command, options);
  if (usage) {
    out.error(commandPath(command), new SysError('inspect', Errno.EINVAL, usage));
    return ExitCode.usage;
  }
  const maxRanges = parseRanges(options.ranges);
  if (maxRanges === undefined) {
    out.error(
      commandPath(command),
      new SysError('inspect', Errno.EINVAL, `--ranges ${options.ranges}: not a count or "all"`),
    );
    return ExitCode.usage;
  }

  if (!options.state && !options.memory) {
    const report = inspectDebugfs(options.debugfs);
    out.result(report, () => (options.check ? renderCheck(report) : renderDebugfs(report)));
    return options.check && !report.ok ? ExitCode.failure : ExitCode.ok;
  }

  let opened: OpenedHandover;
  if (options.state) {
    opened = openStateDir(options.state);
  } else {
    opened = openDump({
      memory: options.memory!,
      ...(options.fdt !== undefined && { fdt: options.fdt }),
      ...(options.fdtPa !== undefined && { fdtPa: parseAddress(options.fdtPa)! }),
      ...(options.memoryBase !== undefined && { memoryBase: parseAddress(options.memoryBase)! }),
    });
  }
  try {
    const report = inspectHandover(opened.fdt, opened.memory, opened.source, { maxRanges });
    out.result(report, () => (options.check ? renderCheck(report) : renderHandover(report)));
    if (report.verdict === 'cold-boot') return ExitCode.failure;
    return options.check && !report.ok ? ExitCode.failure : ExitCode.ok;
  } finally {
    opened.close();
  }
}

/** What is wrong with the combination of options, or undefined. */
function usageProblem(command: Command, o: InspectOptions): string | undefined {
  const debugfsGiven = command.getOptionValueSource('debugfs') === 'cli';
  if (o.state && (o.memory || o.fdt || o.fdtPa || o.memoryBase)) {
    return '--state reads the emulator state directory; it does not go with --fdt, --fdt-pa, --memory or --memory-base';
  }
  if (debugfsGiven && (o.state || o.memory))
    return '--debugfs is for the live host; it does not go with --state or --memory';
  if (!o.memory && (o.fdt || o.fdtPa || o.memoryBase)) {
    return '--fdt, --fdt-pa and --memory-base need --memory DUMP (the physical memory the FDT points into)';
  }
  if (o.fdt && o.fdtPa)
    return 'give the root FDT either as a file (--fdt) or as an address in the dump (--fdt-pa), not both';
  for (const [flag, value] of [
    ['--fdt-pa', o.fdtPa],
    ['--memory-base', o.memoryBase],
  ] as const) {
    if (value !== undefined && parseAddress(value) === undefined) {
      return `${flag} ${value}: not an address (decimal, or hex with 0x)`;
    }
  }
  return undefined;
}

function parseAddress(text: string): bigint | undefined {
  const trimmed = text.trim().replace(/_/g, '');
  if (!/^(0x[0-9a-f]+|\d+)$/i.test(trimmed)) return undefined;
  const value = BigInt(trimmed);
  return value < 1n << 64n ? value : undefined;
}

function parseRanges(text: string): number | undefined {
  if (text === 'all') return Number.POSITIVE_INFINITY;
  return /^\d+$/.test(text) ? Number(text) : undefined;
}
