/**
 * How luod reboots into the next kernel.
 *
 *  - standalone: luod calls reboot(LINUX_REBOOT_CMD_KEXEC) itself (or the
 *    emulator's kexec). For hosts without systemd, or with a systemd older
 *    than 261 whose fd store does not survive a kexec.
 *  - systemd: luod leaves its session fds (and `luod-internal`) in its fd
 *    store, releases /dev/liveupdate (systemd-shutdown opens it), and runs
 *    `systemctl kexec`. systemd stops every service, carries the fd store
 *    through the kexec (systemd 261+, FileDescriptorStorePreserve=yes) and
 *    gives the fds back to the next luod as $LISTEN_FDS.
 *
 * `auto` (the default) picks systemd when luod runs under systemd
 * ($NOTIFY_SOCKET) and `systemctl --version` is 261 or later; standalone
 * otherwise.
 */
import { spawn } from 'node:child_process';
import { FD_STORE_PRESERVE_SYSTEMD, parseSystemctlVersion } from '../host/systemd.js';
import { Errno } from '../sys/errno.js';
import { SysError } from '../sys/error.js';
import type { LuodKernel } from './kernel.js';

export type KexecMode = 'standalone' | 'systemd';
export const KEXEC_MODES = ['auto', 'standalone', 'systemd'] as const;

export interface ModeChoice {
  readonly mode: KexecMode;
  readonly why: string;
}

/** Decide the mode: explicit, or auto from whether systemd runs luod and its version. */
export function chooseKexecMode(
  requested: (typeof KEXEC_MODES)[number],
  facts: { underSystemd: boolean; systemctlVersion: () => string | undefined },
): ModeChoice {
  if (requested === 'standalone') return { mode: 'standalone', why: 'chosen with --kexec-mode standalone' };
  if (requested === 'systemd') {
    if (!facts.underSystemd) {
      throw new SysError(
        'luod',
        Errno.EINVAL,
        '--kexec-mode systemd needs luod to run under systemd (Type=notify, $NOTIFY_SOCKET): its fd store carries the sessions',
      );
    }
    return { mode: 'systemd', why: 'chosen with --kexec-mode systemd' };
  }
  if (!facts.underSystemd) return { mode: 'standalone', why: 'auto: not run by systemd (no $NOTIFY_SOCKET)' };
  const output = facts.systemctlVersion();
  const version = output === undefined ? undefined : parseSystemctlVersion(output);
  if (version === undefined) return { mode: 'standalone', why: 'auto: the systemd version is unknown' };
  if (version < FD_STORE_PRESERVE_SYSTEMD) {
    return {
      mode: 'standalone',
      why: `auto: systemd ${version} does not carry fd stores through kexec (needs ${FD_STORE_PRESERVE_SYSTEMD}+)`,
    };
  }
  return { mode: 'systemd', why: `auto: run by systemd ${version}` };
}

/** Run a command; resolves with its exit code and output (stderr kept for the error message). */
function run(command: string, args: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      output += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      output += d;
    });
    child.on('error', (err) => resolve({ code: null, output: err.message }));
    child.on('close', (code) => resolve({ code, output }));
  });
}

/**
 * The kernel of the systemd mode: as `kernel`, but the kexec is `systemctl
 * kexec` (`systemctl` is configurable, for tests and odd installs). It
 * resolves once systemd has accepted the job; systemd then stops luod.
 */
export function systemdKexec(kernel: LuodKernel, systemctl: string): LuodKernel {
  return {
    ...kernel,
    kexecMode: 'systemd',
    async kexec() {
      const { code, output } = await run(systemctl, ['kexec']);
      if (code !== 0) {
        throw new SysError(
          'kexec',
          Errno.EIO,
          `${systemctl} kexec failed (${code === null ? 'could not run' : `exit ${code}`}): ${output.trim().slice(0, 400)}`,
        );
      }
    },
  };
}
