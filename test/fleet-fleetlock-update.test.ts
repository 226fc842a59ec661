/**
 * The agent's FleetLock mode (#17 item 3): `luoctl fleet update --fleetlock URL` updates
 * an emulated host inside a slot of a FleetLock server (luokit's, on a real etcd), as a
 * Zincati node would: it waits while the server says no, unlocks once the host is healthy,
 * and keeps its slot when the update fails, so a failing fleet stops by holding its slots.
 * The server is `luoctl fleet fleetlock-server`, a process, as a site would run it.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import { connectEtcd, type Etcd3 } from '../src/fleet/etcd.js';
import { FleetLockClient } from '../src/fleet/fleetlock-client.js';
import { FleetKeys } from '../src/fleet/keys.js';
import { Semaphore } from '../src/fleet/semaphore.js';
import { type Child, spawnChild } from './support/child.js';
import { type EtcdInstance, startEtcd } from './support/etcd.js';
import { type FleetHost, startFleetHost } from './support/fleet-host.js';
import { ROOT } from './support/luod.js';

const keys = new FleetKeys('/test/fleetlock-update');
let etcd: EtcdInstance;
let client: Etcd3;
let server: Child;
let url: string;
let good: FleetHost;
let bad: FleetHost;

before(async () => {
  etcd = await startEtcd();
  client = connectEtcd(etcd.endpoint);
  // The server runs as its own process (luoctl fleet fleetlock-server): the updates below
  // are run with spawnSync, which blocks this process.
  server = spawnChild(process.execPath, [
    path.join(ROOT, 'dist/cli/luoctl-bin.cjs'),
    'fleet',
    'fleetlock-server',
    '--etcd',
    etcd.endpoint,
    '--prefix',
    keys.prefix,
    '--listen',
    '127.0.0.1:0',
    '--group',
    'workers=1',
    '--json',
  ]);
  const line = await server.waitLine((l) => l.includes('listening'), 30_000);
  url = `http://${JSON.parse(line).listening}`;
  [good, bad] = await Promise.all([
    startFleetHost({ id: 'good', etcd: etcd.endpoint, prefix: keys.prefix, agent: false }),
    startFleetHost({ id: 'bad', etcd: etcd.endpoint, prefix: keys.prefix, agent: false, misbehave: 'fail' }),
  ]);
});
after(async () => {
  await Promise.all([good?.close(), bad?.close()]);
  server?.process.kill('SIGTERM');
  await server?.exit;
  client?.close();
  await etcd?.close();
});

function update(host: FleetHost, ...extra: string[]) {
  const run = spawnSync(
    process.execPath,
    [
      path.join(ROOT, 'dist/cli/luoctl-bin.cjs'),
      '--socket',
      host.socket,
      'fleet',
      'update',
      '--fleetlock',
      url,
      '--id',
      host.id,
      '--group',
      'workers',
      '--kernel',
      'emu:7.3',
      '--retry',
      '0.2',
      '--json',
      ...extra,
    ],
    { encoding: 'utf8', timeout: 120_000 },
  );
  assert.equal(run.stderr.includes('    at '), false, run.stderr);
  return { status: run.status, result: JSON.parse(run.stdout.trim().split('\n').at(-1)!) };
}
const holders = async () => (await new Semaphore(client, keys, 'workers').holders()).map((h) => h.id);

test('the only slot taken by another node: the host waits, and gives up at --lock-timeout', async () => {
  const other = new FleetLockClient(url, 'zincati-node', 'workers');
  assert.deepEqual(await other.preReboot(), { ok: true });
  try {
    const { status, result } = update(good, '--lock-timeout', '2');
    assert.equal(status, 1);
    assert.equal(result.error.code, 'ETIMEDOUT');
    assert.match(
      result.error.message,
      /pre-reboot: no slot within 2 s \(last answer: 423 failed_lock_semaphore_full/,
    );
  } finally {
    await other.steadyState();
  }
  assert.deepEqual(await holders(), []);
});

test('a healthy update locks, updates and unlocks', async () => {
  const { status, result } = update(good);
  assert.equal(status, 0, JSON.stringify(result));
  assert.equal(result.state, 'done');
  assert.equal(result.holds_slot, false);
  assert.deepEqual([result.from, result.to], ['7.2', '7.3']);
  assert.ok(result.record.blackout_ms > 0);
  assert.deepEqual(await holders(), []);
  const again = update(good);
  assert.deepEqual(
    [again.status, again.result.state, again.result.reason],
    [0, 'skipped', 'already runs 7.3'],
  );
});

test('a failed update keeps its slot: the next host cannot lock until an operator releases it', async () => {
  const { status, result } = update(bad);
  assert.equal(status, 1);
  assert.equal(result.state, 'failed');
  assert.match(result.reason, /^update aborted/);
  assert.equal(result.holds_slot, true);
  assert.deepEqual(await holders(), ['bad']);
  const blocked = await new FleetLockClient(url, 'next', 'workers').preReboot();
  assert.equal(blocked.ok, false);
});
