/**
 * The rollout controller: the elected one assigns pending hosts, in the spec's order,
 * while fewer than `max_parallel` are in flight and fewer than `max_failures` have failed;
 * marks a host whose agent vanished while in flight as failed ("lost"); stops the rollout
 * at `max_failures`; and closes it (done) when every host is through.
 *
 * All it knows it reads from etcd at each step, and every write is a transaction that also
 * checks that it still leads, that the rollout is in the state it read, and (to assign)
 * that no failure was counted since it read: a controller killed at any point, or one that
 * lost its lease, leaves nothing half-done, and the next one goes on from what etcd says.
 * The agents' slot semaphore, held with their leases, bounds the hosts that update at once
 * even if two controllers ever acted together.
 */
import type { Logger } from 'pino';
import { CodedError } from '../sys/error.js';
import { Election } from './election.js';
import { type Etcd3, isUnavailable } from './etcd.js';
import type { FleetKeys } from './keys.js';
import {
  FINAL_STATES,
  type HostProgress,
  IN_FLIGHT,
  type RolloutState,
  type RolloutView,
  readRollout,
  TERMINAL,
  writeHost,
} from './rollout.js';
import { Waker } from './waker.js';

export interface ControllerOptions {
  readonly etcd: Etcd3;
  readonly keys: FleetKeys;
  readonly log: Logger;
  /** Name of this controller in the election key (e.g. the host it runs on). */
  readonly name?: string;
  /** Its election lease's TTL, s (a dead controller is replaced after about this long). */
  readonly ttlSeconds?: number;
  /** How long an in-flight host may be without a live agent before it counts as lost, ms. */
  readonly lostAfterMs?: number;
  readonly pollMs?: number;
}

export interface ControllerOutcome {
  readonly state: RolloutState;
  readonly failures: number;
  readonly failed: readonly { id: string; reason: string }[];
}

export class Controller {
  private readonly election: Election;
  private readonly absentSince = new Map<string, number>();
  private readonly pollMs: number;
  private readonly lostAfterMs: number;

  constructor(private readonly options: ControllerOptions) {
    const ttl = options.ttlSeconds ?? 10;
    this.election = new Election(options.etcd, options.keys, options.name ?? 'controller', ttl);
    this.pollMs = options.pollMs ?? 500;
    this.lostAfterMs = options.lostAfterMs ?? ttl * 1000 * 2;
  }

  /** Lead (waiting for the election) and drive the rollout until it is over. */
  async run(signal?: AbortSignal): Promise<ControllerOutcome | null> {
    const { etcd, keys, log } = this.options;
    const waker = new Waker(etcd, keys.rollout());
    let leading = false;
    try {
      while (!signal?.aborted) {
        try {
          const leads = await this.election.tryLead();
          if (leads !== leading)
            log.info(
              { token: this.election.token },
              leads ? 'controller: elected' : 'controller: not the leader',
            );
          leading = leads;
          if (leads) {
            const outcome = await this.step();
            if (outcome) return outcome;
          }
        } catch (err) {
          if (!isUnavailable(err)) throw err;
          log.warn({ err: (err as Error).message }, 'controller: etcd unavailable; trying again');
        }
        await waker.wait(this.pollMs, signal);
      }
      return null;
    } finally {
      await waker.close();
      await this.election.resign().catch(() => {});
    }
  }

  /** One look and the actions it calls for; the outcome once the rollout is over. */
  async step(): Promise<ControllerOutcome | null> {
    const { etcd, keys, log } = this.options;
    const view = await readRollout(etcd, keys);
    if (!view.spec || !view.state) throw new CodedError('ENOENT', `there is no rollout under ${keys.prefix}`);
    const spec = view.spec;
    const leader = this.election.leaderCondition();
    const leaderIs = {
      key: leader.key,
      column: 'Value' as const,
      cmp: '==' as const,
      value: String(leader.value),
    };
    const hosts = spec.hosts.map((id) => view.hosts.get(id)).filter((h) => h !== undefined);
    const live = await this.liveAgents();

    // An in-flight host whose agent is gone for longer than its lease could last is lost.
    const now = Date.now();
    for (const { progress, mod } of hosts) {
      if (!IN_FLIGHT.includes(progress.state) || live.has(progress.id)) {
        this.absentSince.delete(progress.id);
        continue;
      }
      const since = this.absentSince.get(progress.id) ?? now;
      this.absentSince.set(progress.id, since);
      if (now - since < this.lostAfterMs) continue;
      const reason = `host lost: no live agent for ${Math.round((now - since) / 1000)} s while ${progress.state}`;
      const failed: HostProgress = { ...progress, state: 'failed', reason, finished_at: now };
      if (await writeHost(etcd, keys, view, mod, failed, [leaderIs])) {
        log.warn({ host: progress.id, reason }, 'controller: host failed');
        return null; // the counter moved: look again
      }
    }

    const state = view.state;
    const inFlight = hosts.filter((h) => IN_FLIGHT.includes(h.progress.state));
    const stateIs = { key: keys.rolloutState(), column: 'Value' as const, cmp: '==' as const, value: state };

    if ((state === 'running' || state === 'paused') && view.failures >= spec.max_failures) {
      await this.setState(view, state, 'stopped', leaderIs);
      log.warn({ failures: view.failures }, 'controller: rollout stopped at its failure limit');
      return null;
    }
    if (
      (state === 'running' || state === 'paused') &&
      hosts.every((h) => TERMINAL.includes(h.progress.state))
    ) {
      await this.setState(view, state, 'done', leaderIs);
      log.info('controller: rollout done');
      return null;
    }
    if (FINAL_STATES.includes(state)) {
      // Hosts assigned but not started never will be: put them back, so status says so.
      for (const h of inFlight.filter((x) => x.progress.state === 'assigned'))
        await writeHost(etcd, keys, view, h.mod, { id: h.progress.id, state: 'pending' }, [leaderIs]);
      if (inFlight.some((h) => h.progress.state === 'updating')) return null;
      return this.outcome(view);
    }
    if (state !== 'running') return null;

    let slots = spec.max_parallel - inFlight.length;
    for (const { progress, mod } of hosts) {
      if (slots <= 0) break;
      if (progress.state !== 'pending') continue;
      const assigned: HostProgress = { id: progress.id, state: 'assigned', assigned_at: Date.now() };
      const ok = await writeHost(etcd, keys, view, mod, assigned, [
        leaderIs,
        stateIs,
        { key: keys.rolloutFailures(), column: 'Mod', cmp: '==', value: view.failuresMod },
      ]);
      if (!ok) return null; // something moved: look again
      log.info({ host: progress.id }, 'controller: host assigned');
      slots--;
    }
    return null;
  }

  private async setState(
    view: RolloutView,
    from: RolloutState,
    to: RolloutState,
    leaderIs: { key: string; column: 'Value'; cmp: '=='; value: string },
  ): Promise<boolean> {
    const { etcd, keys } = this.options;
    const key = keys.rolloutState();
    const result = await etcd
      .if(key, 'Value', '==', from)
      .and(leaderIs.key, leaderIs.column, leaderIs.cmp, leaderIs.value)
      .and(keys.rolloutFailures(), 'Mod', '==', view.failuresMod)
      .then(etcd.put(key).value(to))
      .commit();
    return result.succeeded;
  }

  private async liveAgents(): Promise<Set<string>> {
    const { etcd, keys } = this.options;
    const range = await etcd.getAll().prefix(keys.hosts()).keys();
    return new Set(range.map((k) => keys.idOf(keys.hosts(), k)));
  }

  private outcome(view: RolloutView): ControllerOutcome {
    const failed = [...view.hosts.values()]
      .filter((h) => h.progress.state === 'failed')
      .map((h) => ({ id: h.progress.id, reason: h.progress.reason ?? 'failed' }));
    return { state: view.state!, failures: view.failures, failed };
  }
}
