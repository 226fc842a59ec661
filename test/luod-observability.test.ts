/**
 * What luod leaves behind for operators, on a real luod and the emulated
 * kernel: the update record (completed, aborted, unclaimed), the Prometheus
 * metrics (HTTP endpoint and textfile) and the update id on every log line.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { LuoClient } from '../src/client/index.js';
import { PHASES, type UpdateRecord } from '../src/record/format.js';
import { readRecordFile } from '../src/record/store.js';
import { memfdCreate, type OwnedFd, pwriteAll } from '../src/sys/index.js';
import { type LuodInstance, startLuod } from './support/luod.js';
import { waitUntil } from './support/wait.js';

const instances: LuodInstance[] = [];
const closers: (() => void)[] = [];
after(async () => {
  for (const close of closers) close();
  for (const luod of instances) await luod.stop();
});

async function luodWith(args: string[], claimTimeoutS?: number): Promise<LuodInstance> {
  const luod = await startLuod({ args, ...(claimTimeoutS !== undefined && { claimTimeoutS }) });
  instances.push(luod);
  return luod;
}

/** A VMM: a memfd of guest memory preserved in its first session; `fail` answers FAILED instead. */
async function vmm(socket: string, id: string, options: { fail?: string } = {}): Promise<LuoClient> {
  const client = await LuoClient.connect(socket);
  const ram: OwnedFd = memfdCreate(id);
  pwriteAll(ram, Buffer.from(`guest memory of ${id}`), 0);
  closers.push(() => ram.close());
  client.onPreserve((sessions) => {
    if (options.fail) throw new Error(options.fail);
    sessions[0]!.preserveFd(ram, 1n);
  });
  client.on('warning', () => {});
  await client.subscribe(id);
  closers.push(() => client.close());
  return client;
}

async function claimBack(socket: string, id: string): Promise<void> {
  const client = await LuoClient.connectWithRetry(socket, { timeoutMs: 20_000 });
  const sessions = await client.claim(id);
  for (const s of sessions) {
    s.finish();
    s.close();
  }
  client.close();
}

/** RESUMED for `id` on a new connection (after HELLO, as a VMM does): luod's figure. */
async function reportResumed(
  socket: string,
  report: { id: string; update: string; pausedAt: number; resumedAt: number },
): Promise<number | null> {
  const client = await LuoClient.connect(socket);
  try {
    const hello = await client.hello();
    assert.deepEqual(hello.commands, ['RESUMED'], 'luod lists RESUMED in HELLO');
    return await client.resumed(report);
  } finally {
    client.close();
  }
}

function recordOf(luod: LuodInstance, update: string): string {
  return path.join(luod.stateDir, 'updates', `${update}.json`);
}

async function finishedRecord(luod: LuodInstance, update: string): Promise<UpdateRecord> {
  return waitUntil(() => {
    const file = recordOf(luod, update);
    if (!fs.existsSync(file)) return undefined;
    const record = readRecordFile(file);
    return record.outcome === 'in-progress' ? undefined : record;
  }, `the record of ${update}`);
}

function logLines(luod: LuodInstance): Record<string, unknown>[] {
  return luod
    .log()
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line));
}

function metricsPort(luod: LuodInstance): number {
  const line = logLines(luod).find((l) => l.msg === 'metrics served');
  assert.ok(line, `luod logged where it serves metrics:\n${luod.log()}`);
  return line.port as number;
}

async function scrape(port: number): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  assert.equal(response.status, 200);
  return response.text();
}

/** The value of one sample, e.g. `luod_updates_total{outcome="completed"}`; undefined when absent. */
function sample(text: string, name: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name} `)) return Number(line.slice(name.length + 1));
  }
  return undefined;
}

/** Phases of the luod lane must follow each other without overlapping, each closed. */
function assertPhasesInOrder(record: UpdateRecord, expected: string[]): void {
  assert.deepEqual(
    record.phases.map((p) => p.phase),
    expected,
  );
  for (const [i, span] of record.phases.entries()) {
    assert.notEqual(span.end, null, `${span.phase} ended`);
    assert.ok(span.end! >= span.start, `${span.phase} ends after it starts`);
    const next = record.phases[i + 1];
    if (next && span.phase !== 'load')
      assert.ok(next.start >= span.end!, `${next.phase} starts after ${span.phase}`);
  }
}

describe('a completed update', () => {
  let luod: LuodInstance;
  let update: string;
  let textfile: string;

  test('leaves a record with every phase, both client lanes and the kernel versions', async () => {
    const textDir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-textfile-'));
    closers.push(() => fs.rmSync(textDir, { recursive: true, force: true }));
    textfile = path.join(textDir, 'luod.prom');
    luod = await luodWith(['--metrics-port', '0', '--metrics-textfile', textfile]);
    await vmm(luod.socket, 'vm-a');
    await vmm(luod.socket, 'vm-b');
    const admin = await LuoClient.connect(luod.socket);
    await admin.load({ emuVersion: '7.3' });
    const outcome = await admin.update({ timeoutMs: 20_000 });
    admin.close();
    assert.equal(outcome.outcome, 'rebooted', JSON.stringify(outcome));
    update = String(outcome.update);
    // Written once restored, off the event loop while luod listens (update-records.ts saveSoon).
    const inProgress = await waitUntil(
      () => (fs.existsSync(recordOf(luod!, update)) ? readRecordFile(recordOf(luod!, update)) : undefined),
      'the record in progress',
    );
    assert.equal(inProgress.outcome, 'in-progress', 'written once restored, before the claims');
    assert.equal(inProgress.phases.at(-1)?.phase, 'claims');
    await claimBack(luod.socket, 'vm-a');
    // vm-a reports its blackout while the record is open (vm-b has not claimed yet)...
    const started = inProgress.started;
    const a = { id: 'vm-a', update, pausedAt: started + 5, resumedAt: started + 1234 };
    assert.equal(await reportResumed(luod.socket, a), 1229);
    await claimBack(luod.socket, 'vm-b');
    const closed = await finishedRecord(luod, update);
    assert.deepEqual(closed.clients[0]!.blackout, { paused_at: started + 5, resumed_at: started + 1234 });
    assert.equal(closed.clients[1]!.blackout, undefined);
    // ...vm-b once luod closed it: the closed record is written again, with it, before the reply.
    const b = { id: 'vm-b', update, pausedAt: started + 7, resumedAt: started + 2007 };
    assert.equal(await reportResumed(luod.socket, b), 2000);
    const record = readRecordFile(recordOf(luod, update));
    assert.deepEqual(record.clients[1]!.blackout, { paused_at: started + 7, resumed_at: started + 2007 });
    assert.equal(record.format, 'luod-update-record-v1');
    assert.equal(record.update, update);
    assert.equal(record.outcome, 'completed');
    assert.equal(record.reason, null);
    assert.equal(record.backend, 'emulated');
    assert.equal(record.to, '7.3');
    assert.match(record.from, /^\d+\.\d+$/);
    assert.deepEqual(record.failures, []);
    assertPhasesInOrder(record, [...PHASES]);
    assert.equal(
      record.phases.some((p) => p.failed),
      false,
    );
    assert.deepEqual(
      record.clients.map((c) => c.id),
      ['vm-a', 'vm-b'],
    );
    const barrier = record.phases.find((p) => p.phase === 'barrier')!;
    const claims = record.phases.find((p) => p.phase === 'claims')!;
    for (const client of record.clients) {
      assert.deepEqual(client.sessions, [client.id]);
      assert.equal(client.failure, null);
      assert.ok(client.preserve && client.ready !== null && client.claim, JSON.stringify(client));
      assert.ok(client.preserve.start >= barrier.start && client.preserve.end === client.ready);
      assert.ok(client.ready <= barrier.end!, 'READY before the barrier closed');
      assert.ok(
        client.claim.start >= claims.start && client.claim.end! <= claims.end!,
        'claimed during claims',
      );
    }
    assert.ok(record.finished! >= claims.end!);
  });

  test('RESUMED: the same report again is fine; another one, an unknown id or update, time running backwards are refused', async () => {
    const started = readRecordFile(recordOf(luod, update)).started;
    const a = { id: 'vm-a', update, pausedAt: started + 5, resumedAt: started + 1234 };
    assert.equal(await reportResumed(luod.socket, a), 1229);
    const refused = async (report: typeof a) => {
      try {
        await reportResumed(luod.socket, report);
      } catch (err) {
        return err as { code: string; message: string };
      }
      assert.fail('expected a refusal');
    };
    assert.equal((await refused({ ...a, resumedAt: a.resumedAt + 1 })).code, 'EEXIST');
    assert.equal((await refused({ ...a, id: 'vm-zz' })).code, 'ENOENT');
    assert.equal((await refused({ ...a, update: 'u-never' })).code, 'ENOENT');
    const backwards = await refused({ ...a, pausedAt: a.resumedAt + 1 });
    assert.equal(backwards.code, 'EINVAL');
    assert.match(backwards.message, /resumed_at .* is before paused_at/);
    // Not a number: the schema refuses it (EINVAL), naming the field.
    const raw = await LuoClient.connect(luod.socket);
    try {
      await assert.rejects(
        raw.request('RESUMED', { id: 'vm-a', update, paused_at: 'soon', resumed_at: 1 }),
        (err: { code: string; message: string }) => err.code === 'EINVAL' && /paused_at/.test(err.message),
      );
    } finally {
      raw.close();
    }
    // Nothing refused changed the record.
    const record = readRecordFile(recordOf(luod, update));
    assert.deepEqual(record.clients[0]!.blackout, { paused_at: started + 5, resumed_at: started + 1234 });
  });

  test('the phase transitions are logged, and every line during the update carries its id', async () => {
    // The record file can be read before luod's output has reached this process.
    const lines = await waitUntil(() => {
      const all = logLines(luod);
      return all.some((l) => l.event === 'record' && l.outcome === 'completed') ? all : undefined;
    }, "luod's log of the record written");
    const first = lines.findIndex((l) => l.msg === 'live update starting');
    const last = lines.findIndex((l) => l.event === 'record' && l.outcome === 'completed');
    assert.ok(first >= 0 && last > first, 'the update is in the log');
    const during = lines.slice(first, last + 1);
    for (const line of during)
      assert.equal(line.update, update, `line without the update id: ${JSON.stringify(line)}`);
    // Once per line: a log parser may reject (or silently merge) a repeated key.
    for (const raw of luod.log().split('\n'))
      assert.ok((raw.match(/"update":/g) ?? []).length <= 1, `the update id twice: ${raw}`);
    const started = during.filter((l) => l.event === 'phase' && l.step === 'start').map((l) => l.phase);
    assert.deepEqual(
      started,
      PHASES.filter((p) => p !== 'load'),
    );
    const ended = during.filter((l) => l.event === 'phase' && l.step === 'end');
    assert.ok(ended.every((l) => typeof l.ms === 'number'));
  });

  test('luoctl report finds the record by asking the running luod where its records are', () => {
    const run = spawnSync(
      process.execPath,
      ['--import', 'tsx', 'src/cli/luoctl.ts', '--socket', luod.socket, '--json', 'report'],
      { encoding: 'utf8', timeout: 60_000 },
    );
    assert.equal(run.status, 0, run.stdout + run.stderr);
    const reply = JSON.parse(run.stdout);
    assert.equal(reply.path, recordOf(luod, update));
    assert.equal(reply.record.update, update);
    assert.equal(reply.record.outcome, 'completed');
  });

  test('metrics: the endpoint and the textfile count the update and its phases', async () => {
    const port = metricsPort(luod);
    // Two protocol errors: a line that is not JSON, and an unknown command.
    const raw = net.createConnection(luod.socket);
    raw.on('error', () => {});
    await new Promise((resolve) => raw.once('connect', resolve));
    raw.write('this is not json\n{"cmd":"BOGUS"}\n');
    const held = await vmm(luod.socket, 'vm-c');
    const text = await waitUntil(async () => {
      const t = await scrape(port);
      return sample(t, 'luod_protocol_errors_total{kind="unknown-command"}') === 1 ? t : undefined;
    }, 'the protocol errors counted');
    raw.destroy();
    assert.equal(sample(text, 'luod_protocol_errors_total{kind="malformed-line"}'), 1);
    assert.equal(
      sample(text, 'luod_protocol_errors_total{kind="invalid-command"}'),
      1,
      'the RESUMED of "soon"',
    );
    assert.equal(sample(text, 'luod_updates_total{outcome="completed"}'), 1);
    assert.equal(sample(text, 'luod_updates_total{outcome="aborted"}'), 0);
    for (const phase of PHASES)
      assert.equal(sample(text, `luod_update_phase_duration_seconds_count{phase="${phase}"}`), 1, phase);
    assert.equal(sample(text, 'luod_vm_blackout_seconds_count'), 2, 'one per VM that reported');
    assert.equal(sample(text, 'luod_vm_blackout_seconds_sum'), 3.229);
    assert.equal(sample(text, 'luod_update_ready_to_claim_seconds_count'), 1);
    assert.equal(sample(text, 'luod_update_blackout_seconds_count'), undefined, 'one meaning of blackout');
    assert.equal(sample(text, 'luod_clients_connected'), 2, 'vm-c and the raw connection');
    assert.equal(sample(text, 'luod_clients_subscribed'), 1);
    assert.equal(sample(text, 'luod_sessions_held'), 0);
    assert.equal(sample(text, 'luod_unclaimed_sessions'), 0);
    held.close();
    const file = await waitUntil(() => {
      const t = fs.existsSync(textfile) ? fs.readFileSync(textfile, 'utf8') : '';
      return sample(t, 'luod_updates_total{outcome="completed"}') === 1 ? t : undefined;
    }, 'the textfile written after the update');
    assert.match(file, /# TYPE luod_update_phase_duration_seconds histogram/);
    const notFound = await fetch(`http://127.0.0.1:${port}/`);
    assert.equal(notFound.status, 404);
  });
});

describe('an aborted update', () => {
  test('leaves a record naming the client that failed, and counts it', async () => {
    const luod = await luodWith(['--metrics-port', '0']);
    await vmm(luod.socket, 'vm-ok');
    await vmm(luod.socket, 'vm-bad', { fail: 'the disk is on fire' });
    const admin = await LuoClient.connect(luod.socket);
    const outcome = await admin.update({ timeoutMs: 20_000 });
    admin.close();
    assert.equal(outcome.outcome, 'aborted');
    const record = await finishedRecord(luod, String(outcome.update));
    assert.equal(record.outcome, 'aborted');
    assert.match(record.reason!, /vm-bad failed: the disk is on fire/);
    assert.deepEqual(
      record.phases.map((p) => p.phase),
      ['load', 'preserve', 'barrier', 'finish'],
    );
    assert.match(record.phases.find((p) => p.phase === 'barrier')!.failed!, /vm-bad failed/);
    const bad = record.clients.find((c) => c.id === 'vm-bad')!;
    assert.match(bad.failure!, /the disk is on fire/);
    assert.equal(bad.ready, null);
    assert.equal(bad.claim, null);
    assert.ok(bad.preserve?.end !== null);
    assert.deepEqual(
      record.failures.map((f) => f.id),
      ['vm-bad'],
    );
    const text = await scrape(metricsPort(luod));
    assert.equal(sample(text, 'luod_updates_total{outcome="aborted"}'), 1);
    assert.equal(sample(text, 'luod_updates_total{outcome="completed"}'), 0);
    assert.equal(
      sample(text, 'luod_update_phase_duration_seconds_count{phase="kexec"}'),
      undefined,
      'no kexec was observed',
    );
    assert.equal(sample(text, 'luod_update_phase_duration_seconds_count{phase="barrier"}'), 1);
    const lines = logLines(luod);
    assert.ok(
      lines.some((l) => l.event === 'phase' && l.phase === 'barrier' && l.step === 'end' && l.failed),
      'the failed barrier is logged as such',
    );
  });
});

describe('claims that arrive together', () => {
  test('the update completes only once every claim reply went out, and the record has them all', async () => {
    const luod = await luodWith([]);
    const ids = ['vm-c1', 'vm-c2', 'vm-c3', 'vm-c4', 'vm-c5', 'vm-c6'];
    for (const id of ids) await vmm(luod.socket, id);
    const admin = await LuoClient.connect(luod.socket);
    await admin.load({ emuVersion: '7.2' });
    const outcome = await admin.update({ timeoutMs: 20_000 });
    admin.close();
    assert.equal(outcome.outcome, 'rebooted', JSON.stringify(outcome));
    const update = String(outcome.update);
    await Promise.all(ids.map((id) => claimBack(luod.socket, id)));
    const record = await finishedRecord(luod, update);
    assert.equal(record.outcome, 'completed', record.reason ?? '');
    const claims = record.phases.find((p) => p.phase === 'claims')!;
    for (const id of ids) {
      const client = record.clients.find((c) => c.id === id)!;
      assert.ok(client.claim?.end, `${id}'s claim ended in the record: ${JSON.stringify(client)}`);
      assert.ok(client.claim.end <= claims.end!, `${id} claimed before the claims phase ended`);
    }
  });
});

describe('an update whose client never claims', () => {
  test('fails at the claim deadline, and the record and metrics say who and how many sessions', async () => {
    const luod = await luodWith(['--metrics-port', '0'], 1);
    await vmm(luod.socket, 'vm-gone');
    const admin = await LuoClient.connect(luod.socket);
    const outcome = await admin.update({ timeoutMs: 20_000 });
    assert.equal(outcome.outcome, 'rebooted');
    const port = metricsPort(luod);
    const during = await scrape(port);
    assert.equal(sample(during, 'luod_unclaimed_sessions'), 1);
    assert.equal(sample(during, 'luod_sessions_held'), 1);
    const record = await finishedRecord(luod, String(outcome.update));
    admin.close();
    assert.equal(record.outcome, 'failed');
    assert.match(record.reason!, /vm-gone: did not claim its sessions within 1000 ms/);
    assert.match(record.phases.find((p) => p.phase === 'claims')!.failed!, /not claimed within 1000 ms/);
    assert.equal(record.clients[0]!.claim, null);
    const text = await scrape(port);
    assert.equal(sample(text, 'luod_updates_total{outcome="failed"}'), 1);
    assert.equal(sample(text, 'luod_unclaimed_sessions_released_total'), 1);
    assert.equal(sample(text, 'luod_unclaimed_sessions'), 0);
  });
});
