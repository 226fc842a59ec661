/**
 * The fleet's slot semaphore on a real etcd (#17 item 2): never more holders than slots,
 * even when hosts race on separate connections; recursive and owned; a slot held with a
 * lease comes back when the lease expires (a dead host); the key layout it writes.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { connectEtcd, type Etcd3 } from '../src/fleet/etcd.js';
import { FleetKeys } from '../src/fleet/keys.js';
import { Semaphore } from '../src/fleet/semaphore.js';
import { type EtcdInstance, startEtcd } from './support/etcd.js';
import { waitUntil } from './support/wait.js';

let etcd: EtcdInstance;
let client: Etcd3;
const clients: Etcd3[] = [];
const keys = new FleetKeys('/test/sem');

before(async () => {
  etcd = await startEtcd();
  client = connectEtcd(etcd.endpoint);
  for (let i = 0; i < 4; i++) clients.push(connectEtcd(etcd.endpoint));
});
after(async () => {
  for (const c of [client, ...clients]) c?.close();
  await etcd?.close();
});

test('the key layout: one prefix, encoded ids, FleetLock group names only', () => {
  assert.equal(keys.semaphoreHolder('workers', 'a/b c'), '/test/sem/semaphore/workers/holders/a%2Fb%20c');
  assert.equal(
    keys.idOf(keys.semaphoreHolders('workers'), keys.semaphoreHolder('workers', 'a/b c')),
    'a/b c',
  );
  assert.equal(keys.semaphoreGuard('g.1-x'), '/test/sem/semaphore/g.1-x/guard');
  assert.equal(new FleetKeys().rolloutSpec(), '/luokit/fleet/rollout/spec');
  assert.throws(() => keys.semaphore('bad/group'), { code: 'EINVAL' });
  assert.throws(() => keys.host(''), { code: 'EINVAL' });
  assert.throws(() => new FleetKeys('relative'), { code: 'EINVAL' });
});

test('ten hosts racing on four connections for three slots: exactly three get one', async () => {
  const results = await Promise.all(
    Array.from({ length: 10 }, (_, i) =>
      new Semaphore(clients[i % clients.length]!, keys, 'race').acquire(`host-${i}`, { slots: 3 }),
    ),
  );
  assert.equal(results.filter((r) => r.ok).length, 3);
  assert.ok(results.filter((r) => !r.ok).every((r) => !r.ok && r.reason === 'full'));
  const holders = await new Semaphore(client, keys, 'race').holders();
  assert.equal(holders.length, 3);
  assert.deepEqual(
    holders.map((h) => h.id).sort(),
    results
      .map((r, i) => (r.ok ? `host-${i}` : undefined))
      .filter((x) => x !== undefined)
      .sort(),
  );
});

test('under churn (take, hold, give back, again) no more than N hold a slot at any time', async () => {
  const slots = 2;
  let holding = 0;
  let most = 0;
  let taken = 0;
  const worker = async (w: number) => {
    const sem = new Semaphore(clients[w % clients.length]!, keys, 'churn');
    for (let round = 0; round < 6; ) {
      const r = await sem.acquire(`w${w}`, { slots });
      if (!r.ok) {
        await new Promise((res) => setTimeout(res, 5));
        continue;
      }
      holding++;
      taken++;
      most = Math.max(most, holding);
      assert.ok(holding <= slots, `${holding} holders at once`);
      // The first round waits (bounded) for the other slot to be taken too, so that the
      // slots are used in parallel however slowly this machine schedules the workers.
      for (const until = Date.now() + 5_000; round === 0 && holding < slots && Date.now() < until; )
        await new Promise((res) => setTimeout(res, 5));
      await new Promise((res) => setTimeout(res, 10));
      holding--; // before the release: the count can only be over-, never under-stated
      assert.equal(await sem.release(`w${w}`), true);
      round++;
    }
  };
  await Promise.all(Array.from({ length: 6 }, (_, w) => worker(w)));
  assert.equal(taken, 36);
  assert.equal(most, slots, 'the slots were used in parallel (the test can fail)');
});

test('recursive and owned: taking a held slot again succeeds, giving back one not held is a no-op', async () => {
  const sem = new Semaphore(client, keys, 'recursive');
  const first = await sem.acquire('a', { slots: 1 });
  assert.deepEqual([first.ok, first.ok && first.already], [true, false]);
  const again = await sem.acquire('a', { slots: 1 });
  assert.deepEqual([again.ok, again.ok && again.already], [true, true]);
  const other = await sem.acquire('b', { slots: 1 });
  assert.equal(other.ok, false);
  assert.equal(await sem.release('b'), false, 'b held nothing; a keeps its slot');
  assert.deepEqual(
    (await sem.holders()).map((h) => h.id),
    ['a'],
  );
  assert.equal(await sem.release('a'), true);
  assert.equal((await sem.acquire('b', { slots: 1 })).ok, true);
});

test('a host that dies holding a slot gives it back when its lease expires', async () => {
  const sem = new Semaphore(client, keys, 'leased');
  const lease = client.lease(1);
  const id = await lease.grant();
  assert.equal((await sem.acquire('dies', { slots: 1, lease: id })).ok, true);
  assert.equal((await sem.holders())[0]?.lease, id);
  assert.equal((await sem.acquire('waits', { slots: 1 })).ok, false);
  lease.release(); // no more keepalives: the host is gone
  await waitUntil(async () => (await sem.acquire('waits', { slots: 1 })).ok, 'the slot came back', 15_000);
  assert.deepEqual(
    (await sem.holders()).map((h) => h.id),
    ['waits'],
  );
});

test('a holder restarted with a new lease moves its slot to it (the old lease expiring frees nothing)', async () => {
  const sem = new Semaphore(client, keys, 'moved');
  const old = client.lease(1);
  assert.equal((await sem.acquire('h', { slots: 1, lease: await old.grant() })).ok, true);
  const fresh = client.lease(30);
  const freshId = await fresh.grant();
  const moved = await sem.acquire('h', { slots: 1, lease: freshId });
  assert.deepEqual([moved.ok, moved.ok && moved.already], [true, true]);
  old.release();
  await new Promise((r) => setTimeout(r, 3500)); // past the old lease's TTL of 1 s
  assert.deepEqual(
    (await sem.holders()).map((h) => [h.id, h.lease]),
    [['h', freshId]],
  );
  await fresh.revoke();
  assert.deepEqual(await sem.holders(), []);
});

test('conditions join the transaction: no slot while the rollout is not running', async () => {
  const sem = new Semaphore(client, keys, 'conditional');
  const state = keys.rolloutState();
  const running = [{ key: state, column: 'Value', cmp: '==', value: 'running' }] as const;
  await client.put(state).value('paused');
  const refused = await sem.acquire('x', { slots: 5, conditions: running });
  assert.deepEqual([refused.ok, !refused.ok && refused.reason], [false, 'condition']);
  assert.deepEqual(await sem.holders(), []);
  await client.put(state).value('running');
  assert.equal((await sem.acquire('x', { slots: 5, conditions: running })).ok, true);
});

test('a damaged holder key still counts as a held slot', async () => {
  const sem = new Semaphore(client, keys, 'damaged');
  await client.put(keys.semaphoreHolder('damaged', 'ghost')).value('{not json');
  const r = await sem.acquire('y', { slots: 1 });
  assert.equal(r.ok, false);
  assert.deepEqual(
    r.holders.map((h) => h.id),
    ['ghost'],
  );
});

test('bad arguments are EINVAL', async () => {
  const sem = new Semaphore(client, keys, 'args');
  await assert.rejects(sem.acquire('z', { slots: 0 }), { code: 'EINVAL' });
  await assert.rejects(sem.acquire('', { slots: 1 }), { code: 'EINVAL' });
  assert.throws(() => new Semaphore(client, keys, 'no spaces'), { code: 'EINVAL' });
});
