/**
 * What luo-qemu refuses in the QEMU command line it is given, and why: the
 * options it sets itself (guest RAM, QMP, incoming migration), and devices
 * whose state cannot cross a live update.
 */
import { Errno } from '../sys/errno.js';
import { SysError } from '../sys/error.js';

/** Options luo-qemu adds itself: a second one would fight it. */
const OWN_OPTIONS = new Map([
  ['-m', 'luo-qemu sets the guest RAM size from --ram'],
  ['-mem-path', 'luo-qemu backs guest RAM with its own memfd'],
  ['-qmp', 'luo-qemu talks to QEMU on its own QMP socket'],
  ['-qmp-pretty', 'luo-qemu talks to QEMU on its own QMP socket'],
  ['-incoming', 'luo-qemu decides when QEMU loads a saved state'],
  ['-daemonize', 'luo-qemu must stay QEMU’s parent to see it exit'],
]);

/** Throws EINVAL (or ENOTSUP for a device LUO cannot carry yet) naming the argument. */
export function checkQemuArgs(args: readonly string[]): void {
  if (args.length === 0) throw new SysError('luo-qemu', Errno.EINVAL, 'no QEMU command after --');
  for (const [i, raw] of args.entries()) {
    const arg = raw.startsWith('--') ? raw.slice(1) : raw;
    const own = OWN_OPTIONS.get(arg.split('=')[0]!);
    if (own) throw new SysError('luo-qemu', Errno.EINVAL, `QEMU option ${raw} is not allowed: ${own}`);
    if (/(^|[,=])vfio-pci([,]|$)/.test(raw) || raw === 'vfio-pci') {
      throw new SysError(
        'luo-qemu',
        Errno.EOPNOTSUPP,
        `${raw}: a vfio-pci device cannot cross a live update until LUO preserves VFIO devices (not upstream yet); start this VM without luo-qemu`,
      );
    }
    if (i > 0 && (args[i - 1] === '-machine' || args[i - 1] === '-M') && /(^|,)memory-backend=/.test(raw))
      throw new SysError('luo-qemu', Errno.EINVAL, `-machine ${raw}: luo-qemu sets memory-backend itself`);
  }
}

/**
 * Options that name host-side endpoints (serial and monitor back-ends, log and pid files,
 * the display): they may change between the command before an update and the one after
 * (`-serial file:OUT2`, as docs/qemu.md shows) without changing the guest.
 */
const HOST_SIDE_OPTIONS = new Set([
  '-serial',
  '-parallel',
  '-monitor',
  '-mon',
  '-chardev',
  '-D',
  '-pidfile',
  '-display',
  '-vnc',
  '-trace',
  '-d',
  '-name',
  '-msg',
]);

/**
 * The arguments that shape the guest: `args` without the host-side options and their
 * values. Two commands with equal guest arguments run the same machine, so a saved device
 * state made by one loads into the other.
 */
export function guestArgs(args: readonly string[]): string[] {
  const kept: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const raw = args[i]!;
    const name = (raw.startsWith('--') ? raw.slice(1) : raw).split('=')[0]!;
    if (!HOST_SIDE_OPTIONS.has(name)) {
      kept.push(raw);
      continue;
    }
    if (!raw.includes('=')) i++; // `-serial VALUE`: skip the value too
  }
  return kept;
}
