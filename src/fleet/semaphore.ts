/**
 * A counting semaphore on etcd: at most `slots` holders per group, each holder one key.
 *
 * Taking a slot reads the group's keys (guard and holders) in one range, at one revision,
 * and writes the holder key in a transaction that compares the guard's mod revision with
 * the one read and bumps the guard: two hosts that read the same picture cannot both take
 * the last slot, since the second one's compare fails and it reads again. Releasing only
 * deletes a holder key; that frees room, so it needs no guard.
 *
 * A holder key written with a lease goes away when the lease expires: an agent that dies
 * while holding a slot gives it back without anyone's help. A FleetLock holder has no lease
 * (the protocol has no heartbeat; the client reboots while it holds the slot), as in airlock.
 *
 * Locks are recursive and owned, as FleetLock wants: taking a slot one already holds
 * succeeds (and moves it to the caller's new lease), releasing one not held is a no-op.
 */
import { CodedError } from '../sys/error.js';
import type { Etcd3 } from './etcd.js';
import type { FleetKeys } from './keys.js';
import { checkId } from './keys.js';

/** One compare of an etcd transaction, added to the taking of a slot (e.g. "the rollout runs"). */
export interface Condition {
  readonly key: string;
  readonly column: 'Value' | 'Mod' | 'Version' | 'Create';
  readonly cmp: '==' | '!=' | '<' | '>';
  readonly value: string | number;
}

export interface SlotHolder {
  readonly id: string;
  /** ISO time the slot was taken. */
  readonly since: string;
  /** The etcd lease ID (decimal) the slot lives with, or undefined for a FleetLock slot. */
  readonly lease: string | undefined;
}

export type AcquireResult =
  | { readonly ok: true; readonly already: boolean; readonly holders: readonly SlotHolder[] }
  | { readonly ok: false; readonly reason: 'full'; readonly holders: readonly SlotHolder[] }
  | { readonly ok: false; readonly reason: 'condition'; readonly holders: readonly SlotHolder[] };

export interface AcquireOptions {
  /** The group's number of slots. */
  readonly slots: number;
  /** Lease ID (decimal string) the holder key lives with. */
  readonly lease?: string;
  /** More compares that must hold when the slot is taken, in the same transaction. */
  readonly conditions?: readonly Condition[];
}

/** How often a transaction that lost a race is tried again before EAGAIN. */
const MAX_RACES = 50;

export class Semaphore {
  constructor(
    private readonly etcd: Etcd3,
    private readonly keys: FleetKeys,
    readonly group: string,
  ) {
    keys.semaphore(group); // checks the group's name
  }

  async holders(): Promise<SlotHolder[]> {
    return (await this.read()).holders;
  }

  /** Take a slot for `id`, unless the group is full or a condition fails. */
  async acquire(id: string, options: AcquireOptions): Promise<AcquireResult> {
    checkId(id);
    if (!Number.isInteger(options.slots) || options.slots < 1)
      throw new CodedError('EINVAL', `a semaphore needs at least one slot, not ${options.slots}`);
    const holderKey = this.keys.semaphoreHolder(this.group, id);
    const guardKey = this.keys.semaphoreGuard(this.group);
    for (let race = 0; race < MAX_RACES; race++) {
      const { guardMod, holders } = await this.read();
      const mine = holders.find((h) => h.id === id);
      if (mine && mine.lease === options.lease) return { ok: true, already: true, holders };
      if (!mine && holders.length >= options.slots) return { ok: false, reason: 'full', holders };
      const record: SlotHolder = { id, since: mine?.since ?? new Date().toISOString(), lease: options.lease };
      let txn = this.etcd.if(guardKey, 'Mod', '==', guardMod);
      for (const c of options.conditions ?? []) txn = txn.and(c.key, c.column, c.cmp, c.value);
      const put = this.etcd.put(holderKey).value(JSON.stringify(record));
      if (options.lease !== undefined) put.lease(options.lease);
      const result = await txn.then(put, this.etcd.put(guardKey).value(id)).commit();
      if (result.succeeded) {
        const others = holders.filter((h) => h.id !== id);
        return { ok: true, already: mine !== undefined, holders: [...others, record] };
      }
      // The guard moved (someone else took a slot: read again), or a condition failed.
      if ((await this.read()).guardMod === guardMod && (options.conditions?.length ?? 0) > 0)
        return { ok: false, reason: 'condition', holders };
    }
    throw new CodedError(
      'EAGAIN',
      `the semaphore of group ${this.group} is contended: gave up after ${MAX_RACES} races`,
    );
  }

  /** Give `id`'s slot back; false when it held none. */
  async release(id: string): Promise<boolean> {
    const result = await this.etcd.delete().key(this.keys.semaphoreHolder(this.group, id)).exec();
    return Number(result.deleted) > 0;
  }

  private async read(): Promise<{ guardMod: string; holders: SlotHolder[] }> {
    const prefix = this.keys.semaphore(this.group);
    const holdersPrefix = this.keys.semaphoreHolders(this.group);
    const guardKey = this.keys.semaphoreGuard(this.group);
    const range = await this.etcd.getAll().prefix(prefix).exec();
    let guardMod = '0';
    const holders: SlotHolder[] = [];
    for (const kv of range.kvs) {
      const key = kv.key.toString();
      if (key === guardKey) guardMod = kv.mod_revision;
      else if (key.startsWith(holdersPrefix)) {
        const id = this.keys.idOf(holdersPrefix, key);
        holders.push(parseHolder(id, kv.value.toString(), kv.lease));
      }
    }
    return { guardMod, holders };
  }
}

/** A holder key's value; a damaged one still counts as a held slot (never free one on a guess). */
function parseHolder(id: string, text: string, lease: string): SlotHolder {
  const leaseId = lease && lease !== '0' ? lease : undefined;
  try {
    const value = JSON.parse(text) as { since?: unknown };
    return { id, since: typeof value.since === 'string' ? value.since : '', lease: leaseId };
  } catch {
    return { id, since: '', lease: leaseId };
  }
}
