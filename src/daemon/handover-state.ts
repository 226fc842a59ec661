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
import { describeRecordIssue, UpdateRecord } from '../record/format.js';
import { Errno } from '../sys/errno.js';
import { SysError } from '../sys/error.js';
import { fstat, pread, pwriteAll } from '../sys/file.js';
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
  session.finish();
  return result.data;
}
