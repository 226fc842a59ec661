/**
 * The update record's file format (schema and the readings every consumer
 * shares): luod writes records (daemon/record-builder.ts), `luoctl report`,
 * the demo, the metrics and the bench read them. A file format read by many
 * lives here, not in the daemon.
 */
import { z } from 'zod';
import { onFirstUse } from '../sys/on-first-use.js';

export const RECORD_FORMAT = 'luod-update-record-v1';

/** The phases of luod's (and the kernel's) lane, in the order they happen. */
export const PHASES = [
  'load',
  'preserve',
  'barrier',
  'freeze',
  'kexec',
  'boot',
  'luod-ready',
  'restore',
  'claims',
  'finish',
] as const;
export type PhaseName = (typeof PHASES)[number];

/** What each phase covers, for the report and the docs. */
export const PHASE_MEANING: Record<PhaseName, string> = {
  load: 'the next kernel is loaded (kexec_file_load; emulated: its version chosen)',
  preserve: "luod creates every client's sessions and sends START_PRESERVATION",
  barrier: 'luod waits for every READY (clients preserve their memory and pause)',
  freeze: 'luod writes its state into luod-internal, releases the device, tells clients KEXEC',
  kexec: "from reboot(KEXEC) to the next kernel's start (the kernel freezes the sessions, hands over, jumps)",
  boot: 'the next kernel boots until luod starts',
  'luod-ready': 'luod starts until it reads the handover',
  restore: 'luod retrieves luod-internal and every session',
  claims: 'luod waits for every client to CLAIM its sessions',
  finish: 'luod finishes unclaimed sessions (or, on an abort, closes them) and closes the update',
};

// Schemas are built on first use, not when the module loads (sys/on-first-use.ts).
/** An update id: also the record's file name, so nothing that could leave the directory. */
export const UpdateId = onFirstUse(() =>
  z
    .string()
    .min(1)
    .max(64)
    .regex(/^[A-Za-z0-9_-]+$/, 'update ids use only letters, digits, "_" and "-"'),
);

const Time = onFirstUse(() => z.number().finite().nonnegative());

export const Span = onFirstUse(() =>
  z
    .object({ start: Time, end: Time.nullable() })
    .refine((s) => s.end === null || s.end >= s.start, 'a span ends before it starts'),
);
export type Span = z.infer<typeof Span>;

export const PhaseSpan = onFirstUse(() =>
  z
    .object({
      phase: z.enum(PHASES),
      start: Time,
      end: Time.nullable(),
      /** Why this phase failed, when it did. */
      failed: z.string().optional(),
    })
    .refine((s) => s.end === null || s.end >= s.start, 'a phase ends before it starts'),
);
export type PhaseSpan = z.infer<typeof PhaseSpan>;

export const ClientLane = onFirstUse(() =>
  z.object({
    id: z.string().min(1),
    uid: z.number().int().nonnegative(),
    sessions: z.array(z.string()),
    /** START_PRESERVATION sent until READY (or the failure). */
    preserve: Span.nullable(),
    ready: Time.nullable(),
    /** CLAIM received until the sessions reached the client. */
    claim: Span.nullable(),
    failure: z.string().nullable(),
  }),
);
export type ClientLane = z.infer<typeof ClientLane>;

export const OUTCOMES = ['in-progress', 'completed', 'aborted', 'refused', 'failed'] as const;
export type RecordOutcome = (typeof OUTCOMES)[number];

export const UpdateRecord = onFirstUse(() =>
  z
    .object({
      format: z.literal(RECORD_FORMAT),
      update: UpdateId,
      backend: z.enum(['real', 'emulated']),
      outcome: z.enum(OUTCOMES),
      reason: z.string().nullable(),
      /** Kernel versions: the one updated from, the one loaded. */
      from: z.string(),
      to: z.string(),
      started: Time,
      finished: Time.nullable(),
      phases: z.array(PhaseSpan),
      /** The gate's verdict on the pair (absent in records older than the gate). */
      gate: z
        .object({ outcome: z.string(), ok: z.boolean(), sentence: z.string(), forced: z.boolean() })
        .optional(),
      clients: z.array(ClientLane),
      failures: z.array(z.object({ id: z.string(), reason: z.string() })),
    })
    .refine((r) => (r.outcome === 'in-progress') === (r.finished === null), {
      message: 'a finished record has a finish time, an unfinished one has none',
    }),
);
export type UpdateRecord = z.infer<typeof UpdateRecord>;

/** The first problem of a failed validation, with where it is. */
export function describeRecordIssue(error: z.ZodError): string {
  const issue = error.issues[0];
  if (!issue) return 'invalid';
  return `${issue.path.join('.') || 'record'}: ${issue.message}`;
}

/**
 * The span in which at least one VM was paused, as luod sees it: from the
 * first READY to the last CLAIM (completed), or to the end of the update
 * (aborted, refused, failed), or to now-known (in progress). Null when no
 * client said READY.
 */
export function blackoutOf(record: UpdateRecord): { start: number; end: number } | null {
  const readies = record.clients.map((c) => c.ready).filter((t): t is number => t !== null);
  if (readies.length === 0) return null;
  const start = Math.min(...readies);
  const claims = record.clients.map((c) => c.claim?.end).filter((t): t is number => typeof t === 'number');
  let end: number;
  if (record.outcome === 'completed' && claims.length > 0) end = Math.max(...claims);
  else if (record.finished !== null) end = record.finished;
  else end = Math.max(...claims, ...record.phases.map((p) => p.end ?? p.start));
  return { start, end: Math.max(start, end) };
}
