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

/** Tells apart the temporary files of writes started in the same millisecond. */
let seq = 0;

/** The temporary file a write of `target` goes through: same directory, never an existing name. */
function temporaryFor(target: string): string {
  const dir = path.dirname(target);
  return path.join(
    dir,
    `.${path.basename(target)}.${process.pid}.${Date.now().toString(36)}.${(seq++).toString(36)}.tmp`,
  );
}

export function writeFileAtomic(
  target: string,
  data: string | Uint8Array,
  options: AtomicWriteOptions = {},
): void {
  const tmp = temporaryFor(target);
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
  if (options.durable !== false) syncDirectory(path.dirname(target));
}

/**
 * writeFileAtomic off the event loop (libuv's thread pool): for a durable write
 * that must not hold up what the process does meanwhile, such as luod's update
 * record written while the VMMs claim (an fsync can take seconds on a slow disk).
 * The same guarantees; two writes of one target must not overlap (the caller
 * orders them), or the older could be renamed over the newer.
 */
export async function writeFileAtomicAsync(
  target: string,
  data: string | Uint8Array,
  options: AtomicWriteOptions = {},
): Promise<void> {
  const tmp = temporaryFor(target);
  let file: fs.promises.FileHandle | null = null;
  try {
    file = await fs.promises.open(tmp, 'wx', options.mode ?? 0o644);
    await file.writeFile(data);
    if (options.durable !== false) await file.sync();
    await file.close();
    file = null;
    await fs.promises.rename(tmp, target);
  } catch (err) {
    await file?.close().catch(() => {});
    await fs.promises.rm(tmp, { force: true });
    throw err;
  }
  if (options.durable !== false) {
    const dir = await fs.promises.open(path.dirname(target), 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }
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
