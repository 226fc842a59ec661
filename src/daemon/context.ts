/**
 * What luod's parts share. luod.ts (connections, admission, dispatch) owns
 * one LuodContext and hands it to the update run (update-run.ts) and to the
 * claims (claims.ts); the record's lifecycle is update-records.ts.
 *
 * The phase, the update in progress and the last update's outcome are one
 * value each: whichever part is running moves them, and STATUS reads them.
 * Keeping them here, rather than a copy in each part, is what lets the
 * phase be taken synchronously (two UPDATEs in one read, issue 11).
 */
import type { Logger } from 'pino';
import type { Session } from '../kernel/device.js';
import type { LineChannel } from '../protocol/lines.js';
import { CodedError } from '../sys/error.js';
import type { PhaseMark } from './handover-state.js';
import type { IdOwners } from './id-owners.js';
import type { SessionKeeper } from './keeper.js';
import type { LoadedKernel, LuodKernel } from './kernel.js';
import type { LuodMetrics } from './metrics.js';
import type { UpdateRecords } from './update-records.js';
import type { UpdateRun } from './update-run.js';

/** A command luod refuses: `code` goes to the client as is. */
export class LuodError extends CodedError {
  constructor(code: string, message: string) {
    super(code, message);
    this.name = 'LuodError';
  }
}

export const fail = (code: string, message: string) => new LuodError(code, message);

export type Phase = 'idle' | 'preserving' | 'kexec' | 'claiming';

/** A phase mark with the update it belongs to (`load`/`loaded` belong to none). */
export type PhaseEvent = PhaseMark & { update?: string };

export interface UpdateOutcome {
  update: string;
  outcome: 'rebooted' | 'aborted' | 'refused' | 'dry-run' | 'kexec';
  reason?: string;
  failed?: { id: string; reason: string }[];
  timeline: PhaseMark[];
  claims?: string[];
}

/** One connection to luod. */
export interface Client {
  readonly channel: LineChannel;
  readonly uid: number;
  readonly pid: number;
  id: string | null;
  sessionCount: number;
  malformed: number;
  /** Commands received and not yet answered (back-pressure, see luod.ts #received). */
  inflight: number;
}

/** A command's reply body and fds; `delivered`/`undelivered` run once the reply went out, or could not. */
export interface CommandResult {
  body: object;
  fds?: Session[];
  delivered?: () => void;
  undelivered?: () => void;
}

export interface LuodContext {
  readonly kernel: LuodKernel;
  readonly log: Logger;
  readonly claimTimeoutMs: number;
  readonly keeper: SessionKeeper | null;
  readonly metrics: LuodMetrics | null;
  readonly owners: IdOwners;
  readonly records: UpdateRecords;
  phase: Phase;
  /** The update between its first session and its ending (barrier, kexec), or null. */
  run: UpdateRun | null;
  lastUpdate: UpdateOutcome | null;
  /** The next kernel (LOAD), and when it was loaded: the record's load phase. */
  loaded: LoadedKernel | null;
  loadSpan: { start: number; end: number } | null;
  /** Record a phase mark in `timeline` (when given) and tell the observer. */
  mark(
    timeline: PhaseMark[] | undefined,
    update: string | undefined,
    phase: string,
    client?: string,
  ): PhaseMark;
  /** Send an event without waiting for it; a client that does not read is dropped instead. */
  notify(client: Client, event: object): void;
}
