/**
 * The names luod gives the session fds it leaves with a holder (systemd's fd
 * store, or the holder process), chosen so that a restarted luod can rebuild
 * who owns what from the names alone:
 *
 *   luod.<role>.<boot>.<update>.<uid>.<session>
 *
 *  - role: `out` (an outgoing session of an update before its kexec), `in`
 *    (an incoming session retrieved after the kexec, waiting for its CLAIM),
 *    `state` (the `luod-internal` session carrying luod's own state);
 *  - boot: the boot id of the kernel the fd was stored under. A name whose
 *    boot is not the running kernel's crossed a kexec (systemd carried it):
 *    its `out` session is now an incoming one;
 *  - update: the update id; uid: the subscriber's uid (CLAIM checks it);
 *  - session: the session name (`id` or `id.N`); the client id is the part
 *    before the first '.', since client ids have none.
 *
 * Every part is made of [A-Za-z0-9_-] (update ids and boot ids included), so
 * '.' separates them and the name is a valid FDNAME (no ':', at most 255).
 */
import { INTERNAL_SESSION, isClientId } from '../protocol/messages.js';
import { isValidFdName } from './sd-notify.js';

export type HeldRole = 'out' | 'in' | 'state';

export interface HeldName {
  readonly role: HeldRole;
  readonly boot: string;
  readonly update: string;
  readonly uid: number;
  readonly session: string;
  /** The client the session belongs to (empty for the state session). */
  readonly client: string;
}

const PART = /^[A-Za-z0-9_-]{1,64}$/;

/** A boot id made safe for a name: a uuid keeps its hex digits and dashes. */
export function bootPart(bootId: string): string {
  const cleaned = bootId.trim().replace(/[^A-Za-z0-9_-]/g, '');
  return cleaned.length > 0 ? cleaned.slice(0, 64) : 'unknown';
}

export function heldName(name: Omit<HeldName, 'client'>): string {
  for (const [what, part] of [
    ['boot', name.boot],
    ['update', name.update],
  ] as const) {
    if (!PART.test(part)) throw new TypeError(`held fd name: bad ${what} ${JSON.stringify(part)}`);
  }
  const text = `luod.${name.role}.${name.boot}.${name.update}.${name.uid}.${name.session}`;
  if (!isValidFdName(text)) throw new TypeError(`held fd name: not a valid FDNAME: ${text}`);
  return text;
}

/** The parts of a name luod gave, or null for any other name (not luod's, or damaged). */
export function parseHeldName(text: string): HeldName | null {
  const parts = text.split('.');
  if (parts.length < 6 || parts[0] !== 'luod') return null;
  const [, role, boot, update, uid, ...rest] = parts as [string, string, string, string, string, ...string[]];
  if (role !== 'out' && role !== 'in' && role !== 'state') return null;
  if (!PART.test(boot) || !PART.test(update) || !/^\d{1,10}$/.test(uid)) return null;
  const session = rest.join('.');
  if (role === 'state') {
    return session === INTERNAL_SESSION
      ? { role, boot, update, uid: Number(uid), session, client: '' }
      : null;
  }
  const client = rest[0]!;
  if (!isClientId(client)) return null;
  if (rest.length > 2 || (rest.length === 2 && !/^[1-9]\d?$/.test(rest[1]!))) return null;
  return { role, boot, update, uid: Number(uid), session, client };
}
