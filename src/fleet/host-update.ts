/**
 * One host's live update, as the fleet's agent runs it through luod's admin API: the same
 * steps an operator takes with `luoctl load` and `luoctl update`, plus the health check that
 * decides whether the host counts as a success.
 *
 *  - precheck: LOAD the target (luod runs the version gate and refuses a pair that cannot
 *    hand over, EPROTO); the agent judges the verdict again with image/gate.ts (a kernel
 *    loaded with --force does not pass) and applies the rollout's qualification policy;
 *    a host already on the target is skipped, never updated twice;
 *  - update: UPDATE, then wait for luod to close the update's record and for every VM that
 *    was subscribed before to be subscribed again (claimed, verified, resumed);
 *  - the figures the rollout reports come from that record (record/format.ts).
 */
import { LuoClient, LuoClientError } from '../client/index.js';
import { gateVerdict } from '../image/gate.js';
import { blackoutOf, type UpdateRecord } from '../record/format.js';
import { readRecordFile, recordPath } from '../record/store.js';
import { errorCode } from '../sys/error.js';
import type { RecordSummary } from './rollout.js';

export interface Target {
  /** `emu:VERSION`, or the absolute path of a kernel image on the host. */
  readonly kernel: string;
  readonly initrd?: string;
}

export type Precheck =
  | { readonly kind: 'go'; readonly from: string; readonly to: string }
  | { readonly kind: 'skip'; readonly from: string; readonly to: string; readonly reason: string }
  | { readonly kind: 'refuse'; readonly reason: string; readonly from?: string; readonly to?: string };

export interface HostOutcome {
  readonly ok: boolean;
  readonly reason?: string;
  readonly record?: RecordSummary;
}

export interface HostUpdateOptions {
  /** luod's socket. */
  readonly socket: string;
  /** How long VMs have to say READY (luod's UPDATE timeout), ms. */
  readonly readyTimeoutMs?: number;
  /** How long, after the reboot, the record has to close and the VMs to come back, ms. */
  readonly settleTimeoutMs?: number;
}

function loadRequest(target: Target): { kernel?: string; initrd?: string; emuVersion?: string } {
  if (target.kernel.startsWith('emu:')) return { emuVersion: target.kernel.slice(4) };
  return { kernel: target.kernel, ...(target.initrd !== undefined && { initrd: target.initrd }) };
}

async function connect(socket: string): Promise<LuoClient> {
  return LuoClient.connectWithRetry(socket, { timeoutMs: 30_000, commandTimeoutMs: 0 });
}

/** luod's STATUS, on a connection of its own. */
export async function luodStatus(socket: string): Promise<Awaited<ReturnType<LuoClient['status']>>> {
  const luod = await connect(socket);
  try {
    return await luod.status();
  } finally {
    luod.close();
  }
}

/** LOAD the target and judge the pair; nothing is preserved or paused yet. */
export async function precheck(
  options: HostUpdateOptions,
  target: Target,
  qualified?: readonly (readonly [string, string])[],
): Promise<Precheck> {
  const luod = await connect(options.socket);
  try {
    let reply: Awaited<ReturnType<LuoClient['load']>>;
    try {
      reply = await luod.load(loadRequest(target));
    } catch (err) {
      if (err instanceof LuoClientError)
        return { kind: 'refuse', reason: `LOAD: ${err.code}: ${err.message}` };
      throw err;
    }
    const gate = reply.loaded.gate;
    if (!gate) return { kind: 'refuse', reason: 'luod loaded the kernel without a gate verdict' };
    const from = gate.current.release;
    const to = gate.next.release;
    const verdict = gateVerdict(gate.current, gate.next);
    if (!verdict.ok) return { kind: 'refuse', reason: `gate: ${verdict.sentence}`, from, to };
    if (from === to) return { kind: 'skip', from, to, reason: `already runs ${to}` };
    if (qualified && !qualified.some(([f, t]) => f === from && t === to))
      return {
        kind: 'refuse',
        reason: `the pair ${from} -> ${to} is not qualified for this rollout`,
        from,
        to,
      };
    return { kind: 'go', from, to };
  } finally {
    luod.close();
  }
}

/** UPDATE, then the health check; the outcome with the record's figures. */
export async function runUpdate(options: HostUpdateOptions): Promise<HostOutcome> {
  const settle = options.settleTimeoutMs ?? 120_000;
  const luod = await connect(options.socket);
  let before: string[];
  let recordsDir: string | null;
  let reply: Awaited<ReturnType<LuoClient['update']>>;
  try {
    const status = await luod.status();
    before = [...status.subscribers];
    recordsDir = status.records_dir;
    try {
      reply = await luod.update({ timeoutMs: options.readyTimeoutMs ?? 30_000 });
    } catch (err) {
      return { ok: false, reason: `UPDATE: ${errorCode(err)}: ${(err as Error).message}` };
    }
  } finally {
    luod.close();
  }
  const recordFile = recordsDir ? recordPath(recordsDir, reply.update) : undefined;
  if (reply.outcome !== 'rebooted') {
    const failed = (reply.failed ?? []).map((f) => `${f.id}: ${f.reason}`).join('; ');
    const record = recordFile ? await closedRecord(recordFile, settle).catch(() => undefined) : undefined;
    return {
      ok: false,
      reason: `update ${reply.outcome}${reply.reason ? `: ${reply.reason}` : ''}${failed ? ` (${failed})` : ''}`,
      ...(record && { record: summarise(record) }),
    };
  }
  return settleAfter(options, before, recordFile, settle);
}

/** How long after the record closes the VMMs' blackout reports (RESUMED) are waited for. */
const BLACKOUT_REPORT_GRACE_MS = 5_000;

/** After the reboot: the record closed, every VM back, luod idle, the blackouts reported. */
export async function settleAfter(
  options: HostUpdateOptions,
  before: readonly string[],
  recordFile: string | undefined,
  settle: number,
): Promise<HostOutcome> {
  const deadline = Date.now() + settle;
  let record: UpdateRecord | undefined;
  if (recordFile) {
    try {
      record = await closedRecord(recordFile, settle);
    } catch (err) {
      return { ok: false, reason: `the update's record: ${errorCode(err)}: ${(err as Error).message}` };
    }
  }
  // The record closes at the last CLAIM; each VMM reports its blackout (RESUMED) after it
  // resumes, which luod writes into the closed record. So the figures are read again last,
  // once the VMs are back (or given up on), not at the close.
  const withRecord = (o: { ok: boolean; reason?: string }): HostOutcome => {
    let latest = record;
    if (recordFile && record) {
      try {
        latest = readRecordFile(recordFile);
      } catch {
        latest = record;
      }
    }
    return { ...o, ...(latest && { record: summarise(latest) }) };
  };
  if (record && record.outcome !== 'completed')
    return withRecord({
      ok: false,
      reason: `update ${record.outcome}${record.reason ? `: ${record.reason}` : ''}`,
    });
  if (record && record.failures.length > 0)
    return withRecord({
      ok: false,
      reason: `VMs failed: ${record.failures.map((f) => `${f.id}: ${f.reason}`).join('; ')}`,
    });
  // Every VMM that said READY reports its blackout once it resumed; one that predates
  // RESUMED never does, so the wait for it is short and never a failure.
  const reportsBy = Date.now() + BLACKOUT_REPORT_GRACE_MS;
  const blackoutsIn = (): boolean => {
    if (!recordFile || !record || Date.now() > reportsBy) return true;
    try {
      return blackoutOf(readRecordFile(recordFile)).unreported.length === 0;
    } catch {
      return true;
    }
  };
  let missing: string[] = [...before];
  let phase = '?';
  while (Date.now() < deadline) {
    try {
      const status = await luodStatus(options.socket);
      phase = status.phase;
      missing = before.filter((id) => !status.subscribers.includes(id));
    } catch (err) {
      phase = `unreachable (${errorCode(err)})`;
    }
    if (missing.length === 0 && phase === 'idle' && blackoutsIn()) return withRecord({ ok: true });
    await new Promise((r) => setTimeout(r, 250));
  }
  if (missing.length > 0)
    return withRecord({
      ok: false,
      reason: `VMs did not come back within ${Math.round(settle / 1000)} s: ${missing.join(', ')}`,
    });
  return withRecord({ ok: false, reason: `luod is not healthy after the update (phase ${phase})` });
}

async function closedRecord(file: string, timeoutMs: number): Promise<UpdateRecord> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const record = readRecordFile(file);
      if (record.outcome !== 'in-progress') return record;
    } catch (err) {
      if (errorCode(err) !== 'ENOENT' || Date.now() > deadline) throw err;
    }
    if (Date.now() > deadline) throw new LuoClientError('ETIMEDOUT', `record ${file} still in progress`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The figures of a record the rollout shows. */
export function summarise(record: UpdateRecord): RecordSummary {
  // Blackout as everywhere else: each VM's pause to resume, as its VMM reported it; the
  // host's is its longest, and the window runs from its first pause to its last resume.
  const blackout = blackoutOf(record);
  const phases: Record<string, number> = {};
  for (const p of record.phases) if (p.end !== null) phases[p.phase] = p.end - p.start;
  return {
    update: record.update,
    outcome: record.outcome,
    from: record.from,
    to: record.to,
    blackout_ms: blackout.maxMs,
    phases,
    started: record.started,
    finished: record.finished,
    blackout: blackout.window,
  };
}
