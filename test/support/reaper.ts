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
  const own = String(process.pid);
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || entry === own) continue;
    let cmdline: string;
    try {
      cmdline = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8');
    } catch {
      continue; // gone
    }
    // The emulated kernel renames itself (its command line reads `luokit-emu`): its open
    // files (its log, its memory image) still name the directory.
    const files = openFiles(entry);
    for (const dir of directories) {
      if (!cmdline.includes(dir) && !files.some((file) => file.startsWith(`${dir}/`))) continue;
      try {
        process.kill(Number(entry), 'SIGKILL');
      } catch {
        // gone, or not ours
      }
      break;
    }
  }
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
