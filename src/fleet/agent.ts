/**
 * The per-host agent: registers the host in etcd with a lease, and when the controller
 * assigns it, updates it (src/fleet/host-update.ts) inside a slot of the rollout's semaphore
 * taken with the same lease, then reports the outcome and the update record's figures in
 * its progress entry and gives the slot back.
 *
 * It is a companion process, not part of luod: luod stays free of etcd, gRPC and the
 * network, the agent talks to luod as any admin client does, and either can be restarted
 * alone. Every step is written to etcd before the next one starts, so an agent restarted
 * mid-update (killed, or across a real kexec) reads where its host was and finishes from
 * there, and a host never updates twice: only an `assigned` entry starts an update, and
 * the agent moves it to `updating` before it asks luod for anything but the LOAD.
 */
import type { Logger } from 'pino';
import { CodedError, errorCode } from '../sys/error.js';
import { type Etcd3, isUnavailable, type Lease } from './etcd.js';
import {
  type HostOutcome,
  type HostUpdateOptions,
  luodStatus,
  precheck,
  runUpdate,
  settleAfter,
} from './host-update.js';
import type { FleetKeys } from './keys.js';
import { type HostProgress, type RolloutSpec, readRollout, writeHost } from './rollout.js';
import { Semaphore } from './semaphore.js';
import { Waker } from './waker.js';

/** The semaphore group of rollout slots. */
export const ROLLOUT_GROUP = 'rollout';

export interface AgentOptions extends HostUpdateOptions {
  readonly etcd: Etcd3;
  readonly keys: FleetKeys;
  readonly id: string;
  readonly log: Logger;
  /** TTL of the lease the registration and the slot live with, s. */
  readonly ttlSeconds?: number;
  readonly pollMs?: number;
}

export class Agent {
  private lease: Lease | undefined;
  private leaseLost = false;
  private readonly semaphore: Semaphore;

  constructor(private readonly options: AgentOptions) {
    this.semaphore = new Semaphore(options.etcd, options.keys, ROLLOUT_GROUP);
  }

  /** Serve until `signal` aborts. */
  async run(signal?: AbortSignal): Promise<void> {
    const { etcd, keys, log } = this.options;
    const waker = new Waker(etcd, keys.rollout());
    try {
      while (!signal?.aborted) {
        try {
          await this.register();
          await this.step();
        } catch (err) {
          if (!isUnavailable(err)) throw err;
          log.warn({ err: (err as Error).message }, 'agent: etcd unavailable; trying again');
        }
        await waker.wait(this.options.pollMs ?? 500, signal);
      }
    } finally {
      await waker.close();
    }
  }

  /** Stop without giving anything back: as a host that dies (the lease expires on its own). */
  abandon(): void {
    this.lease?.release();
    this.lease = undefined;
  }

  /** Give the slot and the registration back at once (a clean shutdown). */
  async close(): Promise<void> {
    const lease = this.lease;
    this.lease = undefined;
    await lease?.revoke().catch(() => lease.release());
  }

  /** The lease (a new one if the last was lost) and the host's registration under it. */
  private async register(): Promise<string> {
    const { etcd, keys, id } = this.options;
    if (!this.lease || this.leaseLost) {
      this.lease?.release();
      this.leaseLost = false;
      const lease = etcd.lease(this.options.ttlSeconds ?? 10);
      lease.on('lost', () => {
        if (this.lease === lease) this.leaseLost = true;
      });
      this.lease = lease;
      const leaseId = await lease.grant();
      await etcd
        .put(keys.host(id))
        .value(JSON.stringify({ id, since: new Date().toISOString() }))
        .lease(leaseId);
      this.options.log.info({ lease: leaseId }, 'agent: registered');
    }
    return this.lease.grant();
  }

  /** One look at the rollout, and this host's next step in it. */
  private async step(): Promise<void> {
    const { etcd, keys, id, log } = this.options;
    const view = await readRollout(etcd, keys);
    const mine = view.hosts.get(id);
    if (!view.spec || !mine) return;
    const { progress } = mine;
    if (progress.state === 'updating') {
      // This agent was restarted during its host's update: finish it from the record.
      await this.finishInterrupted(progress);
      return;
    }
    if (progress.state !== 'assigned' || view.state !== 'running') return;

    const target = {
      kernel: view.spec.kernel,
      ...(view.spec.initrd !== undefined && { initrd: view.spec.initrd }),
    };
    const check = await precheck(this.options, target, view.spec.qualified);
    const now = Date.now();
    if (check.kind !== 'go') {
      const state = check.kind === 'skip' ? 'skipped' : 'failed';
      log[state === 'failed' ? 'warn' : 'info']({ reason: check.reason }, `agent: ${state}`);
      await this.report({ ...progress, state, reason: check.reason, finished_at: now, ...pair(check) });
      return;
    }
    const leaseId = await this.register();
    const slot = await this.semaphore.acquire(id, {
      slots: view.spec.max_parallel,
      lease: leaseId,
      conditions: [
        { key: keys.rolloutState(), column: 'Value', cmp: '==', value: 'running' },
        { key: keys.rolloutHost(id), column: 'Mod', cmp: '==', value: mine.mod },
      ],
    });
    if (!slot.ok) return; // full, or the rollout moved on: look again later
    const updating: HostProgress = {
      ...progress,
      state: 'updating',
      started_at: Date.now(),
      from: check.from,
      to: check.to,
    };
    if (!(await writeHost(etcd, keys, view, mine.mod, updating))) {
      await this.semaphore.release(id);
      return;
    }
    log.info({ from: check.from, to: check.to }, 'agent: updating');
    let outcome: HostOutcome;
    try {
      outcome = await runUpdate(this.options);
    } catch (err) {
      outcome = { ok: false, reason: `${errorCode(err)}: ${(err as Error).message}` };
    }
    await this.finish(updating, outcome);
  }

  /**
   * Found `updating` (this agent was restarted, or lost etcd's reply to its own write of
   * `updating`): judge the update from luod's last record, or run it if luod never got it.
   */
  private async finishInterrupted(progress: HostProgress): Promise<void> {
    const leaseId = await this.register();
    const spec = (await readRollout(this.options.etcd, this.options.keys)).spec;
    // Hold the slot again (under this lease) while the outcome is settled.
    if (spec) await this.semaphore.acquire(this.options.id, { slots: spec.max_parallel, lease: leaseId });
    let outcome: HostOutcome;
    try {
      outcome = await this.resumeUpdate(progress, spec);
    } catch (err) {
      outcome = { ok: false, reason: `after a restart: ${errorCode(err)}: ${(err as Error).message}` };
    }
    await this.finish(progress, outcome);
  }

  private async resumeUpdate(progress: HostProgress, spec: RolloutSpec | null): Promise<HostOutcome> {
    const settle = this.options.settleTimeoutMs ?? 120_000;
    const deadline = Date.now() + settle;
    // An update luod runs now is the one this agent asked for: wait until it has ended.
    let status = await luodStatus(this.options.socket);
    while (status.update !== null) {
      if (Date.now() > deadline)
        return { ok: false, reason: `luod's update ${status.update} did not end within ${settle / 1000} s` };
      await new Promise((r) => setTimeout(r, 250));
      status = await luodStatus(this.options.socket);
    }
    const last = status.last_update;
    const started = progress.started_at ?? 0;
    if (last && status.last_record && (last.timeline[0]?.at ?? 0) >= started - 1000) {
      if (last.outcome !== 'rebooted')
        return { ok: false, reason: `update ${last.outcome}${last.reason ? `: ${last.reason}` : ''}` };
      return settleAfter(this.options, status.subscribers, status.last_record, settle);
    }
    // luod has no update since `updating` was written, so it never got the UPDATE: the
    // host still runs its old kernel, and nothing was preserved or paused. This entry
    // still holds its slot, so the update is run now, with the same checks as ever.
    if (!spec) return { ok: false, reason: 'the rollout has no spec; the update was not run' };
    this.options.log.info('agent: luod never got the UPDATE; running it now');
    const target = { kernel: spec.kernel, ...(spec.initrd !== undefined && { initrd: spec.initrd }) };
    const check = await precheck(this.options, target, spec.qualified);
    if (check.kind !== 'go') return { ok: false, reason: check.reason };
    try {
      return await runUpdate(this.options);
    } catch (err) {
      return { ok: false, reason: `${errorCode(err)}: ${(err as Error).message}` };
    }
  }

  /** Report the outcome (counted if a failure), then give the slot back. */
  private async finish(updating: HostProgress, outcome: HostOutcome): Promise<void> {
    const { log, id } = this.options;
    const done: HostProgress = {
      ...updating,
      state: outcome.ok ? 'done' : 'failed',
      finished_at: Date.now(),
      ...(outcome.reason !== undefined && { reason: outcome.reason }),
      ...(outcome.record && { record: outcome.record }),
    };
    log[outcome.ok ? 'info' : 'warn'](
      { reason: outcome.reason, record: outcome.record?.update },
      `agent: ${done.state}`,
    );
    const reported = await this.report(done, 'updating');
    if (reported) await this.semaphore.release(id);
  }

  /**
   * Write this host's progress (a failure counted with it), retrying through races with
   * the controller and through etcd outages: an outcome is never dropped while the entry
   * is still ours. False when the entry left `expect` (the controller declared the host lost).
   */
  private async report(progress: HostProgress, expect?: HostProgress['state']): Promise<boolean> {
    const { etcd, keys, log } = this.options;
    for (let attempt = 0; ; attempt++) {
      try {
        const view = await readRollout(etcd, keys);
        const mine = view.hosts.get(progress.id);
        if (!mine) return false;
        if (expect && mine.progress.state !== expect) {
          log.warn({ state: mine.progress.state }, 'agent: the entry moved on; outcome not written');
          return false;
        }
        if (await writeHost(etcd, keys, view, mine.mod, progress)) return true;
      } catch (err) {
        if (!isUnavailable(err)) throw err;
        if (attempt > 600) throw new CodedError('ETIMEDOUT', 'etcd stayed unreachable; outcome not written');
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

function pair(check: { from?: string; to?: string }): { from?: string; to?: string } {
  return {
    ...(check.from !== undefined && { from: check.from }),
    ...(check.to !== undefined && { to: check.to }),
  };
}
