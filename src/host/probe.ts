/**
 * Gathers the facts that decide whether this host can live update. Files are
 * read under `root`; what is not a file (opening the device, the kexec syscall,
 * running systemctl, uname) comes from injected probes, so every branch can be
 * tested on a machine without LUO.
 */
import { errorCode } from '../sys/error.js';
import type { KexecFileLoadAvailability } from '../sys/kexec.js';
import { type KernelCmdline, parseKernelCmdline } from './cmdline.js';
import { readHostText } from './host-files.js';
import { type KernelConfig, readKernelConfig } from './kconfig.js';
import { type KexecFacts, readKexecFacts } from './kexec.js';
import { type KhoDebugfsState, readKhoDebugfsState } from './kho-debugfs.js';
import { readShmemThpFacts, type ShmemThpFacts } from './shmem-thp.js';
import { readSystemdFacts, type SystemdFacts } from './systemd.js';

export const LIVEUPDATE_DEVICE = '/dev/liveupdate';

export interface HostProbes {
  /**
   * Open /dev/liveupdate read-write, as an agent would, and return a handle to
   * close at once; throws an error whose `code` is the errno name (EBUSY, ENOENT...).
   */
  openDevice: () => { close(): void };
  /**
   * Whether kexec_file_load may be used, without loading anything (src/sys/kexec.ts);
   * when omitted, the doctor infers it from the kernel config, sysctl and capabilities.
   */
  probeKexecFileLoad?: () => KexecFileLoadAvailability;
  /** `systemctl --version` output, or undefined when systemctl is not installed. */
  systemctlVersion: () => string | undefined;
  /** The running kernel's release, as `uname -r` prints it. */
  osRelease: () => string;
}

/** The result of opening /dev/liveupdate; `code` is the errno name of the failure. */
export type DeviceAccess =
  | { readonly opened: true }
  | { readonly opened: false; readonly code: string; readonly message: string };

export interface HostFacts {
  readonly release: string;
  readonly device: DeviceAccess;
  /** Undefined when neither /proc/config.gz nor /boot/config-<release> could be read. */
  readonly kernelConfig: KernelConfig | undefined;
  /** Undefined when /proc/cmdline could not be read. */
  readonly cmdline: KernelCmdline | undefined;
  readonly kexec: KexecFacts;
  readonly khoDebugfs: KhoDebugfsState;
  readonly systemd: SystemdFacts;
  readonly shmemThp: ShmemThpFacts;
  /** net.core.somaxconn, the cap on luod's listen queue (undefined: unreadable). */
  readonly somaxconn?: number;
}

/** Open and close the device at once: the device is exclusive, so holding it would block a real agent. */
export function probeDevice(openDevice: HostProbes['openDevice']): DeviceAccess {
  let handle: { close(): void };
  try {
    handle = openDevice();
  } catch (err) {
    return {
      opened: false,
      code: errorCode(err, 'EUNKNOWN'),
      message: err instanceof Error ? err.message : String(err),
    };
  }
  handle.close();
  return { opened: true };
}

export function gatherHostFacts(probes: HostProbes, root = '/'): HostFacts {
  const release = probes.osRelease();
  const cmdline = readHostText(root, '/proc/cmdline');
  return {
    release,
    device: probeDevice(probes.openDevice),
    kernelConfig: readKernelConfig(root, release),
    cmdline: cmdline === undefined ? undefined : parseKernelCmdline(cmdline),
    kexec: readKexecFacts(root, probes.probeKexecFileLoad),
    khoDebugfs: readKhoDebugfsState(root),
    systemd: readSystemdFacts(root, probes.systemctlVersion),
    shmemThp: readShmemThpFacts(root),
    somaxconn: readSomaxconn(root),
  };
}

function readSomaxconn(root: string): number | undefined {
  const text = readHostText(root, '/proc/sys/net/core/somaxconn')?.trim();
  return text && /^\d+$/.test(text) ? Number(text) : undefined;
}
