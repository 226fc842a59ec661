/**
 * The records directory: one `<update>.json` per update, written atomically
 * (a reader sees the old record or the new one, never a torn one), the
 * oldest removed beyond a bound. luod writes it; luoctl report reads it.
 * A record that does not parse or validate is reported by file name, never
 * half-trusted.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic, writeFileAtomicAsync } from '../sys/atomic-file.js';
import { Errno } from '../sys/errno.js';
import { errorCode, SysError } from '../sys/error.js';
import { tieredSafeParse } from '../sys/tiered-parse.js';
import { describeRecordIssue, isUpdateId, UpdateId, UpdateRecord, updateRecordFast } from './format.js';

/** Where luod keeps records on a real host. */
export const DEFAULT_RECORDS_DIR = '/var/lib/luod/updates';
export const DEFAULT_KEEP_RECORDS = 50;
/** A record is a few KiB; anything much larger is not one. */
const MAX_RECORD_BYTES = 4 << 20;

/** The records directory luod uses with --emulate: inside the emulator's state directory. */
export function emulatedRecordsDir(stateDir: string): string {
  return path.join(path.resolve(stateDir), 'updates');
}

export function recordPath(dir: string, update: string): string {
  if (isUpdateId(update)) return path.join(dir, `${update}.json`);
  const id = UpdateId.safeParse(update); // the schema words what is wrong
  if (!id.success)
    throw new SysError(
      'record',
      Errno.EINVAL,
      `${JSON.stringify(update)} is not an update id: ${id.error.issues[0]?.message}`,
    );
  return path.join(dir, `${update}.json`);
}

export class RecordStore {
  constructor(
    readonly dir: string,
    readonly keep: number = DEFAULT_KEEP_RECORDS,
  ) {
    if (!Number.isInteger(keep) || keep < 1)
      throw new SysError('record', Errno.EINVAL, 'the number of records to keep must be a positive integer');
  }

  /** Write (or replace) a record, then drop the oldest beyond `keep`. Returns its path. */
  write(record: UpdateRecord): string {
    const { file, text } = this.#prepare(record);
    writeFileAtomic(file, text);
    this.prune();
    return file;
  }

  /** write(), its disk work off the event loop; the caller keeps writes of one record in order. */
  async writeAsync(record: UpdateRecord): Promise<string> {
    const { file, text } = this.#prepare(record);
    await writeFileAtomicAsync(file, text);
    this.prune();
    return file;
  }

  #prepare(record: UpdateRecord): { file: string; text: string } {
    // By hand first (format.ts): zod's cold parse of a thousand lanes was ~50 ms per write.
    let checked = updateRecordFast(record);
    if (!checked) {
      const result = tieredSafeParse(UpdateRecord, record);
      if (!result.success) throw result.error;
      checked = result.data;
    }
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o755 });
    return { file: recordPath(this.dir, checked.update), text: `${JSON.stringify(checked, null, 2)}\n` };
  }

  /** The record of `update`, or null when there is none; a damaged one throws, naming the file. */
  read(update: string): UpdateRecord | null {
    const file = recordPath(this.dir, update);
    if (!fs.existsSync(file)) return null;
    return readRecordFile(file);
  }

  /** Remove the oldest records (by modification time) beyond `keep`. */
  prune(): void {
    const entries = listRecordFiles(this.dir);
    for (const old of entries.slice(0, Math.max(0, entries.length - this.keep))) {
      fs.rmSync(old.path, { force: true });
    }
  }
}

export interface RecordFile {
  name: string;
  path: string;
  mtimeMs: number;
}

/** The record files of a directory, oldest first (modification time, then name). */
export function listRecordFiles(dir: string): RecordFile[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return [];
    throw new SysError('record', Errno.EIO, `cannot list the records directory ${dir}: ${code}`);
  }
  const files: RecordFile[] = [];
  for (const name of names) {
    if (!name.endsWith('.json') || name.startsWith('.')) continue;
    const file = path.join(dir, name);
    try {
      const stat = fs.statSync(file);
      if (stat.isFile()) files.push({ name, path: file, mtimeMs: stat.mtimeMs });
    } catch {
      // removed meanwhile
    }
  }
  return files.sort((a, b) => a.mtimeMs - b.mtimeMs || a.name.localeCompare(b.name));
}

/** Read and validate one record file; a damaged one is an EINVAL naming the file. */
export function readRecordFile(file: string): UpdateRecord {
  let text: string;
  try {
    const size = fs.statSync(file).size;
    if (size > MAX_RECORD_BYTES)
      throw new SysError('record', Errno.EFBIG, `record ${file} is ${size} bytes: not an update record`);
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if (err instanceof SysError) throw err;
    const code = errorCode(err);
    if (code === 'ENOENT') throw new SysError('record', Errno.ENOENT, `no record ${file}`);
    throw new SysError('record', Errno.EIO, `cannot read record ${file}: ${code}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new SysError('record', Errno.EINVAL, `record ${file} is corrupt: not JSON`);
  }
  // By hand first (format.ts): a restarted luod reads the update's record of a thousand lanes.
  const fast = updateRecordFast(parsed);
  if (fast) return fast;
  const result = tieredSafeParse(UpdateRecord, parsed);
  if (!result.success)
    throw new SysError(
      'record',
      Errno.EINVAL,
      `record ${file} is corrupt: ${describeRecordIssue(result.error)}`,
    );
  return result.data;
}

export interface LatestRecord {
  record: UpdateRecord;
  path: string;
  /** Newer files that could not be trusted, by name, with why. */
  skipped: { path: string; reason: string }[];
}

/** The most recent valid record, and the newer damaged ones passed over. */
export function latestRecord(dir: string): LatestRecord {
  const skipped: { path: string; reason: string }[] = [];
  const files = listRecordFiles(dir).reverse();
  for (const file of files) {
    try {
      return { record: readRecordFile(file.path), path: file.path, skipped };
    } catch (err) {
      skipped.push({ path: file.path, reason: (err as Error).message });
    }
  }
  if (skipped.length > 0)
    throw new SysError(
      'record',
      Errno.EINVAL,
      `no valid record in ${dir}: ${skipped.map((s) => s.reason).join('; ')}`,
    );
  throw new SysError('record', Errno.ENOENT, `no update record in ${dir} yet`);
}
