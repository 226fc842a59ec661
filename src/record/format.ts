/**
 * The update record's file format (schema and the readings every consumer
 * shares): luod writes records (daemon/record-builder.ts), `luoctl report`,
 * the demo, the metrics and the bench read them. A file format read by many
 * lives here, not in the daemon.
 */
import { z } from 'zod';
import {
  arrayOf,
  isFiniteNumber,
  isNonnegativeInt,
  isPlainObject,
  keepsOptional,
  stringArray,
} from '../sys/hand-checks.js';
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

const UPDATE_ID_CHARS = /^[A-Za-z0-9_-]+$/;

/**
 * `UpdateId`'s check by hand (1 to 64 of its characters; `+` makes the
 * regex refuse the empty string): the record's path is made from the id on
 * luod's restore after a kexec, where zod's first parse was tens of ms under
 * TCG. test/record-fast.test.ts holds the two to the same answer.
 */
export function isUpdateId(value: unknown): value is string {
  return typeof value === 'string' && value.length <= 64 && UPDATE_ID_CHARS.test(value);
}

// Schemas are built on first use, not when the module loads (sys/on-first-use.ts).
/** An update id: also the record's file name, so nothing that could leave the directory. */
export const UpdateId = onFirstUse(() =>
  z.string().min(1).max(64).regex(UPDATE_ID_CHARS, 'update ids use only letters, digits, "_" and "-"'),
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
    /**
     * The VM's blackout as its VMM reported it (RESUMED, docs/protocol.md): when it paused
     * the guest and when it resumed it, its own wall clock. Absent when the VMM did not
     * report (an older VMM, or one that never resumed), and in records older than RESUMED.
     */
    blackout: z.object({ paused_at: Time, resumed_at: Time }).optional(),
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
        .object({
          outcome: z.string(),
          ok: z.boolean(),
          sentence: z.string(),
          forced: z.boolean(),
          /** luod --require-qualified: was the pair qualified, by which record. */
          qualification: z
            .object({ required: z.string(), qualified: z.boolean(), record: z.string().optional() })
            .optional(),
        })
        .optional(),
      clients: z.array(ClientLane),
      failures: z.array(z.object({ id: z.string(), reason: z.string() })),
    })
    .refine((r) => (r.outcome === 'in-progress') === (r.finished === null), {
      message: 'a finished record has a finish time, an unfinished one has none',
    }),
);
export type UpdateRecord = z.infer<typeof UpdateRecord>;

/** `Time`: finite and not negative. */
const isTime = (v: unknown): v is number => isFiniteNumber(v) && v >= 0;

/** `Span.nullable()`: the span (a copy), null, or undefined for anything else. */
function nullableSpan(v: unknown): Span | null | undefined {
  if (v === null) return null;
  if (!isPlainObject(v) || !isTime(v.start)) return undefined;
  const { start, end } = v;
  if (end !== null && !(isTime(end) && end >= start)) return undefined;
  return { start, end };
}

function phaseSpanFast(v: unknown): PhaseSpan | undefined {
  if (!isPlainObject(v) || !isTime(v.start)) return undefined;
  const { phase, start, end, failed } = v;
  if (!PHASES.includes(phase as PhaseName)) return undefined;
  if (end !== null && !(isTime(end) && end >= start)) return undefined;
  if (failed !== undefined && typeof failed !== 'string') return undefined;
  const span: PhaseSpan = { phase: phase as PhaseName, start, end };
  if (keepsOptional(v, 'failed', failed)) span.failed = failed;
  return span;
}

function clientLaneFast(v: unknown): ClientLane | undefined {
  if (!isPlainObject(v)) return undefined;
  const { id, uid, ready, failure, blackout } = v;
  if (typeof id !== 'string' || id.length < 1 || !isNonnegativeInt(uid)) return undefined;
  if ((ready !== null && !isTime(ready)) || (failure !== null && typeof failure !== 'string'))
    return undefined;
  const sessions = stringArray(v.sessions);
  const preserve = nullableSpan(v.preserve);
  const claim = nullableSpan(v.claim);
  if (!sessions || preserve === undefined || claim === undefined) return undefined;
  const lane: ClientLane = { id, uid, sessions, preserve, ready, claim, failure };
  if (blackout !== undefined) {
    if (!isPlainObject(blackout)) return undefined;
    const { paused_at, resumed_at } = blackout;
    if (!isTime(paused_at) || !isTime(resumed_at)) return undefined;
    lane.blackout = { paused_at, resumed_at };
  } else if (keepsOptional(v, 'blackout', blackout)) lane.blackout = undefined;
  return lane;
}

type Gate = NonNullable<UpdateRecord['gate']>;

function gateFast(v: unknown): Gate | undefined {
  if (!isPlainObject(v)) return undefined;
  const { outcome, ok, sentence, forced, qualification: q } = v;
  if (typeof outcome !== 'string' || typeof ok !== 'boolean') return undefined;
  if (typeof sentence !== 'string' || typeof forced !== 'boolean') return undefined;
  const gate: Gate = { outcome, ok, sentence, forced };
  if (q !== undefined) {
    if (!isPlainObject(q) || typeof q.required !== 'string' || typeof q.qualified !== 'boolean')
      return undefined;
    if (q.record !== undefined && typeof q.record !== 'string') return undefined;
    gate.qualification = { required: q.required, qualified: q.qualified };
    if (keepsOptional(q, 'record', q.record)) gate.qualification.record = q.record;
  } else if (keepsOptional(v, 'qualification', q)) gate.qualification = undefined;
  return gate;
}

/**
 * An update record in its valid shape, checked by hand; undefined for
 * anything else. luod validates a record before each write and reads one
 * after a kexec (in its carried state, daemon/handover-state.ts) or a
 * restart, a thousand client lanes each time, and zod's first (interpreted)
 * parses of that were 50 to 100 ms of CPU, on the restore's critical path
 * after a kexec. `UpdateRecord` stays the validator of record: a record that
 * does not pass here goes through it, and its message is the one reported.
 * Like the schema it returns a copy with the known fields only, in the
 * schema's key order (the file's text is the same); test/record-fast.test.ts
 * holds the two to the same answer.
 */
export function updateRecordFast(value: unknown): UpdateRecord | undefined {
  if (!isPlainObject(value) || value.format !== RECORD_FORMAT) return undefined;
  const { update, backend, outcome, reason, from, to, started, finished, gate } = value;
  if (!isUpdateId(update)) return undefined;
  if (backend !== 'real' && backend !== 'emulated') return undefined;
  if (!OUTCOMES.includes(outcome as RecordOutcome)) return undefined;
  if ((reason !== null && typeof reason !== 'string') || typeof from !== 'string' || typeof to !== 'string')
    return undefined;
  if (!isTime(started) || (finished !== null && !isTime(finished))) return undefined;
  // the schema's refine: a finished record has a finish time, an unfinished one has none
  if ((outcome === 'in-progress') !== (finished === null)) return undefined;
  const phases = arrayOf(value.phases, phaseSpanFast);
  const clients = arrayOf(value.clients, clientLaneFast);
  const failures = arrayOf(value.failures, (f) =>
    isPlainObject(f) && typeof f.id === 'string' && typeof f.reason === 'string'
      ? { id: f.id, reason: f.reason }
      : undefined,
  );
  if (!phases || !clients || !failures) return undefined;
  const checkedGate = gate === undefined ? undefined : gateFast(gate);
  if (gate !== undefined && !checkedGate) return undefined;
  return {
    format: RECORD_FORMAT,
    update,
    backend,
    outcome: outcome as RecordOutcome,
    reason,
    from,
    to,
    started,
    finished,
    phases,
    ...(keepsOptional(value, 'gate', gate) && { gate: checkedGate }),
    clients,
    failures,
  };
}

/** The first problem of a failed validation, with where it is. */
export function describeRecordIssue(error: z.ZodError): string {
  const issue = error.issues[0];
  if (!issue) return 'invalid';
  return `${issue.path.join('.') || 'record'}: ${issue.message}`;
}

/**
 * Blackout, defined once for luokit: the time a VM is paused by a live update, from its
 * VMM pausing the guest (before READY) to its VMM resuming it (after CLAIM, or after
 * ABORTED), as the VMM measured and reported it (RESUMED). What a VMM does after the
 * resume (the example VMM's verification of guest memory) is not part of it.
 *
 * Across a real kexec the two ends come from two kernels' wall clocks: the next kernel
 * sets its clock from the RTC (to the second on x86) until NTP corrects it, so a VM's
 * blackout there is as good as that step (docs/observability.md).
 */
export function vmBlackoutMs(lane: ClientLane): number | null {
  return lane.blackout ? lane.blackout.resumed_at - lane.blackout.paused_at : null;
}

export interface BlackoutSummary {
  /** Every VM whose VMM reported its blackout, in the record's order. */
  vms: { id: string; ms: number; paused_at: number; resumed_at: number }[];
  /** The update's blackout: the longest of its VMs'. Null when no VMM reported. */
  maxMs: number | null;
  /** From the first pause to the last resume (what the report shades). Null when no VMM reported. */
  window: { start: number; end: number } | null;
  /** Clients that said READY but reported no blackout (luod knows only its READY to CLAIM). */
  unreported: string[];
}

/** The blackout of every VM of an update, and the update's (the longest), from the record alone. */
export function blackoutOf(record: UpdateRecord): BlackoutSummary {
  const vms = record.clients.flatMap((c) =>
    c.blackout
      ? [
          {
            id: c.id,
            ms: c.blackout.resumed_at - c.blackout.paused_at,
            paused_at: c.blackout.paused_at,
            resumed_at: c.blackout.resumed_at,
          },
        ]
      : [],
  );
  const unreported = record.clients.filter((c) => c.ready !== null && !c.blackout).map((c) => c.id);
  if (vms.length === 0) return { vms, maxMs: null, window: null, unreported };
  return {
    vms,
    maxMs: Math.max(...vms.map((v) => v.ms)),
    window: {
      start: Math.min(...vms.map((v) => v.paused_at)),
      end: Math.max(...vms.map((v) => v.resumed_at)),
    },
    unreported,
  };
}

/**
 * luod's own view, not the blackout: from the first READY to the last CLAIM (completed),
 * or to the end of the update (aborted, refused, failed), or to the latest time known (in
 * progress): the span in which luod held at least one VM paused. Each VM was paused at
 * least over its own READY to CLAIM, so for VMMs that do not report their blackout this is
 * all luod can say. Null when no client said READY.
 */
export function readyToClaimOf(record: UpdateRecord): { start: number; end: number } | null {
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
