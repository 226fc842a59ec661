/**
 * The fleet's footing (#17 item 4): Debian's etcd 3.4, started by the test harness on
 * loopback, and the etcd3 client on Node 20 against it, through the faults the fleet tests
 * use: a lease that is not kept alive gives its keys back, and etcd stopped and restarted
 * keeps its data while the client reconnects on its own.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { after, before, test } from 'node:test';
import { connectEtcd, type Etcd3, parseEndpoints } from '../src/fleet/etcd.js';
import { type EtcdInstance, startEtcd } from './support/etcd.js';
import { processesUsing } from './support/reaper.js';
import { waitUntil } from './support/wait.js';

let etcd: EtcdInstance;
let client: Etcd3;

before(async () => {
  etcd = await startEtcd();
  client = connectEtcd(etcd.endpoint);
});
after(async () => {
  client?.close();
  await etcd?.close();
});

test('the harness runs Debian etcd 3.4 on a loopback port of its own', async () => {
  assert.match(etcd.endpoint, /^http:\/\/127\.0\.0\.1:\d+$/);
  const version = (await (await fetch(`${etcd.endpoint}/version`)).json()) as { etcdserver: string };
  assert.match(version.etcdserver, /^3\.4\./);
  assert.equal(processesUsing([etcd.dir]).length, 1, 'one etcd process, found by its directory');
});

test('etcd3 puts, reads and runs a transaction against it', async () => {
  await client.put('a').value('1');
  assert.equal(await client.get('a').string(), '1');
  const first = await client.if('b', 'Version', '==', 0).then(client.put('b').value('x')).commit();
  const second = await client.if('b', 'Version', '==', 0).then(client.put('b').value('y')).commit();
  assert.equal(first.succeeded, true);
  assert.equal(second.succeeded, false, 'the key exists now: the compare fails');
  assert.equal(await client.get('b').string(), 'x');
});

test('a key held by a lease that is no longer kept alive goes away on expiry', async () => {
  const lease = client.lease(1);
  await lease.put('held').value('yes');
  assert.equal(await client.get('held').string(), 'yes');
  lease.release(); // stop the keepalives, as a dead host does
  await waitUntil(async () => (await client.get('held').string()) === null, 'the leased key expired', 15_000);
});

test('etcd restarted keeps its data, and the same client reconnects by itself', async () => {
  await client.put('survives').value('restart');
  await etcd.restart();
  const value = await waitUntil(
    async () => await client.get('survives').string(),
    'read after the restart',
    30_000,
  );
  assert.equal(value, 'restart');
});

test('etcd stopped: calls fail within their deadline, and work again once it is back', async () => {
  await etcd.stop({ crash: true });
  assert.equal(etcd.running(), false);
  const started = Date.now();
  await assert.rejects(client.get('survives').string());
  assert.ok(Date.now() - started < 60_000, 'the call did not hang');
  await etcd.start();
  assert.equal(await waitUntil(() => client.get('survives').string(), 'read once back', 30_000), 'restart');
});

test('parseEndpoints takes etcdctl-style lists', () => {
  assert.deepEqual(parseEndpoints('127.0.0.1:2379, http://h:1'), ['http://127.0.0.1:2379', 'http://h:1']);
  assert.throws(() => parseEndpoints(' , '), /no etcd endpoint/);
});

test('close() kills etcd and removes its directory', async () => {
  const other = await startEtcd();
  assert.equal(processesUsing([other.dir]).length, 1);
  await other.close();
  assert.equal(processesUsing([other.dir]).length, 0);
  assert.equal(fs.existsSync(other.dir), false);
});
