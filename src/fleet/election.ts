/**
 * Which controller acts: the one whose token is in the election key. The key is created
 * only if absent (a transaction on its create revision) and lives with the controller's
 * lease, so a controller that dies is replaced once its lease expires. Every write a
 * controller makes carries `leaderCondition()`, so that a controller that lost the key
 * (its lease expired while it was cut off) cannot act even before it notices.
 *
 * etcd3's own Election is not used: it waits for its turn on a watch, and etcd3 re-opens a
 * watch broken by an etcd restart only after a backoff of up to 30 s; this one polls.
 */
import { randomUUID } from 'node:crypto';
import type { Etcd3, Lease } from './etcd.js';
import type { FleetKeys } from './keys.js';
import type { Condition } from './semaphore.js';

export class Election {
  /** Unique per controller process, so that a restarted controller is a new candidate. */
  readonly token: string;
  private lease: Lease | undefined;
  private lost = false;

  constructor(
    private readonly etcd: Etcd3,
    private readonly keys: FleetKeys,
    readonly name: string,
    private readonly ttlSeconds: number,
  ) {
    this.token = `${name}/${randomUUID()}`;
  }

  /** The compare that holds only while this controller is the leader. */
  leaderCondition(): Condition {
    return { key: this.keys.election(), column: 'Value', cmp: '==', value: this.token };
  }

  /** Try once to become (or stay) the leader; true when this controller leads. */
  async tryLead(): Promise<boolean> {
    if (!this.lease || this.lost) {
      this.lease?.release();
      this.lost = false;
      const lease = this.etcd.lease(this.ttlSeconds, { autoKeepAlive: true });
      lease.on('lost', () => {
        if (this.lease === lease) this.lost = true;
      });
      this.lease = lease;
    }
    const leaseId = await this.lease.grant();
    const key = this.keys.election();
    const result = await this.etcd
      .if(key, 'Create', '==', 0)
      .then(this.etcd.put(key).value(this.token).lease(leaseId))
      .commit();
    if (result.succeeded) return true;
    return (await this.etcd.get(key).string()) === this.token;
  }

  /** The current leader's token, if any. */
  async leader(): Promise<string | null> {
    return this.etcd.get(this.keys.election()).string();
  }

  /** Give up leadership at once (the next candidate need not wait for the lease to expire). */
  async resign(): Promise<void> {
    const lease = this.lease;
    this.lease = undefined;
    if (lease) await lease.revoke().catch(() => lease.release());
  }
}
