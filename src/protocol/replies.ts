/**
 * luod's replies (docs/protocol.md) as zod schemas: the fields of each
 * command's `{"ok": true, ...}` line, without `ok` and `seq`. luod builds
 * them to these types; clients and luoctl read them with these schemas.
 * Unknown fields are allowed, as in events (events.ts).
 */
import { z } from 'zod';
import { onFirstUse } from '../sys/on-first-use.js';
import { SessionNames } from './events.js';
import type { Command } from './messages.js';

// Schemas are built on first use, not when the module loads (sys/on-first-use.ts).
const Backend = onFirstUse(() => z.enum(['real', 'emulated']));

/** `{"ok": false, "error": {...}}`: code is an errno name, message a sentence. */
export const ErrorReply = onFirstUse(() =>
  z.object({
    ok: z.literal(false),
    error: z.object({ code: z.string(), message: z.string() }),
  }),
);
export type ErrorReply = z.infer<typeof ErrorReply>;

export const HelloReply = onFirstUse(() =>
  z.object({
    version: z.number().int(),
    server: z.string(),
    backend: Backend,
    limits: z.object({
      max_line: z.number().int(),
      max_fds: z.number().int(),
      max_clients: z.number().int(),
      max_id: z.number().int(),
    }),
    /** The optional commands this luod knows (messages.ts OPTIONAL_COMMANDS); absent from older luods. */
    commands: z.array(z.string()).optional(),
  }),
);
export type HelloReply = z.infer<typeof HelloReply>;

export const SubscribeReply = onFirstUse(() => z.object({ id: z.string(), sessions: SessionNames }));
export type SubscribeReply = z.infer<typeof SubscribeReply>;

/** With one incoming session fd per name, in order. */
export const ClaimReply = onFirstUse(() =>
  z.object({ id: z.string(), update: z.string(), sessions: SessionNames }),
);
export type ClaimReply = z.infer<typeof ClaimReply>;

/** What one kernel writes or reads at a live update (image/gate.ts). */
const SpokenFormats = onFirstUse(() =>
  z.object({
    release: z.string(),
    kho: z.string().optional(),
    luo: z.string().optional(),
    files: z.array(z.string()),
    source: z.string(),
    unreadable: z.string().optional(),
  }),
);

/** The gate's verdict on the loaded kernel: what it reads against what this kernel writes. */
export const GateReport = onFirstUse(() =>
  z.object({
    outcome: z.enum(['works', 'no-handover', 'cold-boot', 'panic', 'files-lost', 'unknown']),
    ok: z.boolean(),
    sentence: z.string(),
    /** Loaded with --force despite the verdict. */
    forced: z.boolean(),
    current: SpokenFormats,
    next: SpokenFormats,
    /** luod --require-qualified: the pair's qualification (qualify/policy.ts). */
    qualification: z
      .object({
        required: z.string(),
        qualified: z.boolean(),
        sentence: z.string(),
        record: z.string().optional(),
      })
      .optional(),
  }),
);
export type GateReport = z.infer<typeof GateReport>;

/** The kernel LOAD chose (emulated: `version` is the next emulated kernel). */
export const LoadedKernel = onFirstUse(() =>
  z.object({
    kernel: z.string(),
    initrd: z.string().optional(),
    cmdline: z.string(),
    version: z.string().optional(),
    gate: GateReport.optional(),
  }),
);
export type LoadedKernel = z.infer<typeof LoadedKernel>;

export const LoadReply = onFirstUse(() => z.object({ loaded: LoadedKernel }));
export type LoadReply = z.infer<typeof LoadReply>;

export const TimelineMark = onFirstUse(() =>
  z.object({ phase: z.string(), at: z.number(), client: z.string().optional() }),
);
export type TimelineMark = z.infer<typeof TimelineMark>;

/** How an UPDATE ended (also STATUS's `last_update`). */
export const UpdateReply = onFirstUse(() =>
  z.object({
    update: z.string(),
    outcome: z.enum(['rebooted', 'aborted', 'refused', 'dry-run', 'kexec']),
    reason: z.string().optional(),
    failed: z.array(z.object({ id: z.string(), reason: z.string() })).optional(),
    timeline: z.array(TimelineMark),
    claims: z.array(z.string()).optional(),
  }),
);
export type UpdateReply = z.infer<typeof UpdateReply>;

export const StatusReply = onFirstUse(() =>
  z.object({
    phase: z.enum(['idle', 'preserving', 'kexec', 'claiming']),
    backend: Backend,
    update: z.string().nullable(),
    loaded: LoadedKernel.nullable(),
    clients: z.number().int(),
    subscribers: z.array(z.string()),
    pending_claims: z.array(z.string()),
    kexec_mode: z.enum(['standalone', 'systemd']),
    /** Who else holds the session fds (keeper.ts). */
    holder: z.object({ kind: z.string(), held: z.number() }).nullable(),
    last_update: UpdateReply.nullable(),
    records_dir: z.string().nullable(),
    last_record: z.string().nullable(),
    /** The client limit and what it needs of the host (daemon/capacity.ts); admins only. */
    capacity: z
      .object({
        max_clients: z.number().int(),
        open_files: z.number().int().nullable(),
        open_files_needed: z.number().int(),
        fd_store_needed: z.number().int(),
        listen_backlog: z.number().int(),
      })
      .optional(),
    /**
     * How long each list is in the whole STATUS (status-page.ts): a reply
     * longer than a line is sent in pages. Absent from a luod older than pages.
     */
    counts: z
      .object({
        subscribers: z.number().int(),
        pending_claims: z.number().int(),
        claims: z.number().int(),
        failed: z.number().int(),
        client_marks: z.number().int(),
      })
      .optional(),
    /** This reply is one page: its lists are entries [offset, offset + limit); `next`: the next page's offset. */
    page: z
      .object({ offset: z.number().int(), limit: z.number().int(), next: z.number().int().nullable() })
      .optional(),
  }),
);
export type StatusReply = z.infer<typeof StatusReply>;

/** A list reply longer than a line comes in pages (list-page.ts); both absent from a luod older than pages. */
const listPaging = () => ({
  /** How many entries the whole list has. */
  count: z.number().int().optional(),
  /** This reply is one page: entries [offset, offset + limit); `next`: the next page's offset. */
  page: z
    .object({ offset: z.number().int(), limit: z.number().int(), next: z.number().int().nullable() })
    .optional(),
});

export const ClientsReply = onFirstUse(() =>
  z.object({
    clients: z.array(
      z.object({ id: z.string().nullable(), uid: z.number(), pid: z.number(), sessions: z.number() }),
    ),
    ...listPaging(),
  }),
);
export type ClientsReply = z.infer<typeof ClientsReply>;

export const SessionsReply = onFirstUse(() =>
  z.object({
    sessions: z.array(
      z.object({
        name: z.string(),
        client: z.string(),
        direction: z.enum(['outgoing', 'incoming']),
        ready: z.boolean().optional(),
        claimed: z.boolean().optional(),
      }),
    ),
    ...listPaging(),
  }),
);
export type SessionsReply = z.infer<typeof SessionsReply>;

/** RESUMED: the VM's blackout as luod recorded it (resumed_at - paused_at), in ms. */
export const ResumedReply = onFirstUse(() => z.object({ blackout_ms: z.number() }));
export type ResumedReply = z.infer<typeof ResumedReply>;

/** UNSUBSCRIBE, READY, FAILED, ABORT: nothing but `ok`. */
export const EmptyReply = onFirstUse(() => z.object({}));
export type EmptyReply = z.infer<typeof EmptyReply>;

/** Each command's reply, for code that is given a command name. */
export const REPLIES = {
  HELLO: HelloReply,
  SUBSCRIBE: SubscribeReply,
  UNSUBSCRIBE: EmptyReply,
  READY: EmptyReply,
  FAILED: EmptyReply,
  CLAIM: ClaimReply,
  RESUMED: ResumedReply,
  STATUS: StatusReply,
  CLIENTS: ClientsReply,
  SESSIONS: SessionsReply,
  LOAD: LoadReply,
  UPDATE: UpdateReply,
  ABORT: EmptyReply,
} as const satisfies Record<Command['cmd'], z.ZodType<unknown>>;
export type ReplyOf<C extends keyof typeof REPLIES> = z.infer<(typeof REPLIES)[C]>;
