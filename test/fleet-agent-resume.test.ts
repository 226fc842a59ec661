/**
 * An agent that finds its host `updating` (#17: "a controller or agent killed at any point
 * continues where the rollout was"). Two ways to get there, and both must end right:
 *  - the write of `updating` committed but the agent never asked luod (it was killed right
 *    after, or etcd went away before its reply came back, as in a CI run of the faults test):
 *    luod has no update since, so the agent runs the update now, once;
 *  - the agent was killed after luod's update: it judges the update from luod's record and
 *    never runs a second one.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { connectEtcd, type Etcd3 } from '../src/fleet/etcd.js';
import { FleetKeys } from '../src/fleet/keys.js';
import { createRollout, type HostProgress, readRollout, writeHost } from '../src/fleet/rollout.js';
import { emulatedRecordsDir, listRecordFiles, readRecordFile } from '../src/record/store.js';
import { type EtcdInstance, startEtcd } from './support/etcd.js';
import { type FleetHost, startFleetHost } from './support/fleet-host.js';
import { waitUntil } from './support/wait.js';

const PREFIX = '/test/resume';
const keys = new FleetKeys(PREFIX);
const ID = 'r-1';
let etcd: EtcdInstance;
let client: Etcd3;
let host: FleetHost;

before(async () => {
  etcd = await startEtcd();
  client = connectEtcd(etcd.endpoint);
  host = await startFleetHost({ id: ID, etcd: etcd.endpoint, prefix: PREFIX, agent: false });
});
after(async () => {
  await host?.close();
  client?.close();
  await etcd?.close();
});

/** Put the host's entry in `state` by hand, as the agent's own write would have. */
async function setProgress(progress: HostProgress): Promise<void> {
  const view = await readRollout(client, keys);
  const mine = view.hosts.get(ID);
  assert.ok(mine, 'the host is in the rollout');
  assert.equal(await writeHost(client, keys, view, mine.mod, progress), true);
}

async function outcome(): Promise<HostProgress> {
  return waitUntil(
    async () => {
      const p = (await readRollout(client, keys)).hosts.get(ID)?.progress;
      return p && ['done', 'failed'].includes(p.state) ? p : undefined;
    },
    'the agent reports an outcome',
    120_000,
  );
}

const records = () => listRecordFiles(emulatedRecordsDir(host.state)).map((f) => readRecordFile(f.path));

test('`updating` with no update in luod: the agent runs it now, once', async () => {
  await createRollout(client, keys, {
    id: 'r-resume',
    kernel: 'emu:7.3',
    max_parallel: 1,
    max_failures: 1,
    hosts: [ID],
    created: new Date().toISOString(),
  });
  await setProgress({ id: ID, state: 'updating', assigned_at: Date.now(), started_at: Date.now() });
  assert.equal(records().length, 0, 'no update before the agent starts');
  host.startAgent();
  const done = await outcome();
  assert.equal(done.state, 'done', JSON.stringify(done));
  assert.equal(done.record?.outcome, 'completed');
  assert.equal(done.record?.to, '7.3');
  assert.match(host.agentLog(), /luod never got the UPDATE; running it now/);
  assert.equal(records().length, 1, 'exactly one update ran');
  await host.killAgent();
});

test('`updating` after luod updated: the agent judges the record and updates nothing again', async () => {
  const [record] = records();
  assert.ok(record);
  // As if the agent had been killed after luod's update, before it wrote `done`.
  await setProgress({
    id: ID,
    state: 'updating',
    assigned_at: record.started - 100,
    started_at: record.started - 50,
  });
  host.startAgent();
  const done = await outcome();
  assert.equal(done.state, 'done', JSON.stringify(done));
  assert.equal(done.record?.update, record.update, "the outcome is that update's");
  assert.doesNotMatch(host.agentLog(), /running it now[\s\S]*running it now/, 'no second run');
  assert.equal(records().length, 1, 'no second update');
});
