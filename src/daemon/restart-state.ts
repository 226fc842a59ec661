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
 *
 * During the claims, each claim is appended to the claims log beside it
 * (`<state file>.claims`, ClaimsLog below) instead of the whole file being
 * written again: one line per claim, on disk before the holder lets go of
 * that client's copies. Rewriting a thousand clients per claim was
 * quadratic, and paced, it still took a quarter of luod's time during a
 * thousand claims. A line names its update and boot and carries the
 * SHA-256 of its content: a torn line (luod killed mid-write), a damaged
 * one, or one of another update is skipped, and its client's sessions are
 * offered again (never the other way round). The log is emptied whenever
 * the file is written, which then holds every claim the log had.
 */
import { createHash, hash } from 'node:crypto';
import * as fs from 'node:fs';
import { z } from 'zod';
import { writeFileAtomic } from '../sys/atomic-file.js';
import { Errno } from '../sys/errno.js';
import { errorCode, SysError } from '../sys/error.js';
import { arrayOf, isFiniteNumber, isNonnegativeInt, isPlainObject, stringArray } from '../sys/hand-checks.js';
import { onFirstUse } from '../sys/on-first-use.js';
import { tieredSafeParse } from '../sys/tiered-parse.js';
import { PhaseMark, phaseMarkFast } from './handover-state.js';

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

/**
 * A state body in its valid shape, checked by hand; undefined for anything
 * else. A restarted luod reads a thousand clients before it listens, and
 * zod's first parse of them was 20 to 40 ms of cold code. `StateBody` stays
 * the validator of record: a body that does not pass here goes through it,
 * and its message is the one reported. Like the schema, it keeps the known
 * fields only; test/restart-files.test.ts holds the two to the same answer.
 */
export function stateBodyFast(value: unknown): StateBody | undefined {
  if (!isPlainObject(value)) return undefined;
  const { boot, phase, update, from, to, claimDeadline } = value;
  if (typeof boot !== 'string' || typeof update !== 'string') return undefined;
  if (phase !== 'preserving' && phase !== 'kexec' && phase !== 'claiming') return undefined;
  if ((from !== undefined && typeof from !== 'string') || (to !== undefined && typeof to !== 'string'))
    return undefined;
  if (claimDeadline !== undefined && !isFiniteNumber(claimDeadline)) return undefined;
  const clients = arrayOf(value.clients, (c): StateBody['clients'][number] | undefined => {
    if (!isPlainObject(c) || typeof c.id !== 'string' || typeof c.claimed !== 'boolean') return undefined;
    const sessions = stringArray(c.sessions);
    if (!isNonnegativeInt(c.uid) || !sessions) return undefined;
    return { id: c.id, uid: c.uid, sessions, claimed: c.claimed };
  });
  const timeline = arrayOf(value.timeline, phaseMarkFast);
  if (!clients || !timeline) return undefined;
  return {
    boot,
    phase,
    update,
    ...(from !== undefined && { from }),
    ...(to !== undefined && { to }),
    ...(claimDeadline !== undefined && { claimDeadline }),
    clients,
    timeline,
  };
}

const Envelope = onFirstUse(() =>
  z.object({ format: z.literal(STATE_FILE_FORMAT), sha256: z.string(), body: z.unknown() }),
);

/**
 * Do the state file's first SHA-256 now, on nothing: OpenSSL's first use
 * (its digest set up, its pages faulted in) took 0.1 to 0.5 s of luod's
 * restore after a kexec under TCG, right on the claims' path. luod calls
 * this where it waits for another process anyway (keeper.ts, claiming).
 */
export function warmDigest(): void {
  createHash('sha256').update('').digest('hex');
}

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
  const fast = stateBodyFast(envelope.data.body);
  if (fast) return fast;
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

/** The claims log of `stateFile`: one line per claim since the file was last written. */
export function claimsLogPath(stateFile: string): string {
  return `${stateFile}.claims`;
}

/** One claim, as the log holds it. */
export interface LoggedClaim {
  readonly update: string;
  readonly boot: string;
  readonly client: string;
  /** When it was answered (epoch ms): the claim's mark in the update's timeline. */
  readonly at: number;
}

/** A claim's line: its JSON and the SHA-256 of that JSON, so a damaged line is told from a good one. */
function claimLine(claim: LoggedClaim): string {
  const json = JSON.stringify({
    update: claim.update,
    boot: claim.boot,
    client: claim.client,
    at: claim.at,
  });
  // One-shot hash (Node >= 20.12): a Hash object per claim was half the cost of a line.
  return `{"claim":${json},"sha256":"${hash('sha256', json, 'hex')}"}\n`;
}

/**
 * The claims log, appended to with one write(2) per claim on a descriptor
 * kept open (O_APPEND, mode 0600). Not fsynced, like the state file.
 */
export class ClaimsLog {
  readonly path: string;
  #fd: number | null = null;

  constructor(stateFile: string) {
    this.path = claimsLogPath(stateFile);
  }

  /** On disk (in the page cache) when this returns; throws the write's error. */
  append(claim: LoggedClaim): void {
    this.#fd ??= fs.openSync(this.path, 'a', 0o600);
    fs.writeSync(this.#fd, claimLine(claim));
  }

  /** Empty it (the state file now holds every claim it had), or remove it (the update is over). */
  reset(): void {
    if (this.#fd !== null) fs.closeSync(this.#fd);
    this.#fd = null;
    fs.rmSync(this.path, { force: true });
  }
}

/**
 * The claims logged for `body`'s update and boot, in the order they were
 * answered. Lines that are torn, damaged (their SHA-256), or of another
 * update or boot are skipped and counted.
 */
export function readClaimsLog(
  stateFile: string,
  body: Pick<StateBody, 'update' | 'boot'>,
): {
  claims: { client: string; at: number }[];
  skipped: number;
} {
  let text: string;
  try {
    text = fs.readFileSync(claimsLogPath(stateFile), 'utf8');
  } catch {
    return { claims: [], skipped: 0 }; // no log: no claim since the file was written
  }
  const claims: { client: string; at: number }[] = [];
  let skipped = 0;
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const claim = parseClaimLine(line);
    if (claim && claim.update === body.update && claim.boot === body.boot)
      claims.push({ client: claim.client, at: claim.at });
    else skipped++;
  }
  return { claims, skipped };
}

function parseClaimLine(line: string): LoggedClaim | null {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return null;
  }
  const { claim, sha256 } = (value ?? {}) as { claim?: Partial<LoggedClaim>; sha256?: unknown };
  if (
    typeof claim?.update !== 'string' ||
    typeof claim.boot !== 'string' ||
    typeof claim.client !== 'string' ||
    typeof claim.at !== 'number' ||
    !Number.isFinite(claim.at)
  )
    return null;
  const good = claimLine(claim as LoggedClaim);
  return good === `${line}\n` && typeof sha256 === 'string' ? (claim as LoggedClaim) : null;
}

/**
 * The state file's body with the claims its log holds: those clients
 * claimed, and each claim's mark added to the timeline.
 */
export function withLoggedClaims(body: StateBody, claims: { client: string; at: number }[]): StateBody {
  if (claims.length === 0) return body;
  const claimed = new Set(claims.map((c) => c.client));
  return {
    ...body,
    clients: body.clients.map((c) => (claimed.has(c.id) && !c.claimed ? { ...c, claimed: true } : c)),
    timeline: [...body.timeline, ...claims.map((c) => ({ phase: 'claim', at: c.at, client: c.client }))],
  };
}
