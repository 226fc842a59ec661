/**
 * FleetLock (#17 item 3) on the wire, both ways: luokit's client against luokit's server
 * on a real etcd; raw HTTP exchanges written from the protocol's documentation (Zincati's
 * docs/development/fleetlock/protocol.md) against the server; and the client's requests
 * read by a bare node:http server that checks them against the same document.
 */
import assert from 'node:assert/strict';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import pino from 'pino';
import { connectEtcd, type Etcd3 } from '../src/fleet/etcd.js';
import { FleetLockClient } from '../src/fleet/fleetlock-client.js';
import { FleetLockServer } from '../src/fleet/fleetlock-server.js';
import { FleetKeys } from '../src/fleet/keys.js';
import { Semaphore } from '../src/fleet/semaphore.js';
import { type EtcdInstance, startEtcd } from './support/etcd.js';

let etcd: EtcdInstance;
let client: Etcd3;
let server: FleetLockServer;
let base: string;
const keys = new FleetKeys('/test/fleetlock');

before(async () => {
  etcd = await startEtcd();
  client = connectEtcd(etcd.endpoint);
  server = new FleetLockServer({
    etcd: client,
    keys,
    groups: { workers: 2, single: 1 },
    log: pino({ level: 'silent' }),
  });
  const { port } = await server.listen(0);
  base = `http://127.0.0.1:${port}`;
});
after(async () => {
  await server?.close();
  client?.close();
  await etcd?.close();
});

/** One raw exchange: the status, headers and body as received. */
async function raw(
  path: string,
  options: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<{ status: number; type: string | undefined; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      `${base}${path}`,
      { method: options.method ?? 'POST', headers: options.headers ?? {} },
      (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (d: string) => {
          body += d;
        });
        res.on('end', () => resolve({ status: res.statusCode!, type: res.headers['content-type'], body }));
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

const params = (id: string, group: string) => JSON.stringify({ client_params: { id, group } });
const HEADER = { 'fleet-lock-protocol': 'true' };

/** An error as the document defines it: JSON, `kind` and `value` non-empty strings. */
function errorBody(body: string): { kind: string; value: string } {
  const parsed = JSON.parse(body) as { kind: unknown; value: unknown };
  assert.equal(typeof parsed.kind, 'string');
  assert.equal(typeof parsed.value, 'string');
  assert.ok((parsed.kind as string).length > 0 && (parsed.value as string).length > 0, body);
  return parsed as { kind: string; value: string };
}

test('luokit client against luokit server: lock, recursive lock, full, unlock', async () => {
  const a = new FleetLockClient(base, 'node-a', 'workers');
  const b = new FleetLockClient(`${base}/`, 'node-b', 'workers');
  const c = new FleetLockClient(base, 'node-c', 'workers');
  assert.deepEqual(await a.preReboot(), { ok: true });
  assert.deepEqual(await a.preReboot(), { ok: true }, 'recursive');
  assert.deepEqual(await b.preReboot(), { ok: true });
  const full = await c.preReboot();
  assert.equal(full.ok, false);
  assert.ok(!full.ok);
  assert.equal(full.status, 423);
  assert.equal(full.kind, 'failed_lock_semaphore_full');
  assert.match(full.value, /all 2 slots of group workers are taken/);
  assert.deepEqual(await c.steadyState(), { ok: true }, 'unlock if held: held nothing, still 200');
  assert.deepEqual(await a.steadyState(), { ok: true });
  assert.deepEqual(await c.preReboot(), { ok: true }, 'a gave its slot back');
  const holders = await new Semaphore(client, keys, 'workers').holders();
  assert.deepEqual(holders.map((h) => h.id).sort(), ['node-b', 'node-c']);
  assert.ok(
    holders.every((h) => h.lease === undefined),
    'FleetLock slots have no lease',
  );
  await b.steadyState();
  await c.steadyState();
});

test('luokit client: a group the server does not serve, and a server that is gone', async () => {
  const r = await new FleetLockClient(base, 'n', 'elsewhere').preReboot();
  assert.deepEqual(r.ok ? r : [r.status, r.kind], [400, 'unknown_group']);
  const gone = http.createServer();
  await new Promise<void>((r) => gone.listen(0, '127.0.0.1', () => r()));
  const { port } = gone.address() as AddressInfo;
  await new Promise((r) => gone.close(r));
  await assert.rejects(new FleetLockClient(`http://127.0.0.1:${port}`, 'n').preReboot(), {
    code: 'ECONNREFUSED',
  });
  assert.throws(() => new FleetLockClient('not a url', 'n'), { code: 'EINVAL' });
  assert.throws(() => new FleetLockClient(base, 'n', 'bad group'), { code: 'EINVAL' });
});

test('raw exchange from the document: the example request locks, steady-state unlocks', async () => {
  const body = params('c988d2509fdf5cdcbed39037c56406fb', 'single');
  const lock = await raw('/v1/pre-reboot', { headers: HEADER, body });
  assert.equal(lock.status, 200, lock.body);
  const again = await raw('/v1/pre-reboot', { headers: HEADER, body });
  assert.equal(again.status, 200, 'recursive locking');
  const other = await raw('/v1/pre-reboot', { headers: HEADER, body: params('another', 'single') });
  assert.notEqual(other.status, 200, 'every other code is a failed operation');
  assert.ok(other.status >= 400 && other.status < 600);
  assert.match(other.type ?? '', /application\/json/);
  assert.equal(errorBody(other.body).kind, 'failed_lock_semaphore_full');
  const unlock = await raw('/v1/steady-state', { headers: HEADER, body });
  assert.equal(unlock.status, 200, unlock.body);
  const now = await raw('/v1/pre-reboot', { headers: HEADER, body: params('another', 'single') });
  assert.equal(now.status, 200, now.body);
  assert.equal(
    (await raw('/v1/steady-state', { headers: HEADER, body: params('another', 'single') })).status,
    200,
  );
});

test('raw exchange: without the fleet-lock-protocol header (or not "true") nothing is locked', async () => {
  const body = params('no-header', 'single');
  const variants: Record<string, string>[] = [
    {},
    { 'fleet-lock-protocol': 'false' },
    { 'fleet-lock-protocol': 'yes' },
  ];
  for (const headers of variants) {
    const r = await raw('/v1/pre-reboot', { headers, body });
    assert.equal(r.status, 400, JSON.stringify(headers));
    assert.equal(errorBody(r.body).kind, 'missing_header');
  }
  assert.deepEqual(await new Semaphore(client, keys, 'single').holders(), []);
});

test('raw exchange: bodies that break the schema are refused with an error body', async () => {
  const bad = [
    '',
    'not json',
    '{}',
    JSON.stringify({ client_params: { id: 'x' } }),
    JSON.stringify({ client_params: { group: 'single' } }),
    params('', 'single'),
    params('x', ''),
    params('x', 'bad/group'),
    JSON.stringify({ client_params: { id: 7, group: 'single' } }),
  ];
  for (const body of bad) {
    const r = await raw('/v1/pre-reboot', { headers: HEADER, body });
    assert.equal(r.status, 400, body);
    assert.equal(errorBody(r.body).kind, 'decode_error', body);
  }
  const big = await raw('/v1/pre-reboot', { headers: HEADER, body: 'x'.repeat(100_000) });
  assert.equal(big.status, 413);
  assert.equal(errorBody(big.body).kind, 'body_too_large');
});

test('raw exchange: POST only, and only the two endpoints', async () => {
  const get = await raw('/v1/pre-reboot', { method: 'GET', headers: HEADER });
  assert.equal(get.status, 405);
  assert.equal(errorBody(get.body).kind, 'method_not_allowed');
  const other = await raw('/v1/other', { headers: HEADER, body: params('x', 'single') });
  assert.equal(other.status, 404);
  assert.equal(errorBody(other.body).kind, 'not_found');
});

test('raw exchange: etcd gone answers 503 etcd_unavailable; back, the server serves again', async () => {
  await etcd.stop({ crash: true });
  try {
    const r = await raw('/v1/pre-reboot', { headers: HEADER, body: params('during', 'single') });
    assert.equal(r.status, 503, r.body);
    const e = errorBody(r.body);
    assert.equal(e.kind, 'etcd_unavailable');
    assert.match(e.value, /etcd/);
  } finally {
    await etcd.start();
  }
  const deadline = Date.now() + 30_000;
  let status = 0;
  while (status !== 200 && Date.now() < deadline) {
    status = (await raw('/v1/pre-reboot', { headers: HEADER, body: params('during', 'single') })).status;
    if (status !== 200) await new Promise((r) => setTimeout(r, 200));
  }
  assert.equal(status, 200);
  await raw('/v1/steady-state', { headers: HEADER, body: params('during', 'single') });
});

test("luokit client's requests, read by a bare server written from the document", async () => {
  const seen: { method?: string; url?: string; header?: string | string[]; type?: string; body: string }[] =
    [];
  const answers = [
    { status: 200, body: '' },
    {
      status: 500,
      body: JSON.stringify({ kind: 'failed_lock', value: 'all 1 semaphore slots currently locked' }),
    },
    { status: 500, body: 'plain text error' }, // an older airlock answers text
    { status: 200, body: '' },
  ];
  const bare = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8').on('data', (d: string) => {
      body += d;
    });
    req.on('end', () => {
      seen.push({
        method: req.method,
        url: req.url,
        header: req.headers['fleet-lock-protocol'],
        type: req.headers['content-type'],
        body,
      });
      const a = answers[seen.length - 1]!;
      res.writeHead(a.status).end(a.body);
    });
  });
  await new Promise<void>((r) => bare.listen(0, '127.0.0.1', () => r()));
  try {
    const { port } = bare.address() as AddressInfo;
    const c = new FleetLockClient(
      `http://127.0.0.1:${port}/base`,
      'c988d2509fdf4cdcbed39037c56406fb',
      'workers',
    );
    assert.deepEqual(await c.preReboot(), { ok: true });
    assert.deepEqual(await c.preReboot(), {
      ok: false,
      status: 500,
      kind: 'failed_lock',
      value: 'all 1 semaphore slots currently locked',
    });
    assert.deepEqual(await c.preReboot(), {
      ok: false,
      status: 500,
      kind: 'unknown',
      value: 'plain text error',
    });
    assert.deepEqual(await c.steadyState(), { ok: true });
  } finally {
    bare.close();
  }
  assert.deepEqual(
    seen.map((s) => [s.method, s.url, s.header]),
    [
      ['POST', '/base/v1/pre-reboot', 'true'],
      ['POST', '/base/v1/pre-reboot', 'true'],
      ['POST', '/base/v1/pre-reboot', 'true'],
      ['POST', '/base/v1/steady-state', 'true'],
    ],
  );
  for (const s of seen) {
    assert.match(s.type ?? '', /application\/json/);
    assert.deepEqual(JSON.parse(s.body), {
      client_params: { id: 'c988d2509fdf4cdcbed39037c56406fb', group: 'workers' },
    });
  }
});
