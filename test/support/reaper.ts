/**
 * Processes a test file leaves behind when it is killed.
 *
 * `node --test` ends a file that runs past --test-timeout with SIGTERM, and no `after`
 * hook runs then. A test host's processes are meant to outlive their parents (luod's
 * holder, the emulator, the QEMU that luo-qemu detaches so that it can be adopted), so they
 * would run on for hours and load the machine for every later test. Each host registers
 * its directory here; on SIGTERM or exit, every process whose command line names a
 * registered directory, or that has a file open in one, is killed.
 */
import * as fs from 'node:fs';

const directories = new Set<string>();
let installed = false;

/** Kill, at exit or on SIGTERM, every process whose command line mentions `dir`. */
export function reapOnExit(dir: string): void {
  directories.add(dir);
  if (installed) return;
  installed = true;
  process.once('exit', reap);
  process.once('SIGTERM', () => {
    reap();
    process.exit(143);
  });
}

/** Synchronous: it runs in an 'exit' handler. */
function reap(): void {
  if (directories.size === 0) return;
  for (const { pid } of processesUsing([...directories])) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone, or not ours
    }
  }
}

/**
 * The processes (this one aside) whose command line names one of `dirs`, or that have a
 * file open in one: the emulated kernel renames itself (its command line reads
 * `luokit-emu`), but its log and memory image still name its directory. Synchronous.
 */
export function processesUsing(dirs: readonly string[]): { pid: number; cmdline: string }[] {
  const found: { pid: number; cmdline: string }[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    let cmdline: string;
    try {
      cmdline = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').replaceAll('\0', ' ');
    } catch {
      continue; // gone
    }
    const files = openFiles(entry);
    if (dirs.some((dir) => cmdline.includes(dir) || files.some((file) => file.startsWith(`${dir}/`))))
      found.push({ pid: Number(entry), cmdline });
  }
  return found;
}

/** Where a process's fds point; empty when they cannot be read (gone, or not ours). */
function openFiles(pid: string): string[] {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).map((fd) => {
      try {
        return fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        return '';
      }
    });
  } catch {
    return [];
  }
}
