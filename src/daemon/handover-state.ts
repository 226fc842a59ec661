/**
 * What luod carries across the kexec about itself: the update id, which
 * client owns which sessions, each client's uid, the phase timeline and
 * (from v2) the update's record so far (record-builder.ts), which luod completes
 * after boot. A v1 state, from an older luod, is still accepted.
 *
 * It travels in a sealed memfd preserved at token 0 of the session named
 * `luod-internal`, so the next kernel hands it back with the VMs' memory,
 * and it is validated before use: a damaged record is reported, never
 * half-trusted.
 */
import { z } from 'zod';
import type { LiveUpdateDevice, Session } from '../kernel/device.js';
import { INTERNAL_SESSION } from '../protocol/messages.js';
import { describeRecordIssue, UpdateRecord, updateRecordFast } from '../record/format.js';
import { Errno } from '../sys/errno.js';
import { SysError } from '../sys/error.js';
import { fstat, pread, pwriteAll } from '../sys/file.js';
import {
  arrayOf,
  isFiniteNumber,
  isNonnegativeInt,
  isPlainObject,
  keepsOptional,
  stringArray,
} from '../sys/hand-checks.js';
import {
  addSeals,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  MFD_ALLOW_SEALING,
  memfdCreate,
} from '../sys/memfd.js';
import { onFirstUse } from '../sys/on-first-use.js';
import { tieredSafeParse } from '../sys/tiered-parse.js';

export const STATE_FORMAT = 'luod-state-v2';
const STATE_FORMAT_V1 = 'luod-state-v1';
const STATE_TOKEN = 0n;
const MAX_STATE_BYTES = 1 << 20;

// Schemas are built on first use, not when the module loads (sys/on-first-use.ts).
export const PhaseMark = onFirstUse(() =>
  z.object({ phase: z.string(), at: z.number(), client: z.string().optional() }),
);
export type PhaseMark = z.infer<typeof PhaseMark>;

/** The fields both formats share. */
const StateFields = onFirstUse(() => ({
  update: z.string(),
  from: z.string(),
  to: z.string(),
  clients: z.array(
    z.object({ id: z.string(), uid: z.number().int().nonnegative(), sessions: z.array(z.string()).min(1) }),
  ),
  timeline: z.array(PhaseMark),
}));

export const CarriedState = onFirstUse(() =>
  z
    .object({ format: z.literal(STATE_FORMAT), ...StateFields, record: UpdateRecord })
    .refine((s) => s.record.update === s.update, 'the record is of another update'),
);
export type CarriedState = z.infer<typeof CarriedState>;

/** `PhaseMark` checked by hand (a copy), or undefined: for the fast paths of the files that carry a timeline. */
export function phaseMarkFast(v: unknown): PhaseMark | undefined {
  if (!isPlainObject(v) || typeof v.phase !== 'string' || !isFiniteNumber(v.at)) return undefined;
  const { phase, at, client } = v;
  if (client !== undefined && typeof client !== 'string') return undefined;
  const mark: PhaseMark = { phase, at };
  if (keepsOptional(v, 'client', client)) mark.client = client;
  return mark;
}

/**
 * A v2 carried state in its valid shape, checked by hand (its record by
 * updateRecordFast); undefined for anything else. It is the first thing luod
 * reads after a kexec, a thousand clients and their record's lanes, and
 * zod's first parse of it was ~100 ms of interpreted code on a host (about
 * ten times that under TCG) before any VM could claim its memory.
 * `CarriedState` stays the validator of record: what does not pass here goes
 * through it, which words the error. test/record-fast.test.ts holds the two
 * to the same answer. A v1 state (an older luod's, rare) is left to zod.
 */
export function carriedStateFast(value: unknown): CarriedState | undefined {
  if (!isPlainObject(value) || value.format !== STATE_FORMAT) return undefined;
  const { update, from, to } = value;
  if (typeof update !== 'string' || typeof from !== 'string' || typeof to !== 'string') return undefined;
  const clients = arrayOf(value.clients, (c) => {
    if (!isPlainObject(c) || typeof c.id !== 'string' || !isNonnegativeInt(c.uid)) return undefined;
    const sessions = stringArray(c.sessions);
    return sessions && sessions.length >= 1 ? { id: c.id, uid: c.uid, sessions } : undefined;
  });
  const timeline = arrayOf(value.timeline, phaseMarkFast);
  const record = updateRecordFast(value.record);
  if (!clients || !timeline || !record) return undefined;
  // the schema's refine: the record is of this update
  if (record.update !== update) return undefined;
  return { format: STATE_FORMAT, update, from, to, clients, timeline, record };
}

/** What an older luod carried (no record): read, never written. */
const CarriedStateV1 = onFirstUse(() => z.object({ format: z.literal(STATE_FORMAT_V1), ...StateFields }));
export type CarriedStateV1 = z.infer<typeof CarriedStateV1>;

/** Write the state into a sealed memfd and preserve it in a new `luod-internal` session. */
export function preserveState(device: LiveUpdateDevice, state: CarriedState): Session {
  const bytes = Buffer.from(JSON.stringify(state));
  const session = device.createSession(INTERNAL_SESSION);
  try {
    using memfd = memfdCreate(INTERNAL_SESSION, MFD_ALLOW_SEALING);
    pwriteAll(memfd, bytes, 0);
    addSeals(memfd, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
    session.preserveFd(memfd, STATE_TOKEN);
    return session;
  } catch (err) {
    session.close();
    throw err;
  }
}

/**
 * Read the state the previous kernel's luod left, or null when there is none
 * (a cold boot, or no update in progress). The session is finished after.
 */
export function retrieveState(device: LiveUpdateDevice): CarriedState | CarriedStateV1 | null {
  let session: Session;
  try {
    session = device.retrieveSession(INTERNAL_SESSION);
  } catch (err) {
    if ((err as SysError).code === 'ENOENT') return null;
    throw err;
  }
  try {
    return readCarriedState(session);
  } finally {
    session.close();
  }
}

/**
 * Read and validate the state in an incoming `luod-internal` session (token
 * 0), then finish the session; the caller closes it. Used after a reboot
 * (retrieveState) and by a luod that got the session back from systemd's fd
 * store (keeper.ts).
 */
export function readCarriedState(session: Session): CarriedState | CarriedStateV1 {
  using memfd = session.retrieveFd(STATE_TOKEN);
  const size = fstat(memfd).size;
  if (size > MAX_STATE_BYTES)
    throw new SysError(
      'luod-state',
      Errno.EFBIG,
      `luod state is ${size} bytes, more than ${MAX_STATE_BYTES}`,
    );
  let parsed: unknown;
  try {
    parsed = JSON.parse(pread(memfd, size, 0).toString('utf8'));
  } catch {
    throw new SysError('luod-state', Errno.EINVAL, 'the luod state carried across the kexec is not JSON');
  }
  const state = carriedStateFast(parsed) ?? validated(parsed);
  session.finish();
  return state;
}

/** The carried state through its zod schema (v1 or v2): what the fast path leaves, worded when invalid. */
function validated(parsed: unknown): CarriedState | CarriedStateV1 {
  const format = (parsed as { format?: unknown } | null)?.format;
  const result =
    format === STATE_FORMAT_V1
      ? tieredSafeParse(CarriedStateV1, parsed)
      : tieredSafeParse(CarriedState, parsed);
  if (!result.success) {
    throw new SysError(
      'luod-state',
      Errno.EINVAL,
      `the luod state carried across the kexec is invalid: ${describeRecordIssue(result.error)}`,
    );
  }
  return result.data;
}
