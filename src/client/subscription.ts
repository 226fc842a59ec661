/**
 * LuoSubscription: a subscription to luod that survives luod restarts.
 *
 *   const sub = await LuoSubscription.start({
 *     id: 'vm-42',
 *     onPreserve: async (sessions) => { sessions[0].preserveFd(ram, 1n); },
 *     onAborted: () => resumeVcpus(),
 *   });
 *
 * When luod's connection drops without a KEXEC (luod crashed or was
 * restarted), it reconnects, says HELLO and SUBSCRIBEs again with the same
 * id; the sessions of an update in progress were closed with the old
 * connection, and the restarted luod tells the client with ABORTED that the
 * update is off. After a KEXEC the subscription ends ('rebooted'): the host
 * rebooted, and the VMM claims its sessions (claimAfterReboot) and
 * subscribes anew.
 */
import { EventEmitter } from 'node:events';
import { socketPath } from '../protocol/messages.js';
import {
  type AbortedHandler,
  type ClaimedSessions,
  type DisconnectInfo,
  type KexecHandler,
  LuoClient,
  LuoClientError,
  type PreserveHandler,
} from './luo-client.js';

export interface SubscriptionOptions {
  id: string;
  sessions?: number;
  /** luod's socket (default $LUOD_SOCKET, else /run/luod/liveupdate.sock). */
  path?: string;
  onPreserve?: PreserveHandler;
  onAborted?: AbortedHandler;
  onKexec?: KexecHandler;
  /** How long one reconnection may keep trying (default 60 s). */
  reconnectTimeoutMs?: number;
  /** Pause between attempts (default 100 ms). */
  intervalMs?: number;
}

export interface SubscriptionEvents {
  /** Subscribed (again): `count` is 1 for the first subscription. */
  subscribed: [client: LuoClient, count: number];
  /** The connection dropped without a KEXEC; reconnecting. */
  lost: [info: DisconnectInfo];
  /** A KEXEC came before the drop: the subscription is over; claim. */
  rebooted: [info: DisconnectInfo];
  /** Reconnection gave up. */
  failed: [error: LuoClientError];
}

/** Refusals worth another try: luod not up yet, busy with an update, or gone mid-way. */
const TRANSIENT = new Set([
  'ENOENT',
  'ECONNREFUSED',
  'EAGAIN',
  'ECONNRESET',
  'EPIPE',
  'EMFILE',
  'EBUSY',
  'EEXIST',
]);

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export class LuoSubscription extends EventEmitter<SubscriptionEvents> {
  readonly #options: SubscriptionOptions;
  readonly path: string;
  #client: LuoClient | null = null;
  #count = 0;
  #closed = false;

  private constructor(options: SubscriptionOptions) {
    super();
    this.#options = options;
    this.path = options.path ?? socketPath();
  }

  /** Connect and subscribe (retrying while luod is not there); resolves once subscribed. */
  static async start(options: SubscriptionOptions): Promise<LuoSubscription> {
    const sub = new LuoSubscription(options);
    await sub.#subscribe();
    return sub;
  }

  /** The current connection (null between two). */
  get client(): LuoClient | null {
    return this.#client;
  }

  /** How many times it subscribed (1 + reconnections). */
  get subscriptions(): number {
    return this.#count;
  }

  close(): void {
    this.#closed = true;
    this.#client?.close();
  }

  async #subscribe(): Promise<void> {
    const deadline = Date.now() + (this.#options.reconnectTimeoutMs ?? 60_000);
    const interval = this.#options.intervalMs ?? 100;
    for (;;) {
      if (this.#closed) throw new LuoClientError('ECANCELED', 'the subscription was closed');
      let client: LuoClient | null = null;
      try {
        client = await LuoClient.connectWithRetry(this.path, {
          hello: true,
          timeoutMs: Math.max(1, deadline - Date.now()),
          intervalMs: interval,
        });
        // Closed while the connection was being made: it must not subscribe (a zombie
        // subscription would take events, an ABORTED say, meant for whoever comes next).
        if (this.#closed) throw new LuoClientError('ECANCELED', 'the subscription was closed');
        client.onPreserve(this.#options.onPreserve ?? null);
        client.onAborted(this.#options.onAborted ?? null);
        client.onKexec(this.#options.onKexec ?? null);
        await client.subscribe(
          this.#options.id,
          this.#options.sessions !== undefined ? { sessions: this.#options.sessions } : {},
        );
      } catch (err) {
        client?.close();
        const e = err instanceof LuoClientError ? err : new LuoClientError('EIO', String(err));
        if (!TRANSIENT.has(e.code) || Date.now() > deadline) throw e;
        await delay(interval);
        continue;
      }
      if (this.#closed) {
        client.close();
        throw new LuoClientError('ECANCELED', 'the subscription was closed');
      }
      this.#client = client;
      this.#count++;
      client.onDisconnect((info) => this.#onDisconnect(client, info));
      this.emit('subscribed', client, this.#count);
      return;
    }
  }

  #onDisconnect(client: LuoClient, info: DisconnectInfo): void {
    if (this.#client === client) this.#client = null;
    if (this.#closed || info.byClient) return;
    if (info.afterKexec) {
      this.emit('rebooted', info);
      return;
    }
    this.emit('lost', info);
    this.#subscribe().catch((err: LuoClientError) => {
      if (this.listenerCount('failed') > 0) this.emit('failed', err);
    });
  }
}

/**
 * After the reboot (or a luod restart after it): claim `id`'s sessions,
 * reconnecting while luod is not there or goes away mid-claim.
 */
export async function claimAfterReboot(
  id: string,
  options: { path?: string; timeoutMs?: number; intervalMs?: number; force?: boolean } = {},
): Promise<ClaimedSessions> {
  const path = options.path ?? socketPath();
  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  const interval = options.intervalMs ?? 100;
  for (;;) {
    let client: LuoClient | null = null;
    try {
      client = await LuoClient.connectWithRetry(path, {
        timeoutMs: Math.max(1, deadline - Date.now()),
        intervalMs: interval,
      });
      return await client.claim(id, options.force ? { force: true } : {});
    } catch (err) {
      const e = err instanceof LuoClientError ? err : new LuoClientError('EIO', String(err));
      if (!['ECONNRESET', 'EPIPE', 'ECONNREFUSED', 'ENOENT'].includes(e.code) || Date.now() > deadline)
        throw e;
      // ENOENT from luod itself is final: no sessions for this id.
      if (e.code === 'ENOENT' && e.command === 'CLAIM') throw e;
      await delay(interval);
    } finally {
      client?.close();
    }
  }
}
