/**
 * luod's systemd kexec mode on the emulated kernel, under a fake systemd
 * (test/crash/hosts.ts) whose systemctl double does what systemd 261+ does
 * for `systemctl kexec`: stop luod, kexec, retrieve every LUO session of the
 * fd store by name, start luod again with them as LISTEN_FDS. What only a
 * real systemd can prove is listed in docs/operations.md.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { after, describe, test } from 'node:test';
import { claimAfterReboot, type LuoClientError } from '../src/client/index.js';
import { FakeSystemd, MAIN } from './crash/hosts.js';
import {
  admin,
  claimAndCheck,
  closeAllVms,
  fullUpdate,
  startUpdate,
  startVm,
  status,
  updateOnce,
  waitSubscribed,
  withHost,
} from './crash/vms.js';
import { waitUntil } from './support/wait.js';

after(closeAllVms);

const SYSTEMD_ARGS = ['--claim-timeout', '120', '--kexec-mode', 'systemd'];

const luodNames = (host: FakeSystemd) => host.storedNames().filter((n) => n.startsWith('luod.'));

describe('luod --kexec-mode systemd', () => {
  test('systemctl kexec: sessions cross the kexec in the fd store; luod killed before the last CLAIM; every byte back', async () => {
    assert.ok(fs.existsSync(MAIN), 'run npm run build first');
    await withHost(new FakeSystemd(SYSTEMD_ARGS, 2_000_000), async (host) => {
      await host.start();
      const a = await startVm(host, 'vm-a');
      const b = await startVm(host, 'vm-b');
      await waitSubscribed(host, ['vm-a', 'vm-b']);
      assert.equal((await status(host)).kexec_mode, 'systemd');
      const outcome = await updateOnce(host, true);
      if (outcome !== null) assert.equal(outcome.outcome, 'kexec', JSON.stringify(outcome));
      await host.kexecFinished();
      assert.equal(host.kexecs, 1);
      assert.deepEqual(host.lostInKexec, []);
      await waitUntil(() => a.rebooted === 1 && b.rebooted === 1, 'both VMs saw KEXEC and the drop');
      const after = await status(host);
      assert.equal(after.phase, 'claiming');
      assert.deepEqual((after.pending_claims as string[]).slice().sort(), ['vm-a', 'vm-b']);
      assert.match(String((after.last_update as { update: string }).update), /^u-/);
      if (outcome !== null) assert.equal((after.last_update as { update: string }).update, outcome.update);
      // The store now holds the incoming sessions, under this boot's names; luod-internal was read and finished.
      const names = luodNames(host);
      assert.equal(names.length, 2, names.join());
      assert.ok(
        names.every((n) => n.startsWith('luod.in.')),
        names.join(),
      );
      await claimAndCheck(host, a);
      await waitUntil(() => luodNames(host).length === 1, 'vm-a removed from the fd store');
      await host.kill(); // (d) under systemd: the store still has vm-b
      await host.start();
      assert.deepEqual((await status(host)).pending_claims, ['vm-b']);
      await claimAndCheck(host, b);
      await waitUntil(() => luodNames(host).length === 0, 'the fd store emptied by FDSTOREREMOVE');
      // The emulated kernel learns of the last close a moment later (docs/emulator.md).
      await waitUntil(
        async () => (await host.sessions()).incoming.length === 0,
        'every incoming session gone',
      );
      const sent = (key: string, match?: RegExp) =>
        host.messages.some((m) => m[key] !== undefined && (!match || match.test(m[key]!)));
      assert.ok(sent('READY', /^1$/), 'READY=1');
      assert.ok(sent('STATUS', /^claiming: /), 'STATUS= for the claiming phase');
      assert.ok(sent('WATCHDOG', /^1$/), 'WATCHDOG=1 with WATCHDOG_USEC set');
      assert.ok(sent('STOPPING', /^1$/), 'STOPPING=1 when systemd stops luod for the kexec');
    });
  });

  test('luod killed while systemctl kexec runs: the update is aborted, the store emptied, clients told', async () => {
    await withHost(new FakeSystemd(SYSTEMD_ARGS), async (host) => {
      await host.start();
      const a = await startVm(host, 'vm-a');
      await waitSubscribed(host, ['vm-a']);
      host.kexecBehaviour = 'block';
      const operator = await startUpdate(host);
      await waitUntil(() => host.blockedCalls === 1, 'luod waiting for systemctl kexec');
      assert.equal((await status(host)).phase, 'kexec');
      const held = luodNames(host);
      assert.equal(held.filter((n) => n.startsWith('luod.out.')).length, 1, held.join());
      assert.equal(held.filter((n) => n.startsWith('luod.state.')).length, 1, held.join());
      await host.kill();
      operator.close();
      await waitUntil(
        () => a.rebooted === 1 && a.openSessions() === 0,
        'vm-a saw KEXEC, the drop, closed its fds',
      );
      assert.deepEqual((await host.sessions()).outgoing, ['luod-internal', 'vm-a'], 'the fd store kept both');
      // vm-a's subscription would reconnect to the restarted luod by itself and take the
      // ABORTED meant for the VMM started again below: it goes now.
      a.close();
      host.kexecBehaviour = 'kexec';
      await host.start();
      assert.deepEqual(luodNames(host), [], 'the restarted luod released the aborted update');
      await waitUntil(
        async () => (await host.sessions()).outgoing.length === 0,
        'the kernel unpreserved them',
      );
      // vm-a believed the host rebooted: its CLAIM says there is nothing, and
      // subscribing again brings the ABORTED it missed.
      await assert.rejects(
        claimAfterReboot('vm-a', { path: host.socket, timeoutMs: 30_000 }),
        (err: LuoClientError) => err.code === 'ENOENT',
      );
      const again = await startVm(host, 'vm-a');
      await waitUntil(() => again.aborted.length === 1, 'ABORTED after subscribing again');
      assert.match(again.aborted[0]!.reason, /restarted during the update/);
      await fullUpdate(host, [again], host);
    });
  });

  test('systemctl kexec fails: refused, sessions released from the store, ABORTED, the host keeps running', async () => {
    await withHost(new FakeSystemd(SYSTEMD_ARGS), async (host) => {
      await host.start();
      const a = await startVm(host, 'vm-a');
      await waitSubscribed(host, ['vm-a']);
      host.kexecBehaviour = 'fail';
      const operator = await admin(host);
      const outcome = await operator.update({ timeoutMs: 30_000 });
      operator.close();
      assert.equal(outcome.outcome, 'refused');
      assert.match(String(outcome.reason), /kexec failed \(exit 1\).*fake refusal/);
      await waitUntil(() => a.aborted.length === 1, 'vm-a told ABORTED');
      assert.deepEqual(luodNames(host), []);
      await waitUntil(async () => (await host.sessions()).outgoing.length === 0, 'nothing left preserved');
      assert.equal(fs.existsSync(`${host.socket}.state.json`), false);
    });
  });

  test('luoctl doctor --json reports the mode the running luod uses', async () => {
    const host = new FakeSystemd(SYSTEMD_ARGS);
    try {
      await host.start();
      const result = spawnSync(process.execPath, ['dist/cli/luoctl.js', 'doctor', '--json'], {
        encoding: 'utf8',
        env: { ...process.env, LUOD_SOCKET: host.socket },
      });
      const report = JSON.parse(result.stdout);
      assert.equal(report.kexecMode.mode, 'systemd');
      assert.equal(report.kexecMode.source, 'luod');
      assert.match(report.kexecMode.why, /systemd-fd-store/);
      const check = report.checks.find((c: { id: string }) => c.id === 'kexec-mode');
      // The fake is not PID 1: unless the real PID 1 is a systemd 261+, the doctor warns, rightly.
      if (fs.readFileSync('/proc/1/comm', 'utf8').trim() !== 'systemd') {
        assert.equal(check.status, 'warn');
        assert.match(
          check.finding,
          /^luod runs in the systemd kexec mode, but PID 1 .* the sessions would be lost/,
        );
      } else {
        assert.match(check.finding, /systemd/);
      }
    } finally {
      await host.stop();
    }
  });

  test('--kexec-mode systemd outside systemd is refused with EINVAL', () => {
    const env = { ...process.env };
    delete env.NOTIFY_SOCKET;
    const result = spawnSync(
      process.execPath,
      [MAIN, '--emulate', '--socket', '/nonexistent/luod.sock', '--kexec-mode', 'systemd'],
      { encoding: 'utf8', env },
    );
    assert.equal(result.status, 1);
    assert.match(result.stderr, /^luod: EINVAL: --kexec-mode systemd needs luod to run under systemd/);
    const bad = spawnSync(process.execPath, [MAIN, '--emulate', '--kexec-mode', 'reboot'], {
      encoding: 'utf8',
      env,
    });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /EINVAL: --kexec-mode must be one of auto, standalone, systemd/);
  });
});
