/**
 * luod's state file: what a restarted luod needs and the held fds' names
 * cannot carry (the update's timeline, kernel versions, claim deadline, which
 * clients already claimed).
 *
 * It is written with writeFileAtomic (temp file, rename), so a crash of luod
 * leaves the old file or the new one, never a mix. A file that is torn
 * anyway (a disk fault, a hand edit, a different luod version) is detected by
 * its envelope, a SHA-256 of the body and a zod schema, and reported with an
 * errno name, a sentence and the file's path: never half-trusted. The names
 * of the held fds stay the truth about which sessions exist.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { z } from 'zod';
import { writeFileAtomic } from '../sys/atomic-file.js';
import { Errno } from '../sys/errno.js';
import { errorCode, SysError } from '../sys/error.js';
import { onFirstUse } from '../sys/on-first-use.js';
import { tieredSafeParse } from '../sys/tiered-parse.js';
import { PhaseMark } from './handover-state.js';

export const STATE_FILE_FORMAT = 'luod-state-file-v1';
const MAX_STATE_FILE_BYTES = 4 << 20;

// Schemas are built on first use, not when the module loads (sys/on-first-use.ts).
export const StateBody = onFirstUse(() =>
  z.object({
    /** Boot id of the kernel the file was written under. */
    boot: z.string(),
    phase: z.enum(['preserving', 'kexec', 'claiming']),
    update: z.string(),
    from: z.string().optional(),
    to: z.string().optional(),
    /** Epoch ms after which unclaimed sessions are released (phase claiming). */
    claimDeadline: z.number().optional(),
    clients: z.array(
      z.object({
        id: z.string(),
        uid: z.number().int().nonnegative(),
        sessions: z.array(z.string()),
        claimed: z.boolean(),
      }),
    ),
    timeline: z.array(PhaseMark),
  }),
);
export type StateBody = z.infer<typeof StateBody>;

const Envelope = onFirstUse(() =>
  z.object({ format: z.literal(STATE_FILE_FORMAT), sha256: z.string(), body: z.unknown() }),
);

function digest(body: unknown): string {
  return createHash('sha256').update(JSON.stringify(body)).digest('hex');
}

export class StateFileError extends SysError {
  readonly path: string;
  constructor(path: string, errno: number, sentence: string) {
    super('luod-state-file', errno, `${path}: ${sentence}`);
    this.path = path;
  }
}

/**
 * Write the state (atomically, mode 0600: it names clients and uids). Not
 * fsynced: the file only serves a luod restarted within the same boot (the
 * sessions it describes do not survive a power loss either), and it is
 * written while a CLAIM is being answered, where an fsync would widen the
 * window in which a killed luod has not yet recorded the claim.
 */
export function writeStateFile(path: string, body: StateBody): void {
  // Typed by its writer, checked by its reader (readStateFile): not parsed here
  // too, and serialised once, since it is written during the claims of a
  // thousand clients. The digest is of the body's JSON, as the reader makes it.
  const json = JSON.stringify(body);
  const sha256 = createHash('sha256').update(json).digest('hex');
  writeFileAtomic(
    path,
    `{"format":${JSON.stringify(STATE_FILE_FORMAT)},"sha256":"${sha256}","body":${json}}\n`,
    { mode: 0o600, durable: false },
  );
}

/** Remove the state file: no update is in progress. */
export function clearStateFile(path: string): void {
  fs.rmSync(path, { force: true });
}

/**
 * Read the state file: null when there is none; a StateFileError (EBADMSG
 * for a torn or tampered file, EINVAL for a wrong format, EFBIG, or the read
 * error) when it cannot be trusted.
 */
export function readStateFile(path: string): StateBody | null {
  let bytes: Buffer;
  try {
    const size = fs.statSync(path).size;
    if (size > MAX_STATE_FILE_BYTES) {
      throw new StateFileError(
        path,
        Errno.EFBIG,
        `the state file is ${size} bytes, more than ${MAX_STATE_FILE_BYTES}`,
      );
    }
    bytes = fs.readFileSync(path);
  } catch (err) {
    if (err instanceof StateFileError) throw err;
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') return null;
    const errno = typeof e.errno === 'number' ? Math.abs(e.errno) : Errno.EIO;
    throw new StateFileError(path, errno, `the state file cannot be read (${errorCode(e)})`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new StateFileError(
      path,
      Errno.EBADMSG,
      `the state file is not valid JSON (${bytes.length} bytes): torn or damaged; it is ignored`,
    );
  }
  const envelope = tieredSafeParse(Envelope, parsed);
  if (!envelope.success) {
    const format = (parsed as { format?: unknown } | null)?.format;
    throw new StateFileError(
      path,
      Errno.EINVAL,
      `the state file is not a ${STATE_FILE_FORMAT} file (format ${JSON.stringify(format)}); it is ignored`,
    );
  }
  if (digest(envelope.data.body) !== envelope.data.sha256) {
    throw new StateFileError(
      path,
      Errno.EBADMSG,
      'the state file does not match its SHA-256: damaged or edited; it is ignored',
    );
  }
  const body = tieredSafeParse(StateBody, envelope.data.body);
  if (!body.success) {
    throw new StateFileError(
      path,
      Errno.EINVAL,
      `the state file's content is invalid (${body.error.issues[0]?.path.join('.')}: ${body.error.issues[0]?.message}); it is ignored`,
    );
  }
  return body.data;
}
