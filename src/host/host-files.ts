/**
 * Reading the host's pseudo-files (/proc, /sys, /boot) under a root directory.
 *
 * Every host fact the doctor reports comes from a file, and every file is read
 * relative to `root` (normally '/'), so tests can stand up a fake host in a temp
 * directory instead of needing a LUO kernel.
 */
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** Whether a path can be seen: 'denied' is EACCES/EPERM on the way to it (debugfs is often root-only). */
export type PathState = 'present' | 'missing' | 'denied';

/** `absolutePath` (e.g. '/proc/cmdline') as seen under `root`. */
export function hostPath(root: string, absolutePath: string): string {
  return join(root, absolutePath);
}

/** The file's bytes, or undefined when it is missing or unreadable (the caller reports "unknown"). */
export function readHostFile(root: string, absolutePath: string): Buffer | undefined {
  try {
    return readFileSync(hostPath(root, absolutePath));
  } catch {
    return undefined;
  }
}

/** The file as UTF-8 text, or undefined when it is missing or unreadable. */
export function readHostText(root: string, absolutePath: string): string | undefined {
  return readHostFile(root, absolutePath)?.toString('utf8');
}

export function pathState(root: string, absolutePath: string): PathState {
  try {
    statSync(hostPath(root, absolutePath));
    return 'present';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'EACCES' || code === 'EPERM' ? 'denied' : 'missing';
  }
}
