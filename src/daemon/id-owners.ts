/**
 * Which uid owns which client id, across connections and luod restarts.
 *
 * An id names a VM's sessions: in the next update, whoever is subscribed as
 * `vm-a` receives vm-a's guest memory. So the first uid that subscribes an id
 * owns it, and no other uid may subscribe it later, in particular not while
 * the owner is away (reconnecting after a kexec, restarting). Root may use
 * any id (it could take the memory anyway); the owner stays the owner.
 *
 * The table lives in a small file next to luod's socket, written atomically
 * when an id is first bound (many bindings at once: paced, paced-write.ts), so a restarted luod (or the next kernel's)
 * keeps refusing squatters. An id unused for OWNER_TTL_MS is forgotten, and a
 * uid may own at most MAX_IDS_PER_UID ids (its least recently used idle id
 * makes room): the file cannot grow without bound.
 */
import * as fs from 'node:fs';
import type { Logger } from 'pino';
import { z } from 'zod';
import { writeFileAtomic } from '../sys/atomic-file.js';
import { onFirstUse } from '../sys/on-first-use.js';
import { PacedWrite } from './paced-write.js';

export const OWNER_TTL_MS = 30 * 24 * 3600 * 1000;
export const MAX_IDS_PER_UID = 1024;
/** How stale a last-seen time may get before it is written again (not at every subscribe). */
const TOUCH_INTERVAL_MS = 24 * 3600 * 1000;

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
export function ownersFast(value: unknown): [string, { uid: number; seen: number }][] | undefined {
  const isObject = (v: unknown): v is Record<string, unknown> =>
    typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isObject(value) || value.format !== 'luod-id-owners-v1' || !isObject(value.owners)) return undefined;
  const out: [string, { uid: number; seen: number }][] = [];
  for (const [id, entry] of Object.entries(value.owners)) {
    if (!isObject(entry)) return undefined;
    const { uid, seen } = entry;
    if (!Number.isSafeInteger(uid) || (uid as number) < 0) return undefined;
    if (typeof seen !== 'number' || !Number.isFinite(seen)) return undefined;
    out.push([id, { uid: uid as number, seen }]);
  }
  return out;
}

export type OwnerCheck = { ok: true } | { ok: false; owner: number };

export class IdOwners {
  readonly file: string | null;
  readonly #log: Logger;
  readonly #owners = new Map<string, { uid: number; seen: number }>();

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
        this.#save();
      }
      return { ok: true };
    }
    this.#makeRoom(uid, busy);
    this.#owners.set(id, { uid, seen: now });
    this.#save();
    return { ok: true };
  }

  /** Bind ids that arrive with sessions (after a kexec) to the uid that preserved them. */
  adopt(id: string, uid: number, now = Date.now()): void {
    const entry = this.#owners.get(id);
    if (entry?.uid === uid) return;
    this.#owners.set(id, { uid, seen: now });
    this.#save();
  }

  #makeRoom(uid: number, busy: (id: string) => boolean): void {
    const mine = [...this.#owners].filter(([, e]) => e.uid === uid);
    if (mine.length < MAX_IDS_PER_UID) return;
    const idle = mine.filter(([id]) => !busy(id)).sort((a, b) => a[1].seen - b[1].seen);
    const victim = idle[0];
    if (victim) this.#owners.delete(victim[0]);
  }

  #load(file: string, now: number): void {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        this.#log.error({ err, file }, 'cannot read the id owners file; ids are unbound until re-subscribed');
      return;
    }
    let entries: [string, { uid: number; seen: number }][];
    try {
      const value: unknown = JSON.parse(text);
      entries = ownersFast(value) ?? Object.entries(OwnersFile.parse(value).owners);
    } catch {
      const aside = `${file}.damaged`;
      fs.renameSync(file, aside);
      this.#log.error({ file, aside }, 'the id owners file is damaged: moved aside; ids are unbound');
      return;
    }
    for (const [id, entry] of entries) {
      if (now - entry.seen <= OWNER_TTL_MS) this.#owners.set(id, entry);
    }
  }

  /**
   * Written at the first binding after a quiet spell, then paced
   * (paced-write.ts): a write per SUBSCRIBE, each of the whole table, made a
   * thousand VMMs subscribing quadratic (bench/scale.ts).
   */
  readonly #paced = new PacedWrite(() => this.#write());

  #save(): void {
    if (this.file) void this.#paced.request();
  }

  /** A failed write keeps the table in memory and says so: refusing a VMM for it would be worse. */
  #write(): void {
    if (!this.file) return;
    try {
      writeFileAtomic(
        this.file,
        `${JSON.stringify({ format: 'luod-id-owners-v1', owners: Object.fromEntries(this.#owners) })}\n`,
        { mode: 0o600, durable: false },
      );
    } catch (err) {
      this.#log.error(
        { err, file: this.file },
        'cannot write the id owners file: bindings hold until luod restarts',
      );
    }
  }
}
