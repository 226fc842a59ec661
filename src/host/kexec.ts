/**
 * Whether this process may load the next kernel with kexec_file_load(2), the
 * only kexec that hands KHO data (and so LUO sessions) to the next kernel.
 */
import type { KexecFileLoadAvailability } from '../sys/kexec.js';
import { pathState, readHostText } from './host-files.js';

/** CAP_SYS_BOOT's bit in the capability sets (linux/capability.h). */
const CAP_SYS_BOOT = 22n;

export interface KexecFacts {
  /** The answer of src/sys's probeKexecFileLoad(); undefined when no probe was given (the doctor then infers). */
  readonly probe: KexecFileLoadAvailability | undefined;
  /**
   * kernel.kexec_load_disabled: 'allowed' (0), 'disabled' (1, which cannot be undone
   * without a reboot), 'missing' (no such sysctl: the kernel has no kexec at all), or
   * undefined when /proc/sys/kernel cannot be read.
   */
  readonly loadSysctl: 'allowed' | 'disabled' | 'missing' | undefined;
  /** Whether this process has CAP_SYS_BOOT in its effective set; undefined when /proc/self/status is unreadable. */
  readonly capSysBoot: boolean | undefined;
}

/** The effective capability set from /proc/<pid>/status text ("CapEff:\t000001ffffffffff"). */
export function parseEffectiveCapabilities(status: string): bigint | undefined {
  const match = /^CapEff:\s*([0-9a-fA-F]+)$/m.exec(status);
  return match ? BigInt(`0x${match[1]}`) : undefined;
}

function readLoadSysctl(root: string): KexecFacts['loadSysctl'] {
  const value = readHostText(root, '/proc/sys/kernel/kexec_load_disabled')?.trim();
  if (value !== undefined) return value === '0' ? 'allowed' : 'disabled';
  return pathState(root, '/proc/sys/kernel') === 'present' ? 'missing' : undefined;
}

export function readKexecFacts(
  root: string,
  probe: (() => KexecFileLoadAvailability) | undefined,
): KexecFacts {
  const status = readHostText(root, '/proc/self/status');
  const caps = status === undefined ? undefined : parseEffectiveCapabilities(status);
  return {
    probe: probe?.(),
    loadSysctl: readLoadSysctl(root),
    capSysBoot: caps === undefined ? undefined : ((caps >> CAP_SYS_BOOT) & 1n) === 1n,
  };
}
