/**
 * One host's live update under a FleetLock server instead of luokit's etcd (airlock, a
 * Kubernetes FleetLock server, or luokit's own): the Zincati sequence around
 * host-update.ts. Judge the pair first (nothing locked for a refused or skipped one), lock a
 * slot (`pre-reboot`, retried while the server says no), update, and unlock
 * (`steady-state`) only once the host is healthy again.
 *
 * A host whose update fails keeps its slot, as a Zincati node that never reaches steady
 * state does: with a FleetLock server, failures stop the fleet by holding its slots, and an
 * operator releases them. That is FleetLock's own failure budget (slots), not --max-failures.
 */
import type { Logger } from 'pino';
import { CodedError, errorCode } from '../sys/error.js';
import type { FleetLockClient } from './fleetlock-client.js';
import { type HostUpdateOptions, precheck, runUpdate, type Target } from './host-update.js';
import type { RecordSummary } from './rollout.js';

export interface FleetLockUpdateOptions extends HostUpdateOptions {
  readonly fleetlock: FleetLockClient;
  readonly target: Target;
  readonly qualified?: readonly (readonly [string, string])[];
  readonly log: Logger;
  /** Give up waiting for a slot after this long, ms. */
  readonly lockTimeoutMs?: number;
  readonly retryMs?: number;
  readonly signal?: AbortSignal;
}

export interface FleetLockUpdateResult {
  readonly state: 'done' | 'skipped' | 'failed';
  readonly reason?: string;
  readonly from?: string;
  readonly to?: string;
  /** Whether this host still holds its FleetLock slot. */
  readonly holds_slot: boolean;
  readonly record?: RecordSummary;
}

export async function updateWithFleetLock(options: FleetLockUpdateOptions): Promise<FleetLockUpdateResult> {
  const { fleetlock, log } = options;
  const retryMs = options.retryMs ?? 1000;
  const check = await precheck(options, options.target, options.qualified);
  const pair = {
    ...(check.from !== undefined && { from: check.from }),
    ...(check.to !== undefined && { to: check.to }),
  };
  if (check.kind === 'refuse') return { state: 'failed', reason: check.reason, holds_slot: false, ...pair };
  if (check.kind === 'skip') {
    await until(() => fleetlock.steadyState(), 'steady-state', options, retryMs, log);
    return { state: 'skipped', reason: check.reason, holds_slot: false, ...pair };
  }
  await until(() => fleetlock.preReboot(), 'pre-reboot', options, retryMs, log);
  log.info({ from: check.from, to: check.to }, 'fleetlock: slot locked; updating');
  let outcome: Awaited<ReturnType<typeof runUpdate>>;
  try {
    outcome = await runUpdate(options);
  } catch (err) {
    outcome = { ok: false, reason: `${errorCode(err)}: ${(err as Error).message}` };
  }
  const record = outcome.record ? { record: outcome.record } : {};
  if (!outcome.ok) {
    log.warn({ reason: outcome.reason }, 'fleetlock: update failed; the slot stays held');
    return { state: 'failed', reason: outcome.reason ?? 'failed', holds_slot: true, ...pair, ...record };
  }
  await until(
    () => fleetlock.steadyState(),
    'steady-state',
    { ...options, lockTimeoutMs: undefined },
    retryMs,
    log,
  );
  return { state: 'done', holds_slot: false, ...pair, ...record };
}

/** Repeat a FleetLock call until the server says 200 (a "no", or no answer, is retried). */
async function until(
  call: () => Promise<{ ok: boolean; status?: number; kind?: string; value?: string }>,
  what: string,
  options: { lockTimeoutMs?: number | undefined; signal?: AbortSignal },
  retryMs: number,
  log: Logger,
): Promise<void> {
  const deadline =
    options.lockTimeoutMs !== undefined ? Date.now() + options.lockTimeoutMs : Number.POSITIVE_INFINITY;
  let last = '';
  for (;;) {
    try {
      const r = await call();
      if (r.ok) return;
      last = `${r.status} ${r.kind}: ${r.value}`;
    } catch (err) {
      last = `${errorCode(err)}: ${(err as Error).message}`;
    }
    log.info({ answer: last }, `fleetlock: ${what} refused; trying again`);
    if (options.signal?.aborted) throw new CodedError('EINTR', `${what}: interrupted (last answer: ${last})`);
    if (Date.now() + retryMs > deadline)
      throw new CodedError(
        'ETIMEDOUT',
        `${what}: no slot within ${Math.round((options.lockTimeoutMs ?? 0) / 1000)} s (last answer: ${last})`,
      );
    await new Promise((r) => setTimeout(r, retryMs));
  }
}
