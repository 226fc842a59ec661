/**
 * luod killed with SIGKILL at each phase of a live update, on the emulated
 * kernel, with each of its fd holders (the holder process; a fake systemd fd
 * store behind a notify socket), then started again:
 *  (a) idle: clients reconnect and subscribe again; the next update works;
 *  (b) sessions handed out, not all READY: the update is aborted cleanly;
 *  (c) at the barrier (all READY, luod stopped before its kexec): aborted too;
 *  (d) after the kexec, one client claimed, one not: the other still claims.
 * The emulator's own session listing proves what the kernel still holds after
 * each kill (luod dead, the clients' copies closed: only the holder is left).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { LuoClient, type LuoClientError } from '../src/client/index.js';
import type { UpdateRecord } from '../src/record/format.js';
import { listRecordFiles, readRecordFile } from '../src/record/store.js';
import { FakeSystemd, HolderHost, type Host, MAIN } from './crash/hosts.js';
import {
  admin,
  claimAndCheck,
  closeAllVms,
  fullUpdate,
  startUpdate,
  startVm,
  status,
  type Vm,
  waitSubscribed,
  withHost,
  withLog,
} from './crash/vms.js';
import { waitUntil } from './support/wait.js';

after(closeAllVms);

/**
 * After a kill before the kexec: luod is gone, the clients' copies are closed
 * (the library closes them when the connection drops), and the kernel still
 * has every outgoing session: only the holder keeps them alive.
 */
async function assertHeldAfterKill(host: Host, list: Vm[]): Promise<void> {
  await waitUntil(() => list.every((vm) => vm.openSessions() === 0), 'the clients closed their session fds');
  // (A request of the dead luod that the kernel answers late may show a session for a moment.)
  const want = list.map((vm) => vm.id).sort();
  let outgoing: string[] = [];
  await waitUntil(async () => {
    outgoing = (await host.sessions()).outgoing;
    return outgoing.join() === want.join();
  }, 'the kernel still has every outgoing session').catch(() => {
    assert.deepEqual(outgoing, want, 'the holder kept every outgoing session');
  });
}

/** After the restart: ABORTED reaches every VM, the kernel drops the sessions, a new update works. */
/** The update records luod left in the emulator's state directory, oldest first. */
function records(host: Host): UpdateRecord[] {
  const dir = path.join(host.stateDir, 'updates');
  return fs.existsSync(dir) ? listRecordFiles(dir).map((f) => readRecordFile(f.path)) : [];
}

/** The interrupted update has a record: aborted, luod's restart named, both lanes there. */
function assertAbortRecorded(host: Host, clients: string[]): void {
  const aborted = records(host).filter((r) => r.outcome === 'aborted');
  assert.equal(aborted.length, 1, JSON.stringify(records(host)));
  const record = aborted[0]!;
  assert.match(record.reason ?? '', /restarted during the update/);
  assert.ok(record.failures.some((f) => f.id === 'luod'));
  assert.deepEqual(record.clients.map((c) => c.id).sort(), clients);
  assert.ok(
    record.phases.length >= 1 && record.phases.every((p) => p.end !== null),
    JSON.stringify(record.phases),
  );
}

async function assertAbortedCleanly(host: Host, list: Vm[]): Promise<void> {
  await waitUntil(() => list.every((vm) => vm.aborted.length > 0), 'every VM was told ABORTED');
  for (const vm of list) assert.match(vm.aborted[0]!.reason, /restarted during the update/);
  await waitUntil(
    async () => (await host.sessions()).outgoing.length === 0,
    'the kernel unpreserved the sessions',
  );
  const s = await status(host);
  assert.equal((s.last_update as { outcome: string }).outcome, 'aborted');
  assert.equal(fs.existsSync(`${host.socket}.state.json`), false, 'no state file once the update is aborted');
  await fullUpdate(host, list);
}

const hosts: { name: string; make: () => Host }[] = [
  { name: 'holder process', make: () => new HolderHost(['--claim-timeout', '120']) },
  {
    name: 'fake systemd fd store',
    make: () => new FakeSystemd(['--claim-timeout', '120', '--kexec-mode', 'standalone']),
  },
];

for (const { name, make } of hosts) {
  describe(`luod killed at each phase (${name})`, () => {
    test('(a) idle: clients reconnect and subscribe again; the next update works', async () => {
      assert.ok(fs.existsSync(MAIN), 'run npm run build first');
      await withHost(make(), async (host) => {
        await host.start();
        const a = await startVm(host, 'vm-a');
        const b = await startVm(host, 'vm-b');
        await waitSubscribed(host, ['vm-a', 'vm-b']);
        await host.kill();
        await host.start();
        await waitUntil(
          () => a.sub.subscriptions === 2 && b.sub.subscriptions === 2,
          'both subscribed again',
        );
        assert.deepEqual(a.aborted, [], 'no update was running: nothing to abort');
        await fullUpdate(host, [a, b]);
      });
    });

    test('(b) sessions handed out, a client not READY: aborted cleanly, clients told, a new update works', async () => {
      await withHost(make(), async (host) => {
        await host.start();
        const a = await startVm(host, 'vm-a', 'hold');
        const b = await startVm(host, 'vm-b', 'ready');
        await waitSubscribed(host, ['vm-a', 'vm-b']);
        const operator = await startUpdate(host);
        await waitUntil(() => a.preserved === 1 && b.readied === 1, 'both preserved, only vm-b READY');
        await host.kill();
        operator.close();
        await assertHeldAfterKill(host, [a, b]);
        await host.start();
        await assertAbortedCleanly(host, [a, b]);
        assertAbortRecorded(host, ['vm-a', 'vm-b']);
      });
    });

    test('(c) at the barrier, all READY, before the kexec: aborted cleanly', async () => {
      const host = make();
      const emulator = { pid: 0, stopped: false };
      try {
        await host.start();
        const a = await startVm(host, 'vm-a', 'ready');
        const b = await startVm(host, 'vm-b', 'hold');
        await waitSubscribed(host, ['vm-a', 'vm-b']);
        const operator = await startUpdate(host);
        await waitUntil(() => a.readied === 1 && b.preserved === 1, 'vm-a READY, vm-b preserved');
        // luod must be done with vm-a's READY before the kernel stops: handling it may
        // call the kernel, and a luod blocked there would never read vm-b's.
        await waitUntil(
          () => /"client":"vm-a"[^\n]*"msg":"client ready"/.test(host.log()),
          'luod took vm-a READY',
        );
        // The emulated kernel stops answering: luod, past the barrier, waits
        // in front of the kexec when it is killed.
        emulator.pid = host.emulatorPid();
        process.kill(emulator.pid, 'SIGSTOP');
        emulator.stopped = true;
        b.answer = 'ready-then-hold';
        // luod takes the READY and goes past the barrier, where it waits for
        // the stopped kernel (its reply may never come).
        b.sub.client!.ready().catch(() => {});
        await waitUntil(
          () => /"client":"vm-b"[^\n]*"msg":"client ready"/.test(host.log()),
          'luod took vm-b READY',
        );
        await host.kill();
        process.kill(emulator.pid, 'SIGCONT');
        emulator.stopped = false;
        operator.close();
        await assertHeldAfterKill(host, [a, b]);
        await host.start();
        await assertAbortedCleanly(host, [a, b]);
        assertAbortRecorded(host, ['vm-a', 'vm-b']);
      } catch (err) {
        throw withLog(err, host);
      } finally {
        if (emulator.stopped) process.kill(emulator.pid, 'SIGCONT');
        await host.stop();
      }
    });

    test('(d) after the kexec, before every CLAIM: no session lost, the rest still claim', async () => {
      await withHost(make(), async (host) => {
        await host.start();
        const a = await startVm(host, 'vm-a');
        const b = await startVm(host, 'vm-b');
        await waitSubscribed(host, ['vm-a', 'vm-b']);
        const operator = await admin(host);
        const outcome = await operator.update({ timeoutMs: 30_000 });
        operator.close();
        assert.equal(outcome.outcome, 'rebooted', JSON.stringify(outcome));
        await claimAndCheck(host, a);
        await waitUntil(async () => {
          const s = await status(host);
          return (
            (s.pending_claims as string[]).join() === 'vm-b' && (s.holder as { held: number }).held === 1
          );
        }, 'only vm-b left to claim, and the holder let go of vm-a');
        await host.kill();
        // luod is dead; the kernel still has vm-b's incoming session: the holder keeps it.
        assert.deepEqual((await host.sessions()).incoming, ['vm-b']);
        await host.start();
        const s = await status(host);
        assert.equal(s.phase, 'claiming');
        assert.deepEqual(s.pending_claims, ['vm-b']);
        assert.equal((s.last_update as { update: string }).update, outcome.update);
        const again = await LuoClient.connect(host.socket);
        await assert.rejects(again.claim('vm-a'), (err: LuoClientError) => err.code === 'EBUSY');
        again.close();
        await claimAndCheck(host, b);
        await waitUntil(async () => (await status(host)).phase === 'idle', 'luod idle after the last claim');
        // The holder lets go of its copy after the claim; the session is gone once it has.
        await waitUntil(
          async () => (await host.sessions()).incoming.length === 0,
          'every incoming session finished',
        );
        // The file goes last, once the holder let go of the claimed copies (a kill in between
        // must find "claimed" in it), so it may trail the idle phase by a moment.
        await waitUntil(() => !fs.existsSync(`${host.socket}.state.json`), 'no state file once all claimed');
        // The restarted luod carried on the record the first one wrote at restore.
        const record = records(host).find((r) => r.update === outcome.update);
        assert.equal(record?.outcome, 'completed', JSON.stringify(record));
        for (const lane of record!.clients) assert.ok(lane.claim?.end, `${lane.id} claimed in the record`);
        for (const vm of [a, b]) vm.close();
        const c = await startVm(host, 'vm-c');
        await fullUpdate(host, [c]);
      });
    });
  });
}
