/**
 * The rollout controller (#17 item 1) on a real etcd, with the test playing the agents:
 * hosts assigned in order and never more than max_parallel in flight; the rollout stopped
 * at max_failures with nothing started after; pause, resume and abort; a host whose agent
 * vanished while in flight counted as lost; and the election: of two controllers one acts,
 * and a killed one (SIGKILL, its lease left to expire) is replaced and the rollout goes on.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import pino from 'pino';
import { Controller, type ControllerOutcome } from '../src/fleet/controller.js';
import { connectEtcd, type Etcd3, type Lease } from '../src/fleet/etcd.js';
import { FleetKeys } from '../src/fleet/keys.js';
import {
  createRollout,
  type HostProgress,
  type RolloutSpec,
  readRollout,
  setRolloutState,
  writeHost,
} from '../src/fleet/rollout.js';
import { type EtcdInstance, startEtcd } from './support/etcd.js';
import { ROOT } from './support/luod.js';
import { waitUntil } from './support/wait.js';

let etcd: EtcdInstance;
let client: Etcd3;
const log = pino({ level: 'silent' });
let n = 0;

before(async () => {
  etcd = await startEtcd();
  client = connectEtcd(etcd.endpoint);
});
after(async () => {
  client?.close();
  await etcd?.close();
});

/** A fresh prefix, registered hosts (leased), and a rollout over them. */
async function fleet(
  hosts: number,
  limits: { max_parallel: number; max_failures: number },
  ttl = 30,
): Promise<{ keys: FleetKeys; ids: string[]; leases: Map<string, Lease> }> {
  const keys = new FleetKeys(`/test/controller-${++n}`);
  const ids = Array.from({ length: hosts }, (_, i) => `host-${i + 1}`);
  const leases = new Map<string, Lease>();
  for (const id of ids) {
    const lease = client.lease(ttl);
    await lease.put(keys.host(id)).value('{}');
    leases.set(id, lease);
  }
  const spec: RolloutSpec = {
    id: `r${n}`,
    kernel: 'emu:7.3',
    hosts: ids,
    created: new Date().toISOString(),
    ...limits,
  };
  await createRollout(client, keys, spec);
  return { keys, ids, leases };
}

/** Move a host on, as its agent would (assigned → updating → done/failed). */
async function agentMoves(
  keys: FleetKeys,
  id: string,
  to: HostProgress['state'],
  reason?: string,
): Promise<void> {
  for (;;) {
    const view = await readRollout(client, keys);
    const mine = view.hosts.get(id)!;
    const next: HostProgress = { ...mine.progress, state: to, ...(reason && { reason }) };
    if (await writeHost(client, keys, view, mine.mod, next)) return;
  }
}

const hostsIn = async (keys: FleetKeys, state: HostProgress['state']) =>
  [...(await readRollout(client, keys)).hosts.values()]
    .filter((h) => h.progress.state === state)
    .map((h) => h.progress.id);

function runController(keys: FleetKeys, extra: Partial<ConstructorParameters<typeof Controller>[0]> = {}) {
  const stop = new AbortController();
  const controller = new Controller({ etcd: client, keys, log, pollMs: 50, ...extra });
  const done: Promise<ControllerOutcome | null> = controller.run(stop.signal);
  return { stop, done };
}

test('hosts are assigned in order, never more than max_parallel in flight, and the rollout ends done', async () => {
  const { keys, ids } = await fleet(5, { max_parallel: 2, max_failures: 1 });
  const { done } = runController(keys);
  const order: string[] = [];
  while (order.length < ids.length) {
    const assigned = await waitUntil(async () => {
      const a = await hostsIn(keys, 'assigned');
      return a.length > 0 ? a : undefined;
    }, 'an assignment');
    const inFlight = [...assigned, ...(await hostsIn(keys, 'updating'))];
    assert.ok(inFlight.length <= 2, `in flight: ${inFlight.join(', ')}`);
    const id = assigned.sort()[0]!;
    order.push(id);
    await agentMoves(keys, id, 'updating');
    await agentMoves(keys, id, 'done');
  }
  const outcome = await done;
  assert.equal(outcome?.state, 'done');
  assert.deepEqual(order, ids, 'in the spec order');
  assert.equal((await readRollout(client, keys)).state, 'done');
});

test('the rollout stops at max_failures, and no host is assigned after the failure that reached it', async () => {
  const { keys } = await fleet(6, { max_parallel: 1, max_failures: 2 });
  const { done } = runController(keys);
  for (const id of ['host-1', 'host-2']) {
    await waitUntil(async () => (await hostsIn(keys, 'assigned')).includes(id), `${id} assigned`);
    await agentMoves(keys, id, 'updating');
    await agentMoves(keys, id, 'failed', `${id} broke`);
  }
  const outcome = await done;
  assert.equal(outcome?.state, 'stopped');
  assert.deepEqual(outcome?.failed, [
    { id: 'host-1', reason: 'host-1 broke' },
    { id: 'host-2', reason: 'host-2 broke' },
  ]);
  assert.deepEqual((await hostsIn(keys, 'pending')).sort(), ['host-3', 'host-4', 'host-5', 'host-6']);
  assert.equal((await readRollout(client, keys)).failures, 2);
});

test('pause starts no one, resume goes on, abort puts assigned hosts back and ends it', async () => {
  const { keys } = await fleet(4, { max_parallel: 1, max_failures: 1 });
  await setRolloutState(client, keys, 'pause');
  const { done } = runController(keys);
  await new Promise((r) => setTimeout(r, 500));
  assert.deepEqual(await hostsIn(keys, 'assigned'), [], 'paused: nothing assigned');
  await setRolloutState(client, keys, 'resume');
  await waitUntil(async () => (await hostsIn(keys, 'assigned')).includes('host-1'), 'host-1 assigned');
  await agentMoves(keys, 'host-1', 'updating');
  await agentMoves(keys, 'host-1', 'done');
  await waitUntil(async () => (await hostsIn(keys, 'assigned')).includes('host-2'), 'host-2 assigned');
  assert.equal(
    await setRolloutState(client, keys, 'resume'),
    'running',
    'resuming a running rollout is a no-op',
  );
  await setRolloutState(client, keys, 'abort');
  const outcome = await done;
  assert.equal(outcome?.state, 'aborted');
  assert.deepEqual(await hostsIn(keys, 'done'), ['host-1']);
  assert.deepEqual((await hostsIn(keys, 'pending')).sort(), ['host-2', 'host-3', 'host-4']);
  await assert.rejects(setRolloutState(client, keys, 'pause'), { code: 'EINVAL' });
});

test('a second rollout waits for the first: EBUSY while it runs', async () => {
  const { keys, ids } = await fleet(1, { max_parallel: 1, max_failures: 1 });
  const spec = { id: 'again', kernel: 'emu:7.3', hosts: ids, created: '', max_parallel: 1, max_failures: 1 };
  await assert.rejects(createRollout(client, keys, spec), { code: 'EBUSY' });
  await setRolloutState(client, keys, 'abort');
  await createRollout(client, keys, spec);
  assert.equal((await readRollout(client, keys)).spec?.id, 'again');
});

test('an in-flight host whose agent is gone past its lease is failed as lost', async () => {
  const { keys, leases } = await fleet(2, { max_parallel: 1, max_failures: 5 }, 1);
  const { done } = runController(keys, { lostAfterMs: 1000 });
  await waitUntil(async () => (await hostsIn(keys, 'assigned')).includes('host-1'), 'host-1 assigned');
  await agentMoves(keys, 'host-1', 'updating');
  leases.get('host-1')!.release(); // the host dies: no more keepalives
  await waitUntil(
    async () => (await hostsIn(keys, 'failed')).includes('host-1'),
    'host-1 failed as lost',
    20_000,
  );
  const failed = (await readRollout(client, keys)).hosts.get('host-1')!.progress;
  assert.match(failed.reason ?? '', /^host lost: no live agent/);
  await waitUntil(async () => (await hostsIn(keys, 'assigned')).includes('host-2'), 'host-2 assigned next');
  await agentMoves(keys, 'host-2', 'updating');
  await agentMoves(keys, 'host-2', 'done');
  assert.equal((await done)?.state, 'done');
});

test('two controllers: one leads; the leader SIGKILLed is replaced after its lease, and the rollout goes on', async () => {
  const { keys } = await fleet(3, { max_parallel: 1, max_failures: 1 });
  const control = () =>
    spawn(
      process.execPath,
      [
        path.join(ROOT, 'dist/cli/luoctl-bin.cjs'),
        'rollout',
        'control',
        '--etcd',
        etcd.endpoint,
        '--prefix',
        keys.prefix,
        '--json',
      ],
      { stdio: ['ignore', 'pipe', 'ignore'] },
    );
  const a = control();
  const b = control();
  let outputB = '';
  b.stdout!.setEncoding('utf8').on('data', (d: string) => {
    outputB += d;
  });
  const exitB = new Promise<number | null>((r) => b.once('exit', (code) => r(code)));
  try {
    await waitUntil(
      async () => (await hostsIn(keys, 'assigned')).includes('host-1'),
      'host-1 assigned',
      30_000,
    );
    const leader = await client.get(keys.election()).string();
    const pidOf = (token: string | null) => Number(/-(\d+)\/[^/]+$/.exec(token ?? '')?.[1]);
    assert.ok([a.pid, b.pid].includes(pidOf(leader)), `leader ${leader}`);
    // Make a the leader's role certain: kill whichever leads now, keep the other.
    const [killed, survivor] = pidOf(leader) === a.pid ? [a, b] : [b, a];
    killed.kill('SIGKILL');
    await agentMoves(keys, 'host-1', 'updating');
    await agentMoves(keys, 'host-1', 'done');
    // The survivor takes over once the dead one's lease (10 s) expires, and assigns host-2.
    await waitUntil(
      async () => pidOf(await client.get(keys.election()).string()) === survivor.pid,
      'new leader',
      40_000,
    );
    for (const id of ['host-2', 'host-3']) {
      await waitUntil(async () => (await hostsIn(keys, 'assigned')).includes(id), `${id} assigned`, 30_000);
      assert.equal((await hostsIn(keys, 'updating')).length, 0);
      await agentMoves(keys, id, 'updating');
      await agentMoves(keys, id, 'done');
    }
    await waitUntil(async () => (await readRollout(client, keys)).state === 'done', 'rollout done', 30_000);
    if (survivor === b) {
      assert.equal(await exitB, 0);
      assert.equal(JSON.parse(outputB.trim().split('\n').at(-1)!).state, 'done');
    }
  } finally {
    a.kill('SIGKILL');
    b.kill('SIGKILL');
  }
});
