/**
 * The kernel luod drives: the real one (`/dev/liveupdate`, kexec_file_load,
 * reboot) or, only when asked with --emulate, luokit's emulated kernel. The
 * same daemon code runs on both; only loading and rebooting differ.
 */
import * as fs from 'node:fs';
import type { SpokenFormats } from '../image/gate.js';
import type { Backend, LiveUpdateDevice } from '../kernel/device.js';

export { emulatedFormats };

import {
  checkEmulatedVersion,
  emulatedFormats,
  emulatorKexec,
  emulatorStatus,
  ensureEmulator,
  openEmulatedDevice,
  statePaths,
} from '../kernel/emu/index.js';
import { openRealDevice } from '../kernel/real/index.js';
import type { GateReport } from '../protocol/replies.js';
import { Errno } from '../sys/errno.js';
import { errorCode, SysError } from '../sys/error.js';
import { O_RDONLY, open, pread } from '../sys/file.js';
import { kexecFileLoad, rebootKexec } from '../sys/kexec.js';

export interface LoadRequest {
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  emuVersion?: string;
}

export interface LoadedKernel {
  kernel: string;
  initrd?: string;
  cmdline: string;
  /** The next emulated kernel's version (emulated backend only). */
  version?: string;
  /** The gate's verdict on this kernel, taken before it was loaded (gate.ts). */
  gate?: GateReport;
}

export interface LuodKernel {
  readonly backend: Backend;
  /** What this kernel calls itself (release or emulated version). */
  release(): Promise<string>;
  /** An id that changes at every boot, kexec included (names of held fds carry it). */
  bootId?(): Promise<string>;
  /**
   * How the kexec is done: 'standalone' (luod reboots the host itself) or
   * 'systemd' (`systemctl kexec`: kexec() returns once systemd has the job,
   * and systemd carries luod's fd store through the reboot).
   */
  readonly kexecMode?: 'standalone' | 'systemd';
  openDevice(): LiveUpdateDevice;
  /**
   * When the running kernel started (ms since the epoch): where an update's
   * kexec phase ends in its record. Emulated: when the last emulated kexec
   * returned (or when luod met the emulator).
   */
  startedAt?(): number;
  load(request: LoadRequest): Promise<LoadedKernel>;
  /** What this kernel writes at a live update (the gate's left side). */
  currentFormats(): Promise<SpokenFormats>;
  /** What the kernel `request` would load reads (the gate's right side); throws if it is no kernel. */
  nextFormats(request: LoadRequest): Promise<SpokenFormats>;
  /**
   * Reboot into the loaded kernel. On the real kernel this does not return
   * when it works; an error means the kernel refused (a freeze failure) and
   * the host keeps running. On the emulated kernel it resolves once the next
   * kernel has booted: luod then behaves as it would after a real reboot.
   */
  kexec(loaded: LoadedKernel): Promise<void>;
}

/** Add liveupdate=on when missing: without it the next kernel ignores the handover. */
export function withLiveupdate(cmdline: string): string {
  return /(^|\s)liveupdate=\S+/.test(cmdline) ? cmdline : `${cmdline} liveupdate=on`.trim();
}

const BZIMAGE_MAGIC_OFFSET = 0x202;

/** Is this a bzImage ("HdrS" at 0x202) or an ELF image? Checked before the kernel sees it. */
export function checkKernelImage(path: string): void {
  let fd: ReturnType<typeof open>;
  try {
    fd = open(path, O_RDONLY);
  } catch (err) {
    throw new SysError(
      'load',
      (err as SysError).errno,
      `cannot read kernel image ${path}: ${(err as SysError).code}`,
    );
  }
  try {
    const head = pread(fd, 0x210, 0);
    const elf = head.subarray(0, 4).equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
    const bz =
      head.length >= BZIMAGE_MAGIC_OFFSET + 4 &&
      head.toString('latin1', BZIMAGE_MAGIC_OFFSET, BZIMAGE_MAGIC_OFFSET + 4) === 'HdrS';
    const arm64 = head.length >= 0x3c && head.toString('latin1', 0x38, 0x3c) === 'ARMd';
    if (!elf && !bz && !arm64) {
      throw new SysError(
        'load',
        Errno.ENOEXEC,
        `${path} is not a kernel image (no bzImage, arm64 Image or ELF magic)`,
      );
    }
  } finally {
    fd.close();
  }
}

export function realKernel(): LuodKernel {
  return {
    backend: 'real',
    release: async () => fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
    bootId: async () => fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(),
    openDevice: () => openRealDevice(),
    startedAt: () => {
      const uptime = Number.parseFloat(fs.readFileSync('/proc/uptime', 'utf8'));
      return Math.round(Date.now() - uptime * 1000);
    },
    async load(request) {
      if (!request.kernel) throw new SysError('load', Errno.EINVAL, 'LOAD needs a kernel image path');
      checkKernelImage(request.kernel);
      const cmdline = withLiveupdate(request.cmdline ?? fs.readFileSync('/proc/cmdline', 'utf8').trim());
      using kernel = open(request.kernel, O_RDONLY);
      if (request.initrd) {
        using initrd = open(request.initrd, O_RDONLY);
        kexecFileLoad(kernel, { initrd, cmdline });
      } else {
        kexecFileLoad(kernel, { cmdline });
      }
      return { kernel: request.kernel, cmdline, ...(request.initrd ? { initrd: request.initrd } : {}) };
    },
    async kexec() {
      rebootKexec();
    },
    async currentFormats() {
      // Imported when used: the image reader is not compiled at every luod start (blackout).
      const { runningKernelFormats } = await import('../image/running.js');
      return runningKernelFormats(fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim());
    },
    async nextFormats(request) {
      if (!request.kernel) throw new SysError('load', Errno.EINVAL, 'LOAD needs a kernel image path');
      checkKernelImage(request.kernel);
      return imageFormats(request.kernel);
    },
  };
}

export function emulatedKernel(stateDir: string): LuodKernel {
  const paths = statePaths(stateDir);
  ensureEmulator(paths);
  let startedAt = Date.now();
  const current = async () => {
    const status = await emulatorStatus(paths);
    return String((status.kernel as { version?: string } | undefined)?.version ?? 'unknown');
  };
  return {
    backend: 'emulated',
    release: current,
    async bootId() {
      // The emulator's boot counter restarts with its process: its pid makes the id unique.
      const status = await emulatorStatus(paths);
      const bootId = (status.kernel as { bootId?: number } | undefined)?.bootId ?? 0;
      return `emu${String(status.pid)}-${bootId}`;
    },
    openDevice: () => openEmulatedDevice({ stateDir: paths.dir, start: false }),
    startedAt: () => startedAt,
    async load(request) {
      if (request.kernel) checkKernelImage(request.kernel);
      const version = checkEmulatedVersion(request.emuVersion ?? (await current()));
      return {
        kernel: request.kernel ?? `emulated ${version}`,
        cmdline: withLiveupdate(request.cmdline ?? ''),
        version,
        ...(request.initrd ? { initrd: request.initrd } : {}),
      };
    },
    async currentFormats() {
      return emulatedFormats(await current());
    },
    async nextFormats(request) {
      return emulatedFormats(checkEmulatedVersion(request.emuVersion ?? (await current())));
    },
    async kexec(loaded) {
      const result = await emulatorKexec(paths, loaded.version);
      startedAt = Date.now();
      if (result.boot.outcome !== 'restored' && result.boot.outcome !== 'cold') {
        throw new SysError(
          'kexec',
          Errno.EIO,
          `the next emulated kernel did not restore the handover: ${result.boot.detail}`,
        );
      }
    },
  };
}

/**
 * The formats a kernel image reads, from the image itself. An image that has a kernel's
 * header (checkKernelImage passed) but whose contents cannot be read (a damaged payload, a
 * compression or layout the reader does not know) is not an error here: the gate says it
 * cannot judge it (`unknown`), and `--force` can still load it, as for any other verdict.
 */
export async function imageFormats(image: string): Promise<SpokenFormats> {
  const { readKernelInfoCached } = await import('../image/kernel-info.js');
  let info: Awaited<ReturnType<typeof readKernelInfoCached>>;
  try {
    info = await readKernelInfoCached(image);
  } catch (err) {
    return {
      release: 'unknown',
      files: [],
      source: `image ${image}`,
      unreadable: `${errorCode(err)}: ${(err as Error).message}`,
    };
  }
  return {
    release: info.release,
    ...(info.formats.kho && { kho: info.formats.kho }),
    ...(info.formats.luo && { luo: info.formats.luo }),
    files: info.formats.files,
    source: `image ${image}`,
  };
}
