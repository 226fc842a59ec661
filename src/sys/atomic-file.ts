/**
 * Durable, all-or-nothing file writes.
 *
 * A reader (or the next boot, after a crash or a kexec) must see either the old
 * file or the new one, never a torn mix: the bytes go to a temporary file in
 * the same directory, which is fsynced, renamed over the target (rename is
 * atomic within a filesystem), and the directory is fsynced so the rename
 * itself survives a crash. A failure removes the temporary file and leaves the
 * old file untouched.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface AtomicWriteOptions {
  /** Permission bits of the new file (default 0o644). */
  mode?: number;
  /**
   * fsync the file and its directory (default true). Without it the write is
   * still all-or-nothing for any process crash (the rename is atomic), only
   * not across a power loss: enough for a file whose meaning ends with the
   * boot anyway, such as luod's state file, which is written while a client
   * waits.
   */
  durable?: boolean;
}

export function writeFileAtomic(
  target: string,
  data: string | Uint8Array,
  options: AtomicWriteOptions = {},
): void {
  const dir = path.dirname(target);
  const tmp = path.join(dir, `.${path.basename(target)}.${process.pid}.${Date.now().toString(36)}.tmp`);
  let fd = -1;
  try {
    fd = fs.openSync(tmp, 'wx', options.mode ?? 0o644);
    fs.writeFileSync(fd, data);
    if (options.durable !== false) fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = -1;
    fs.renameSync(tmp, target);
  } catch (err) {
    if (fd >= 0) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  if (options.durable !== false) syncDirectory(dir);
}

/** fsync a directory so that a rename or unlink in it is durable. */
export function syncDirectory(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
