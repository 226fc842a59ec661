/**
 * luod's protocol messages (docs/protocol.md) as zod schemas: everything a
 * client sends is validated here before luod acts on it. What luod sends
 * back: events.ts and replies.ts.
 */
import { z } from 'zod';
import { isPlainObject } from '../sys/hand-checks.js';
import { onFirstUse } from '../sys/on-first-use.js';
import { tieredSafeParse } from '../sys/tiered-parse.js';
import { LIST_MAX_LIMIT } from './list-page.js';
import { STATUS_MAX_LIMIT } from './status-page.js';

export const PROTOCOL_VERSION = 1;
export const DEFAULT_SOCKET = '/run/luod/liveupdate.sock';
/**
 * How many connections luod serves at once unless told otherwise (luod
 * --max-clients): a host's VMMs plus operators. Sized for 1000 VMs per host;
 * what follows from it (listen queue, open files, the systemd fd store) is in
 * docs/operations.md and in `luoctl doctor`.
 */
export const DEFAULT_MAX_CLIENTS = 1024;
export const MAX_ID_LENGTH = 48;
export const MAX_SESSIONS_PER_CLIENT = 8;
/** Session name luod keeps its own state in, as the upstream design does. */
export const INTERNAL_SESSION = 'luod-internal';

/** Where luod listens: --socket, else $LUOD_SOCKET, else the default. */
export function socketPath(explicit?: string, env: NodeJS.ProcessEnv = process.env): string {
  return explicit ?? env.LUOD_SOCKET ?? DEFAULT_SOCKET;
}

// Schemas are built on first use, not when the module loads (sys/on-first-use.ts).
const seq = onFirstUse(() => z.union([z.number(), z.string().max(64)]).optional());

/** A wall-clock time, epoch milliseconds (Date.now()). */
const epochMs = onFirstUse(() => z.number().min(0).max(8.64e15));

const CLIENT_ID_CHARS = /^[A-Za-z0-9_-]+$/;

/**
 * The rule of `clientId` below as a plain check, for where ids are checked by the
 * thousand and no message is wanted: a restarted luod reads 4 held names per VMM
 * (held-names.ts). A test holds the two to the same answer on any string.
 */
export function isClientId(text: string): boolean {
  return (
    text.length >= 1 &&
    text.length <= MAX_ID_LENGTH &&
    CLIENT_ID_CHARS.test(text) &&
    text !== INTERNAL_SESSION
  );
}

export const clientId = onFirstUse(() =>
  z
    .string()
    .min(1)
    .max(MAX_ID_LENGTH)
    .regex(CLIENT_ID_CHARS, 'ids use only letters, digits, "_" and "-"')
    .refine((id) => id !== INTERNAL_SESSION, 'this id is reserved for luod'),
);

export const Command = onFirstUse(() =>
  z.discriminatedUnion('cmd', [
    z.object({
      cmd: z.literal('HELLO'),
      seq,
      versions: z.array(z.number().int()).min(1).max(16).optional(),
      client: z.string().max(128).optional(),
    }),
    z.object({
      cmd: z.literal('SUBSCRIBE'),
      seq,
      id: clientId,
      sessions: z.number().int().min(1).max(MAX_SESSIONS_PER_CLIENT).optional(),
    }),
    z.object({ cmd: z.literal('UNSUBSCRIBE'), seq }),
    z.object({ cmd: z.literal('READY'), seq, update: z.string().max(64).optional() }),
    z.object({
      cmd: z.literal('FAILED'),
      seq,
      update: z.string().max(64).optional(),
      reason: z.string().max(1024).optional(),
    }),
    z.object({ cmd: z.literal('CLAIM'), seq, id: clientId, force: z.boolean().optional() }),
    /**
     * The VMM's own account of its VM's blackout in an update (optional, after CLAIM or
     * ABORTED): when it paused the guest and when it resumed it, wall-clock epoch ms. luod
     * records it in the update's record; blackout means exactly this span (docs/protocol.md).
     */
    z.object({
      cmd: z.literal('RESUMED'),
      seq,
      id: clientId,
      update: z.string().min(1).max(64),
      paused_at: epochMs,
      resumed_at: epochMs,
    }),
    z.object({
      cmd: z.literal('STATUS'),
      seq,
      /** A page of the lists (status-page.ts): from entry `offset`, at most `limit` of each. */
      offset: z.number().int().min(0).optional(),
      limit: z.number().int().min(1).max(STATUS_MAX_LIMIT).optional(),
    }),
    z.object({
      cmd: z.literal('CLIENTS'),
      seq,
      /** A page of the list (list-page.ts): from entry `offset`, at most `limit`. */
      offset: z.number().int().min(0).optional(),
      limit: z.number().int().min(1).max(LIST_MAX_LIMIT).optional(),
    }),
    z.object({
      cmd: z.literal('SESSIONS'),
      seq,
      offset: z.number().int().min(0).optional(),
      limit: z.number().int().min(1).max(LIST_MAX_LIMIT).optional(),
    }),
    z.object({
      cmd: z.literal('LOAD'),
      seq,
      kernel: z.string().max(4096).optional(),
      initrd: z.string().max(4096).optional(),
      cmdline: z.string().max(4096).optional(),
      emu_version: z.string().max(16).optional(),
      /** Load even when the gate finds a format mismatch (written into the update record). */
      force: z.boolean().optional(),
    }),
    z.object({
      cmd: z.literal('UPDATE'),
      seq,
      timeout_ms: z.number().int().min(100).max(3_600_000).optional(),
      dry_run: z.boolean().optional(),
    }),
    z.object({ cmd: z.literal('ABORT'), seq, reason: z.string().max(1024).optional() }),
  ]),
);
export type Command = z.infer<typeof Command>;

/** `seq` as the Command schema takes it (a number, or a string of at most 64). */
function isSeq(seq: unknown): boolean {
  return (typeof seq === 'number' && Number.isFinite(seq)) || (typeof seq === 'string' && seq.length <= 64);
}

/**
 * The commands a thousand VMMs send at once (SUBSCRIBE, READY, CLAIM), in
 * the shape they are valid in, checked by hand; undefined for anything else.
 * `Command` stays the validator of record: every other message, and any that
 * does not pass here, goes through it, and its error is the one a client
 * gets. This only spares building and running it where its answer is known
 * (a restarted luod's thousand CLAIMs are its first commands). Like the
 * schema, it keeps the known fields only. A test holds the two to the same
 * answer (test/hot-command.test.ts).
 */
export function parseHotCommand(value: unknown): Command | undefined {
  if (!isPlainObject(value)) return undefined;
  const v = value;
  if (v.seq !== undefined && !isSeq(v.seq)) return undefined;
  const seq = v.seq === undefined ? {} : { seq: v.seq as number | string };
  switch (v.cmd) {
    case 'CLAIM':
      if (typeof v.id !== 'string' || !isClientId(v.id)) return undefined;
      if (v.force !== undefined && typeof v.force !== 'boolean') return undefined;
      return { cmd: 'CLAIM', ...seq, id: v.id, ...(v.force !== undefined && { force: v.force }) };
    case 'READY':
      if (v.update !== undefined && !(typeof v.update === 'string' && v.update.length <= 64))
        return undefined;
      return { cmd: 'READY', ...seq, ...(v.update !== undefined && { update: v.update }) };
    case 'SUBSCRIBE': {
      if (typeof v.id !== 'string' || !isClientId(v.id)) return undefined;
      const n = v.sessions;
      if (
        n !== undefined &&
        !(Number.isSafeInteger(n) && (n as number) >= 1 && (n as number) <= MAX_SESSIONS_PER_CLIENT)
      )
        return undefined;
      return { cmd: 'SUBSCRIBE', ...seq, id: v.id, ...(n !== undefined && { sessions: n as number }) };
    }
    default:
      return undefined;
  }
}

export const ADMIN_COMMANDS = new Set(['LOAD', 'UPDATE', 'ABORT', 'CLIENTS', 'SESSIONS']);

/**
 * Commands a client may not assume every luod knows: each one a luod added after
 * protocol version 1 was fixed, listed in HELLO's reply (`commands`). A luod that
 * does not list one answers it ENOTSUP.
 */
export const OPTIONAL_COMMANDS = ['RESUMED'] as const;

/**
 * Session names for a client: the id, then id.1, id.2... Ids have no '.', so
 * two clients' names never collide, and at 48 bytes at most they fit in 63.
 */
export function sessionNames(id: string, count: number): string[] {
  return Array.from({ length: count }, (_, i) => (i === 0 ? id : `${id}.${i}`));
}

/** The one-line summary of a zod failure, for an error reply. */
export function describeInvalid(error: z.ZodError): string {
  return error.issues
    .slice(0, 3)
    .map((issue) => `${issue.path.join('.') || 'message'}: ${issue.message}`)
    .join('; ');
}

/**
 * Check a reply or event against its schema. On success it is the value
 * itself, typed (these schemas transform nothing, so key order and unknown
 * fields stay as luod sent them); on failure, a one-line account of the
 * wrong fields.
 */
export function checkMessage<T>(
  schema: z.ZodType<T>,
  value: unknown,
): { ok: true; value: T } | { ok: false; problem: string } {
  const parsed = tieredSafeParse(schema, value);
  return parsed.success
    ? { ok: true, value: value as T }
    : { ok: false, problem: describeInvalid(parsed.error) };
}
