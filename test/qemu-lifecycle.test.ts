/**
 * luo-qemu's life outside a plain update (issue 14), with real QEMU on the emulated kernel:
 *  - luo-qemu killed after READY: the same command adopts its stopped QEMU;
 *  - `luoctl demo --qemu --json`;
 *  - a vfio-pci device refused before QEMU starts;
 *  - QEMU exiting on its own: luo-qemu exits with its status and unsubscribes.
 * Split from test/qemu.test.ts so that each file stays well inside the runner's per-file
 * timeout on a loaded machine.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { LuoClient } from '../src/client/index.js';
import { HolderHost } from './crash/hosts.js';
import { closeAllVms, startVm, status, waitSubscribed, withHost } from './crash/vms.js';
import { newVm, running, update } from './qemu/harness.js';
import { LUO_QEMU, QEMU } from './qemu/vm.js';
import { ROOT } from './support/luod.js';
import { waitUntil } from './support/wait.js';

after(closeAllVms);

describe('luo-qemu outside a plain update, on the emulated kernel', { concurrency: false }, () => {
  test('luo-qemu killed after READY: the same command adopts its stopped QEMU and resumes it', async () => {
    await withHost(new HolderHost([]), async (host) => {
      await host.start();
      const vm = newVm(host, 'vm-orphan');
      const other = newVm(host, 'vm-other');
      await running(host, [vm, other]);
      const holdout = await startVm(host, 'holdout', 'hold');
      await waitSubscribed(host, ['holdout', 'vm-orphan', 'vm-other']);
      const admin = await LuoClient.connect(host.socket);
      const outcome = admin.update({ timeoutMs: 60_000 });
      await waitUntil(() => vm.current.events('saved').length === 1, 'vm-orphan READY');
      const [qemu] = vm.qemuPids();
      vm.current.child.kill('SIGKILL');
      await vm.current.exit;
      // luod sees a participant go: the update is aborted, the others resume.
      const result = await outcome;
      admin.close();
      holdout.close();
      assert.equal(result.outcome, 'aborted', JSON.stringify(result));
      await waitUntil(() => other.current.events('resumed').length === 1, 'vm-other resumed', 10_000);
      assert.deepEqual(vm.qemuPids(), [qemu], 'the stopped QEMU outlived its luo-qemu');
      const stoppedAt = vm.lines(vm.runs[0]).length;
      vm.start();
      await waitUntil(
        () => vm.current.events('adopted').length === 1,
        'the new luo-qemu adopted QEMU',
        20_000,
      );
      // Still the first QEMU, still writing OUT1: its counter goes on.
      await waitUntil(() => vm.lines(vm.runs[0]).length > stoppedAt + 10, 'the guest runs on', 10_000);
      const lines = vm.lines(vm.runs[0]);
      for (let i = 1; i < lines.length; i++) assert.equal(lines[i]!.n, lines[i - 1]!.n + 1);
      await waitSubscribed(host, ['vm-orphan', 'vm-other']);
      // And it can still be carried across the next update.
      const next = await update(host, 30_000);
      assert.equal(next.outcome, 'rebooted', JSON.stringify(next));
    });
  });

  test('luoctl demo --qemu --json: QEMU VMs continue across the update; the last line says verified', () => {
    const stdout = execFileSync(
      process.execPath,
      [path.join(ROOT, 'dist/cli/luoctl.js'), 'demo', '--qemu', '--vms', '2', '--json'],
      {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
        timeout: 240_000,
      },
    );
    const last = JSON.parse(stdout.trim().split('\n').pop()!) as {
      verified: boolean;
      qemu: boolean;
      record: string;
      html: string;
      blackout_ms: number;
      vmms: { id: string; verified: boolean; blackout_ms: number; guest_pause_ms?: number }[];
    };
    assert.equal(last.verified, true, stdout);
    assert.equal(last.qemu, true);
    assert.equal(last.vmms.length, 2);
    for (const vm of last.vmms) assert.ok(vm.verified && vm.guest_pause_ms !== undefined, JSON.stringify(vm));
    // Each VM's blackout in the JSON is the record's (luo-qemu's stop to cont, RESUMED).
    try {
      const record = JSON.parse(fs.readFileSync(last.record, 'utf8')) as {
        clients: { id: string; blackout?: { paused_at: number; resumed_at: number } }[];
      };
      for (const vm of last.vmms) {
        const lane = record.clients.find((c) => c.id === vm.id)!;
        assert.ok(lane.blackout, `${vm.id}: the record has its blackout`);
        assert.equal(vm.blackout_ms, lane.blackout.resumed_at - lane.blackout.paused_at, vm.id);
      }
      assert.equal(last.blackout_ms, Math.max(...last.vmms.map((v) => v.blackout_ms)));
    } finally {
      fs.rmSync(path.dirname(last.html), { recursive: true, force: true });
    }
  });

  test('a vfio-pci device is refused before QEMU starts, with a sentence', () => {
    const out = (() => {
      try {
        execFileSync(
          process.execPath,
          [LUO_QEMU, '--id', 'vm-x', '--ram', '64M', '--', QEMU, '-device', 'vfio-pci,host=0000:01:00.0'],
          {
            encoding: 'utf8',
            stdio: 'pipe',
            env: { ...process.env, LUOD_SOCKET: '/nonexistent/luod.sock' },
          },
        );
        return { status: 0, stderr: '' };
      } catch (err) {
        return err as { status: number; stderr: string };
      }
    })();
    assert.equal(out.status, 1);
    assert.match(out.stderr, /^luo-qemu: EOPNOTSUPP: .*vfio-pci.*cannot cross a live update/m);
    assert.doesNotMatch(out.stderr, /at .*\.js/, 'no stack trace');
  });

  test('QEMU exiting on its own: luo-qemu exits with its status and unsubscribes', async () => {
    await withHost(new HolderHost([]), async (host) => {
      await host.start();
      const vm = newVm(host, 'vm-exit');
      await running(host, [vm]);
      const [qemu] = vm.qemuPids();
      assert.ok(qemu, 'QEMU runs');
      process.kill(qemu, 'SIGTERM');
      const exit = await vm.current.exit;
      assert.equal(exit.code, 0, vm.current.log()); // QEMU exits 0 on SIGTERM
      await waitUntil(
        async () => ((await status(host)).subscribers as string[]).length === 0,
        'unsubscribed',
      );
      assert.ok(fs.existsSync(path.join(vm.dir, 'OUT1')));
    });
  });
});
