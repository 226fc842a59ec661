/**
 * The fleet's invariants, checked on etcd's own history: every change under the fleet's
 * prefix since a revision, replayed in revision order (a watch from that revision; the test
 * etcd never compacts). Sampling could miss a moment; the history has every one.
 */
import type { Etcd3 } from '../../src/fleet/etcd.js';
import type { FleetKeys } from '../../src/fleet/keys.js';

export interface Change {
  readonly revision: number;
  readonly type: 'put' | 'delete';
  readonly key: string;
  readonly value: string;
}

/** Every change under `keys.prefix` from `fromRevision` up to now. */
export async function history(etcd: Etcd3, keys: FleetKeys, fromRevision: number): Promise<Change[]> {
  const now = Number((await etcd.getAll().prefix(keys.prefix).exec()).header.revision);
  const changes: Change[] = [];
  const watcher = await etcd.watch().prefix(`${keys.prefix}/`).startRevision(String(fromRevision)).create();
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error('history: the watch did not catch up within 30 s')),
        30_000,
      );
      watcher.on('data', (res) => {
        for (const e of res.events) {
          changes.push({
            revision: Number(e.kv.mod_revision),
            type: e.type === 'Delete' ? 'delete' : 'put',
            key: e.kv.key.toString(),
            value: e.kv.value.toString(),
          });
        }
        if (Number(res.header.revision) >= now && changes.at(-1) && changes.at(-1)!.revision >= now) {
          clearTimeout(timer);
          resolve();
        }
      });
      if (now < fromRevision) {
        clearTimeout(timer);
        resolve();
      }
    });
  } finally {
    await watcher.cancel();
  }
  return changes.filter((c) => c.revision <= now);
}

export interface Verdict {
  /** Most slots held, and most hosts `updating`, at any revision. */
  readonly mostHeld: number;
  readonly mostUpdating: number;
  readonly violations: string[];
}

/**
 * Replays `changes`: at no revision more than the rollout's max_parallel slots held or hosts
 * updating; no host enters `updating` twice in one rollout; no host is assigned once the
 * failure counter has reached max_failures.
 */
export function checkInvariants(changes: readonly Change[], keys: FleetKeys): Verdict {
  const holdersPrefix = keys.semaphoreHolders('rollout');
  const held = new Set<string>();
  const state = new Map<string, string>();
  const enteredUpdating = new Map<string, number>();
  const violations: string[] = [];
  let limits = { max_parallel: Number.POSITIVE_INFINITY, max_failures: Number.POSITIVE_INFINITY };
  let failures = 0;
  let mostHeld = 0;
  let mostUpdating = 0;
  for (const c of changes) {
    if (c.key === keys.rolloutSpec() && c.type === 'put') {
      limits = JSON.parse(c.value);
      enteredUpdating.clear();
      state.clear();
    } else if (c.key === keys.rolloutFailures() && c.type === 'put') failures = Number(c.value);
    else if (c.key.startsWith(holdersPrefix)) {
      const id = keys.idOf(holdersPrefix, c.key);
      if (c.type === 'put') held.add(id);
      else held.delete(id);
    } else if (c.key.startsWith(keys.rolloutHosts()) && c.type === 'put') {
      const p = JSON.parse(c.value) as { id: string; state: string };
      const before = state.get(p.id);
      state.set(p.id, p.state);
      if (p.state === 'updating' && before !== 'updating') {
        const n = (enteredUpdating.get(p.id) ?? 0) + 1;
        enteredUpdating.set(p.id, n);
        if (n > 1) violations.push(`rev ${c.revision}: ${p.id} updating a second time`);
      }
      if (p.state === 'assigned' && before !== 'assigned' && failures >= limits.max_failures)
        violations.push(`rev ${c.revision}: ${p.id} assigned with ${failures} failures counted`);
    }
    const updating = [...state.values()].filter((s) => s === 'updating').length;
    mostHeld = Math.max(mostHeld, held.size);
    mostUpdating = Math.max(mostUpdating, updating);
    if (held.size > limits.max_parallel) violations.push(`rev ${c.revision}: ${held.size} slots held`);
    if (updating > limits.max_parallel) violations.push(`rev ${c.revision}: ${updating} hosts updating`);
  }
  return { mostHeld, mostUpdating, violations };
}
