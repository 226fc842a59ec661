/**
 * Whether systemd can keep LUO sessions for us: since v261, a service's fd store
 * (FileDescriptorStorePreserve=yes) is carried across `systemctl kexec`, which
 * lets sessions outlive the agent that created them (peers.md).
 */
import { spawnSync } from 'node:child_process';
import { readHostText } from './host-files.js';

/** The first systemd release that preserves fd stores across kexec. */
export const FD_STORE_PRESERVE_SYSTEMD = 261;

export interface SystemdFacts {
  /** Installed systemd version from `systemctl --version`; undefined when systemctl is absent. */
  readonly version: number | undefined;
  /** PID 1's command name (/proc/1/comm), e.g. 'systemd'; undefined when unreadable. */
  readonly pid1: string | undefined;
}

/** `systemctl --version` prints e.g. "systemd 252 (252.38-1~deb12u1)" on its first line. */
export function parseSystemctlVersion(output: string): number | undefined {
  const match = /^systemd (\d+)/m.exec(output);
  return match ? Number(match[1]) : undefined;
}

/** Run `systemctl --version`; undefined when it is not installed or fails. */
export function runSystemctlVersion(): string | undefined {
  const result = spawnSync('systemctl', ['--version'], { encoding: 'utf8', timeout: 5000 });
  return result.error || result.status !== 0 ? undefined : result.stdout;
}

/**
 * PID 1 is named from /proc/1/comm rather than /proc/1/exe: reading the exe link
 * needs ptrace access to PID 1, which even root lacks in many containers, while
 * comm is world-readable and systemd always names itself "systemd".
 */
export function readSystemdFacts(root: string, systemctlVersion: () => string | undefined): SystemdFacts {
  const output = systemctlVersion();
  return {
    version: output === undefined ? undefined : parseSystemctlVersion(output),
    pid1: readHostText(root, '/proc/1/comm')?.trim() || undefined,
  };
}
