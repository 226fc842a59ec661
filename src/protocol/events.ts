/**
 * What luod sends without being asked (docs/protocol.md): the events, as zod
 * schemas, so that luod builds them and clients read them from one
 * definition. A field these schemas do not know is not refused (a later
 * luod may add one); checkMessage (messages.ts) keeps it.
 */
import { z } from 'zod';
import { onFirstUse } from '../sys/on-first-use.js';
import { MAX_SESSIONS_PER_CLIENT } from './messages.js';

// Schemas are built on first use, not when the module loads (sys/on-first-use.ts).
/** The names of a client's sessions, one per fd carried with the message, in order. */
export const SessionNames = onFirstUse(() => z.array(z.string().min(1)).max(MAX_SESSIONS_PER_CLIENT));

/** Preserve into these sessions (their fds ride on the line), pause, then READY before the deadline. */
export const StartPreservationEvent = onFirstUse(() =>
  z.object({
    event: z.literal('START_PRESERVATION'),
    update: z.string().min(1),
    id: z.string().min(1),
    sessions: SessionNames,
    /** ISO 8601. */
    deadline: z.string().refine((text) => !Number.isNaN(Date.parse(text)), 'not a date'),
    deadline_ms: z.number(),
  }),
);
export type StartPreservationEvent = z.infer<typeof StartPreservationEvent>;

/** The update is cancelled: resume and close the session fds. */
export const AbortedEvent = onFirstUse(() =>
  z.object({
    event: z.literal('ABORTED'),
    update: z.string(),
    reason: z.string(),
  }),
);
export type AbortedEvent = z.infer<typeof AbortedEvent>;

/** luod reboots into the next kernel next. */
export const KexecEvent = onFirstUse(() => z.object({ event: z.literal('KEXEC'), update: z.string() }));
export type KexecEvent = z.infer<typeof KexecEvent>;

/** A phase of an UPDATE begins; carries that UPDATE's `seq`, and the phase's details. */
export const ProgressEvent = onFirstUse(() =>
  z.object({
    event: z.literal('PROGRESS'),
    phase: z.string(),
    seq: z.union([z.number(), z.string()]).optional(),
  }),
);
export type ProgressEvent = z.infer<typeof ProgressEvent>;
