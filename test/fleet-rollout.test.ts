/**
 * `luoctl rollout` and `luoctl fleet agent` end to end (#17 items 1, 2, 5): three emulated
 * hosts (luod --emulate, an example VMM, the agent, each a process) on a private etcd. A
 * rollout to the next emulated kernel updates each host once, with the figures of each
 * host's update record in `rollout status --json`; the same rollout again updates no one
 * (every host already runs it); a pair outside `--qualified` is refused by the agents and
 * the rollout stops at its failure limit.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import { type EtcdInstance, startEtcd } from './support/etcd.js';
import { type FleetHost, startFleetHost } from './support/fleet-host.js';
import { ROOT } from './support/luod.js';
import { waitUntil } from './support/wait.js';

const PREFIX = '/test/rollout';
let etcd: EtcdInstance;
let hosts: FleetHost[] = [];

function luoctl(...args: string[]) {
  const run = spawnSync(process.execPath, [path.join(ROOT, 'dist/cli/luoctl-bin.cjs'), ...args], {
    encoding: 'utf8',
    timeout: 240_000,
  });
  assert.equal(run.stderr.includes('    at '), false, `no stack trace:\n${run.stderr}`);
  return run;
}
const fleetArgs = () => ['--etcd', etcd.endpoint, '--prefix', PREFIX, '--json'];
const lastJson = (text: string) => JSON.parse(text.trim().split('\n').at(-1)!);

before(async () => {
  etcd = await startEtcd();
  hosts = await Promise.all(
    ['a-1', 'a-2', 'a-3'].map((id) => startFleetHost({ id, etcd: etcd.endpoint, prefix: PREFIX })),
  );
  await waitUntil(
    () => {
      const run = luoctl('rollout', 'status', ...fleetArgs());
      return run.status === 0;
    },
    'etcd answers',
    30_000,
  );
});
after(async () => {
  await Promise.all(hosts.map((h) => h.close()));
  await etcd?.close();
});

async function registered(): Promise<void> {
  // The agents register as they start; a rollout selects registered hosts only.
  const { connectEtcd } = await import('../src/fleet/etcd.js');
  const client = connectEtcd(etcd.endpoint);
  try {
    await waitUntil(
      async () => (await client.getAll().prefix(`${PREFIX}/hosts/`).keys()).length === 3,
      'three agents registered',
      60_000,
    );
  } finally {
    client.close();
  }
}

test('a rollout to the next emulated kernel updates each host once, with its record figures', async () => {
  await registered();
  const run = luoctl(
    'rollout',
    'start',
    ...fleetArgs(),
    '--kernel',
    'emu:7.3',
    '--max-parallel',
    '2',
    '--max-failures',
    '1',
  );
  assert.equal(run.status, 0, `${run.stdout}\n${run.stderr}`);
  const result = lastJson(run.stdout);
  assert.equal(result.state, 'done');
  const status = lastJson(luoctl('rollout', 'status', ...fleetArgs()).stdout);
  assert.equal(status.rollout, result.rollout);
  assert.deepEqual(status.counts, { pending: 0, assigned: 0, updating: 0, done: 3, skipped: 0, failed: 0 });
  for (const h of status.hosts) {
    assert.equal(h.state, 'done', JSON.stringify(h));
    assert.deepEqual([h.from, h.to], ['7.2', '7.3']);
    assert.equal(h.record.outcome, 'completed');
    assert.ok(h.blackout_ms > 0 && h.blackout_ms <= h.duration_ms, JSON.stringify(h));
    assert.ok(h.record.phases.kexec >= 0 && h.record.phases.claims >= 0);
  }
  // Never more than 2 at once: the agents' own update intervals.
  const events = status.hosts.flatMap((h: { started_at: number; finished_at: number }) => [
    [h.started_at, 1],
    [h.finished_at, -1],
  ]);
  events.sort((x: number[], y: number[]) => x[0]! - y[0]! || x[1]! - y[1]!);
  let at = 0;
  let most = 0;
  for (const [, d] of events) {
    at += d;
    most = Math.max(most, at);
  }
  assert.ok(most <= 2, `${most} hosts updating at once`);
  // People get a table.
  const text = luoctl('rollout', 'status', '--etcd', etcd.endpoint, '--prefix', PREFIX);
  assert.match(text.stdout, /rollout r-\S+: done/);
  assert.match(text.stdout, /a-1\s+done\s+\d+ ms\s+blackout \d+ ms\s+7\.2 -> 7\.3/);
});

test('status --html draws the timeline: one lane per host, its update and its blackout', () => {
  const file = path.join(etcd.dir, 'rollout.html');
  const run = luoctl('rollout', 'status', ...fleetArgs(), '--html', file);
  assert.equal(run.status, 0, run.stdout);
  const status = lastJson(run.stdout);
  assert.equal(status.html, file);
  const html = fs.readFileSync(file, 'utf8');
  assert.match(html, /^<!DOCTYPE html>/);
  assert.doesNotMatch(html, /<script|https?:\/\/(?!www\.w3\.org)/, 'self-contained');
  const lanes = [...html.matchAll(/<g class="lane" data-host="([^"]+)" data-state="([^"]+)">/g)].map((m) => [
    m[1],
    m[2],
  ]);
  assert.deepEqual(
    lanes,
    status.hosts.map((h: { id: string; state: string }) => [h.id, h.state]),
  );
  for (const h of status.hosts) {
    const update = new RegExp(
      `data-host="${h.id}" data-kind="done" data-start-ms="\\d+" data-duration-ms="(\\d+)"`,
    ).exec(html);
    assert.equal(Number(update?.[1]), h.duration_ms, `${h.id}'s update bar`);
    const blackout = new RegExp(
      `data-host="${h.id}" data-blackout="true" data-start-ms="\\d+" data-duration-ms="(\\d+)"`,
    ).exec(html);
    assert.equal(Number(blackout?.[1]), h.blackout_ms, `${h.id}'s blackout`);
  }
});

test('the same rollout again updates no host twice: every host already runs it', async () => {
  const run = luoctl(
    'rollout',
    'start',
    ...fleetArgs(),
    '--kernel',
    'emu:7.3',
    '--max-parallel',
    '3',
    '--max-failures',
    '1',
  );
  assert.equal(run.status, 0, run.stdout);
  const status = lastJson(run.stdout);
  assert.deepEqual(status.counts.skipped, 3);
  for (const h of status.hosts) {
    assert.equal(h.reason, 'already runs 7.3');
    assert.equal(h.update, null, 'no update ran');
  }
});

test('an unqualified pair is refused by the agent, and the rollout stops at its failure limit', async () => {
  const run = luoctl(
    'rollout',
    'start',
    ...fleetArgs(),
    '--kernel',
    'emu:7.2',
    '--qualified',
    '7.2:7.3',
    '--max-parallel',
    '1',
    '--max-failures',
    '1',
  );
  assert.equal(run.status, 1, run.stdout);
  const status = lastJson(run.stdout);
  assert.equal(status.state, 'stopped');
  assert.deepEqual(status.failed, [
    { id: 'a-1', reason: 'the pair 7.3 -> 7.2 is not qualified for this rollout' },
  ]);
  assert.deepEqual(status.counts.pending, 2, 'nothing started after the limit');
});

test('operator errors carry an errno name and a sentence', () => {
  const none = luoctl(
    'rollout',
    'start',
    ...fleetArgs(),
    '--kernel',
    'emu:7.3',
    '--max-parallel',
    '0',
    '--max-failures',
    '1',
  );
  assert.equal(none.status, 1);
  assert.deepEqual(lastJson(none.stdout).error.code, 'EINVAL');
  const unknown = luoctl(
    'rollout',
    'start',
    ...fleetArgs(),
    '--kernel',
    'emu:7.3',
    '--max-parallel',
    '1',
    '--max-failures',
    '1',
    '--hosts',
    'nope',
  );
  assert.deepEqual(lastJson(unknown.stdout).error, {
    code: 'ENOENT',
    message: 'host nope has no running agent',
  });
  const text = luoctl('rollout', 'resume', '--etcd', etcd.endpoint, '--prefix', PREFIX);
  assert.match(text.stderr, /^luoctl: rollout resume: EINVAL: cannot resume a rollout that is stopped\n$/);
});
