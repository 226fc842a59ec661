/**
 * The process's open-file limit (RLIMIT_NOFILE), read from /proc/self/limits:
 * luod sizes its client limit against it (daemon/capacity.ts). Node raises
 * the soft limit to the hard one at start, so the soft one is what luod has.
 */
import * as fs from 'node:fs';

/** The soft RLIMIT_NOFILE of this process, or null when /proc/self/limits cannot be read. */
export function openFilesLimit(limitsFile = '/proc/self/limits'): number | null {
  let text: string;
  try {
    text = fs.readFileSync(limitsFile, 'utf8');
  } catch {
    return null;
  }
  const match = /^Max open files\s+(\d+|unlimited)\s/m.exec(text);
  if (!match) return null;
  return match[1] === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(match[1]);
}
