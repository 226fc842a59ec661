/**
 * Which uid owns which client id, across connections and luod restarts.
 *
 * An id names a VM's sessions: in the next update, whoever is subscribed as
 * `vm-a` receives vm-a's guest memory. So the first uid that subscribes an id
 * owns it, and no other uid may subscribe it later, in particular not while
 * the owner is away (reconnecting after a kexec, restarting). Root may use
 * any id (it could take the memory anyway); the owner stays the owner.
 *
 * The table lives next to luod's socket, so a restarted luod (or the next
 * kernel's) keeps refusing squatters: a snapshot file, written atomically,
 * and its log (`<file>.log`), one line appended per change on a descriptor
 * kept open. A thousand VMMs subscribing are a thousand short appends, not a
 * thousand rewrites of the whole table (bench/scale.ts); the snapshot is
 * rewritten, and the log emptied, once the log holds more lines than the
 * table has ids (plus COMPACT_SLACK), so either stays in proportion to the
 * table. Reading applies the log to the snapshot in order: a line torn by a
 * crash, or damaged, is skipped and counted (that id is unbound, as a
 * damaged file unbinds them all). Not fsynced: the table is a guard against
 * squatting, not the VMs' memory.
 *
 * An id unused for OWNER_TTL_MS is forgotten, and a uid may own at most
 * MAX_IDS_PER_UID ids (its least recently used idle id makes room, logged
 * as a `forget` line): the files cannot grow without bound.
 */
import * as fs from 'node:fs';
import type { Logger } from 'pino';
import { z } from 'zod';
import { writeFileAtomic } from '../sys/atomic-file.js';
import { isFiniteNumber, isNonnegativeInt, isPlainObject } from '../sys/hand-checks.js';
import { onFirstUse } from '../sys/on-first-use.js';

export const OWNER_TTL_MS = 30 * 24 * 3600 * 1000;
export const MAX_IDS_PER_UID = 1024;
/** How stale a last-seen time may get before it is written again (not at every subscribe). */
const TOUCH_INTERVAL_MS = 24 * 3600 * 1000;
/** Log lines beyond the table's size before the snapshot is rewritten. */
const COMPACT_SLACK = 256;

/** The log of the owners file `file`. */
export function ownersLogPath(file: string): string {
  return `${file}.log`;
}

type Entry = { uid: number; seen: number };

/** One change, as the log holds it: a binding (or its new last-seen time), or an id forgotten. */
function logLine(id: string, entry: Entry | null): string {
  return `${JSON.stringify(entry ? { id, uid: entry.uid, seen: entry.seen } : { forget: id })}\n`;
}

/** A log line's change; null for a torn or damaged line. */
function parseLogLine(line: string): { id: string; entry: Entry | null } | null {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return null;
  }
  if (typeof value !== 'object' || value === null) return null;
  const { id, uid, seen, forget } = value as Record<string, unknown>;
  if (typeof forget === 'string' && id === undefined) return { id: forget, entry: null };
  const entry = ownerEntry({ uid, seen });
  return typeof id === 'string' && entry ? { id, entry } : null;
}

/** An owner entry (`{ uid, seen }`, as OwnersFile takes one), checked by hand; undefined if it is not one. */
function ownerEntry(value: unknown): Entry | undefined {
  if (!isPlainObject(value) || !isNonnegativeInt(value.uid) || !isFiniteNumber(value.seen)) return undefined;
  return { uid: value.uid, seen: value.seen };
}

// Schemas are built on first use, not when the module loads (sys/on-first-use.ts).
export const OwnersFile = onFirstUse(() =>
  z.object({
    format: z.literal('luod-id-owners-v1'),
    owners: z.record(z.string(), z.object({ uid: z.number().int().nonnegative(), seen: z.number() })),
  }),
);

/**
 * The owners file's entries when it has its valid shape, checked by hand;
 * undefined for anything else. A restarted luod reads a thousand before it
 * listens, and zod's first parse of them was some 25 ms of cold code.
 * `OwnersFile` stays the validator of record (anything that does not pass
 * here goes through it); test/restart-files.test.ts holds the two to the
 * same answer.
 */
export function ownersFast(value: unknown): [string, Entry][] | undefined {
  if (!isPlainObject(value) || value.format !== 'luod-id-owners-v1' || !isPlainObject(value.owners))
    return undefined;
  const out: [string, Entry][] = [];
  for (const [id, raw] of Object.entries(value.owners)) {
    const entry = ownerEntry(raw);
    if (!entry) return undefined;
    out.push([id, entry]);
  }
  return out;
}

export type OwnerCheck = { ok: true } | { ok: false; owner: number };

export class IdOwners {
  readonly file: string | null;
  readonly #log: Logger;
  readonly #owners = new Map<string, Entry>();
  /** How many ids each uid owns (#makeRoom looks at a uid's ids only when it is full). */
  readonly #perUid = new Map<number, number>();
  /** The log, open for appending (null until the first change, and after a compaction). */
  #logFd: number | null = null;
  /** Lines in the log since the snapshot was written. */
  #logLines = 0;
  /** The log ends in a torn line (a crash mid-append): the next line must start on a line of its own. */
  #logTorn = false;
  /** A write failed: said once, not at every change. */
  #failed = false;

  /** `file`: where the table is kept (null: in memory only, for tests). */
  constructor(file: string | null, log: Logger, now = Date.now()) {
    this.file = file;
    this.#log = log;
    if (file) this.#load(file, now);
  }

  get size(): number {
    return this.#owners.size;
  }

  owner(id: string): number | undefined {
    return this.#owners.get(id)?.uid;
  }

  /**
   * May `uid` use `id`? A free id is bound to `uid` on the spot. `busy` says
   * which ids must not be evicted to make room (subscribed, or with
   * sessions to claim).
   */
  claim(id: string, uid: number, busy: (id: string) => boolean, now = Date.now()): OwnerCheck {
    const entry = this.#owners.get(id);
    if (entry) {
      if (entry.uid !== uid && uid !== 0) return { ok: false, owner: entry.uid };
      if (entry.uid === uid && now - entry.seen > TOUCH_INTERVAL_MS) {
        entry.seen = now;
        this.#changed(id, entry);
      }
      return { ok: true };
    }
    this.#makeRoom(uid, busy);
    this.#set(id, { uid, seen: now });
    return { ok: true };
  }

  /** Bind ids that arrive with sessions (after a kexec) to the uid that preserved them. */
  adopt(id: string, uid: number, now = Date.now()): void {
    const entry = this.#owners.get(id);
    if (entry?.uid === uid) return;
    this.#set(id, { uid, seen: now });
  }

  /** luod stops: the log's descriptor is closed (what it holds is on disk already). */
  close(): void {
    if (this.#logFd !== null) fs.closeSync(this.#logFd);
    this.#logFd = null;
  }

  #set(id: string, entry: Entry): void {
    this.#forget(id);
    this.#owners.set(id, entry);
    this.#perUid.set(entry.uid, (this.#perUid.get(entry.uid) ?? 0) + 1);
    this.#changed(id, entry);
  }

  #forget(id: string): boolean {
    const old = this.#owners.get(id);
    if (!old) return false;
    this.#owners.delete(id);
    this.#perUid.set(old.uid, (this.#perUid.get(old.uid) ?? 1) - 1);
    return true;
  }

  #makeRoom(uid: number, busy: (id: string) => boolean): void {
    if ((this.#perUid.get(uid) ?? 0) < MAX_IDS_PER_UID) return;
    const idle = [...this.#owners]
      .filter(([id, e]) => e.uid === uid && !busy(id))
      .sort((a, b) => a[1].seen - b[1].seen);
    const victim = idle[0];
    if (victim && this.#forget(victim[0])) this.#changed(victim[0], null);
  }

  #load(file: string, now: number): void {
    const entries = this.#readSnapshot(file);
    const logged = this.#readLog(ownersLogPath(file));
    for (const [id, entry] of entries) this.#owners.set(id, entry);
    for (const { id, entry } of logged) {
      if (entry) this.#owners.set(id, entry);
      else this.#owners.delete(id);
    }
    for (const [id, entry] of [...this.#owners]) {
      if (now - entry.seen > OWNER_TTL_MS) this.#owners.delete(id);
      else this.#perUid.set(entry.uid, (this.#perUid.get(entry.uid) ?? 0) + 1);
    }
    this.#logLines = logged.length;
  }

  #readSnapshot(file: string): [string, Entry][] {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        this.#log.error({ err, file }, 'cannot read the id owners file; ids are unbound until re-subscribed');
      return [];
    }
    try {
      const value: unknown = JSON.parse(text);
      return ownersFast(value) ?? Object.entries(OwnersFile.parse(value).owners);
    } catch {
      const aside = `${file}.damaged`;
      fs.renameSync(file, aside);
      this.#log.error({ file, aside }, 'the id owners file is damaged: moved aside; ids are unbound');
      return [];
    }
  }

  #readLog(logFile: string): { id: string; entry: Entry | null }[] {
    let text: string;
    try {
      text = fs.readFileSync(logFile, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        this.#log.error({ err, file: logFile }, 'cannot read the id owners log; its bindings are unbound');
      return [];
    }
    this.#logTorn = text !== '' && !text.endsWith('\n');
    const changes: { id: string; entry: Entry | null }[] = [];
    let skipped = 0;
    for (const line of text.split('\n')) {
      if (line === '') continue;
      const change = parseLogLine(line);
      if (change) changes.push(change);
      else skipped++;
    }
    if (skipped > 0)
      this.#log.warn(
        { file: logFile, skipped },
        `the id owners log has ${skipped} torn or damaged line(s), skipped: those ids are unbound until re-subscribed`,
      );
    return changes;
  }

  /** On disk (in the page cache) when this returns, unless writing failed (then said, once). */
  #changed(id: string, entry: Entry | null): void {
    if (!this.file) return;
    if (this.#logLines >= this.#owners.size + COMPACT_SLACK) {
      try {
        this.#compact(this.file);
        this.#failed = false;
        return;
      } catch (err) {
        this.#failedWrite(err); // the log still takes the change
      }
    }
    try {
      this.#logFd ??= fs.openSync(ownersLogPath(this.file), 'a', 0o600);
      fs.writeSync(this.#logFd, `${this.#logTorn ? '\n' : ''}${logLine(id, entry)}`);
      this.#logTorn = false;
      this.#logLines++;
      this.#failed = false;
    } catch (err) {
      this.#failedWrite(err);
    }
  }

  /** A failed write keeps the table in memory and says so (once): refusing a VMM for it would be worse. */
  #failedWrite(err: unknown): void {
    if (!this.#failed)
      this.#log.error(
        { err, file: this.file },
        'cannot write the id owners file: bindings hold until luod restarts',
      );
    this.#failed = true;
  }

  /** The whole table into the snapshot (atomically), then the log emptied: a crash between leaves both, which read the same. */
  #compact(file: string): void {
    writeFileAtomic(
      file,
      `${JSON.stringify({ format: 'luod-id-owners-v1', owners: Object.fromEntries(this.#owners) })}\n`,
      { mode: 0o600, durable: false },
    );
    this.close();
    fs.rmSync(ownersLogPath(file), { force: true });
    this.#logLines = 0;
    this.#logTorn = false;
  }
}
