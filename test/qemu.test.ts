/**
 * Real QEMU VMs (the counter guest, native/counter-guest/counter.S) cross live
 * updates through luod on the emulated kernel, under luo-qemu, with QEMU
 * unmodified (issue 14):
 *  - three VMs, one `luoctl update`: the same luo-qemu command run again
 *    continues each guest where it stopped (its counter goes on one by one,
 *    its RAM sum is unchanged, it does not boot again), and each guest's own
 *    clocks say how long it was paused;
 *  - an update aborted at the barrier: every VM is resumed by the same QEMU;
 *  - a VM whose QEMU refuses to migrate (a migration blocker): FAILED with
 *    QEMU's reason, the update is aborted, every VM runs on;
 *  - luod killed during the update: every VM resumes and subscribes again.
 * luo-qemu's life outside a plain update is test/qemu-lifecycle.test.ts.
 * QEMU (qemu-system-x86) must be installed: .ci/run installs it.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { LuoClient } from '../src/client/index.js';
import {
  continuityProblem,
  type GuestLine,
  guestPause,
  guestPauseMs,
  parseSerial,
  secondEdges,
} from '../src/vm/counter-serial.js';
import { HolderHost } from './crash/hosts.js';
import { closeAllVms, startVm, status, waitSubscribed, withHost } from './crash/vms.js';
import { newVm, running, update } from './qemu/harness.js';
import { QEMU } from './qemu/vm.js';
import { waitUntil } from './support/wait.js';

after(closeAllVms);

test('QEMU is installed (the tests below need the real thing)', () => {
  const version = execFileSync(QEMU, ['--version'], { encoding: 'utf8' });
  assert.match(version, /QEMU emulator version/);
});

test("the guest's pause by its own clocks is bounded by whole-second boundaries, not by the line printed just after it", () => {
  // A TSC of 1000 ticks a second, a line every 100 ms of running time, the CMOS clock at
  // 100 s plus the wall time; the guest stops at 2.55 s of wall time for 3.3 s.
  const lines: GuestLine[] = [];
  for (let r = 50; r <= 6000; r += 100) {
    const wall = r < 2550 ? r : r + 3300;
    lines.push({ n: lines.length + 1, tsc: BigInt(r), rtc: 100 + Math.floor(wall / 1000), sum: 'aa' });
  }
  const join = lines.findIndex((l) => l.tsc >= 2550n);
  // The join line's second (105) changed during the pause: bounding the pause with it
  // would have lost the 0.9 s between that change and the resume.
  assert.equal(lines[join]!.rtc, 105);
  const pause = guestPause(lines, join);
  assert.ok(pause !== null);
  assert.equal(pause.uncertaintyMs, 100);
  assert.ok(
    Math.abs(pause.pauseMs - 3300) <= pause.uncertaintyMs,
    `pause ${pause.pauseMs} ms, 3300 expected`,
  );
  assert.equal(guestPauseMs(lines, join), pause.pauseMs);
  // No boundary after the join but the join line's own: not measured, rather than guessed.
  assert.equal(guestPause(lines.slice(0, join + 2), join), null);
});

/** A VM's blackout (pause to resume, RESUMED) in luod's record of `update`, in ms. */
function recordedBlackout(host: HolderHost, update: string, id: string): number | undefined {
  const file = path.join(host.stateDir, 'updates', `${update}.json`); // luod --emulate's records
  const lane = JSON.parse(fs.readFileSync(file, 'utf8')).clients.find((c: { id: string }) => c.id === id);
  return lane?.blackout ? lane.blackout.resumed_at - lane.blackout.paused_at : undefined;
}

describe('QEMU VMs through luod on the emulated kernel', { concurrency: false }, () => {
  test('three VMs cross one update; the same command continues each guest where it stopped', async () => {
    await withHost(new HolderHost([]), async (host) => {
      await host.start();
      const list = ['vm-1', 'vm-2', 'vm-3'].map((id) => newVm(host, id));
      await running(host, list);
      const outcome = await update(host, 30_000);
      assert.equal(outcome.outcome, 'rebooted', JSON.stringify(outcome));
      for (const vm of list) {
        const exit = await vm.current.exit;
        assert.equal(exit.code, 0, `${vm.id}: luo-qemu exits 0 at the kexec\n${vm.current.log()}`);
        assert.equal(vm.qemuPids().length, 0, `${vm.id}: QEMU does not run over the reboot`);
      }
      const before = list.map((vm) => vm.current);
      for (const vm of list) vm.start();
      await waitUntil(() => list.every((vm) => secondEdges(vm.lines()) >= 2), 'every guest goes on', 30_000);
      for (const [i, vm] of list.entries()) {
        const problem = continuityProblem(vm.serialText(before[i]!), vm.serialText(vm.current));
        assert.equal(problem, null, `${vm.id}: ${problem}\n${vm.current.log()}`);
        const continued = vm.current.events('continued')[0];
        assert.ok(continued, `${vm.id} logged its continuation:\n${vm.current.log()}`);
        assert.ok(Number(continued.state_bytes) > 0);
        // Only the serial file changed (OUT1 -> OUT2): the same guest, no warning.
        assert.doesNotMatch(vm.current.log(), /arguments differ/, vm.current.log());
        const join = parseSerial(vm.serialText(before[i]!)).length; // the line the stop cut joins the two
        const pause = guestPauseMs(parseSerial(vm.serialText(before[i]!) + vm.serialText(vm.current)), join);
        const all = parseSerial(vm.serialText(before[i]!) + vm.serialText(vm.current));
        assert.ok(
          pause !== null && pause > 0,
          `${vm.id}: the guest measured its pause (${pause}; ${all.length} lines, join ${join}, ${secondEdges(all)} edges: ${all.map((l) => `${l.n}@${l.rtc}`).join(' ')})`,
        );
        console.log(
          `# ${vm.id}: guest-visible pause ${pause!.toFixed(0)} ms, luo-qemu's stop-to-cont ${continued.blackout_ms} ms`,
        );
        // luo-qemu told luod (RESUMED): the record holds the same stop-to-cont.
        await waitUntil(
          () => vm.current.events('resumed-reported').length === 1,
          `${vm.id} reported`,
          10_000,
        );
        assert.equal(vm.current.events('resumed-reported')[0]!.recorded, true);
        assert.equal(recordedBlackout(host, String(outcome.update), vm.id), continued.blackout_ms);
      }
      await waitUntil(async () => (await status(host)).phase === 'idle', 'every VM claimed');
      // The continued VMs are subscribed again, for the next update.
      await waitSubscribed(
        host,
        list.map((v) => v.id),
      );
    });
  });

  test('an update aborted at the barrier: the same QEMU processes resume their guests', async () => {
    await withHost(new HolderHost([]), async (host) => {
      await host.start();
      const list = ['vm-a', 'vm-b'].map((id) => newVm(host, id));
      await running(host, list);
      const holdout = await startVm(host, 'holdout', 'hold'); // never READY
      await waitSubscribed(host, ['holdout', 'vm-a', 'vm-b']);
      const outcome = await update(host, 2000);
      assert.equal(outcome.outcome, 'aborted', JSON.stringify(outcome));
      holdout.close();
      for (const vm of list) {
        await waitUntil(() => vm.current.events('resumed').length === 1, `${vm.id} resumed`, 10_000);
        // Its pause, stop to cont, is in the aborted update's record too.
        await waitUntil(
          () => vm.current.events('resumed-reported').length === 1,
          `${vm.id} reported`,
          10_000,
        );
        assert.equal(
          recordedBlackout(host, String(outcome.update), vm.id),
          vm.current.events('resumed')[0]!.paused_ms,
        );
        const seen = vm.lines().length;
        await waitUntil(() => vm.lines().length > seen + 10, `${vm.id}'s guest runs on`, 10_000);
        assert.equal(continuityProblem(vm.serialText(vm.current), ''), 'nothing after the update');
        const lines = vm.lines();
        for (let i = 1; i < lines.length; i++) assert.equal(lines[i]!.n, lines[i - 1]!.n + 1);
        assert.equal(vm.current.child.exitCode, null, 'luo-qemu still runs');
      }
    });
  });

  test('a VM whose QEMU refuses to migrate fails the update with its reason; every VM runs on', async () => {
    await withHost(new HolderHost([]), async (host) => {
      await host.start();
      const good = newVm(host, 'vm-good');
      // ivshmem in peer mode registers a migration blocker.
      const blocked = newVm(host, 'vm-blocked', [
        '-object',
        'memory-backend-ram,id=peer,size=1M,share=on',
        '-device',
        'ivshmem-plain,memdev=peer',
      ]);
      await running(host, [good, blocked]);
      const outcome = await update(host, 30_000);
      assert.equal(outcome.outcome, 'aborted', JSON.stringify(outcome));
      assert.match(String(outcome.reason), /vm-blocked/);
      const failure = (outcome.failed as { id: string; reason: string }[]).find((f) => f.id === 'vm-blocked');
      assert.match(
        failure?.reason ?? '',
        /QEMU refused to save its state: .*(igrat|blocker)/i,
        JSON.stringify(outcome),
      );
      for (const vm of [good, blocked]) {
        const seen = vm.lines().length;
        await waitUntil(() => vm.lines().length > seen + 10, `${vm.id}'s guest runs on`, 10_000);
      }
    });
  });

  test('luod killed during the update: every VM resumes at once, and subscribes again to the next luod', async () => {
    await withHost(new HolderHost([]), async (host) => {
      await host.start();
      const list = ['vm-k1', 'vm-k2'].map((id) => newVm(host, id));
      await running(host, list);
      const holdout = await startVm(host, 'holdout', 'hold'); // the barrier waits for it
      await waitSubscribed(host, ['holdout', 'vm-k1', 'vm-k2']);
      const admin = await LuoClient.connect(host.socket);
      admin.update({ timeoutMs: 60_000 }).catch(() => {});
      await waitUntil(() => list.every((vm) => vm.current.events('saved').length === 1), 'both VMs READY');
      await host.kill();
      admin.close();
      for (const vm of list) {
        await waitUntil(() => vm.current.events('resumed').length === 1, `${vm.id} resumed`, 10_000);
        const seen = vm.lines().length;
        await waitUntil(() => vm.lines().length > seen + 10, `${vm.id}'s guest runs on`, 10_000);
      }
      holdout.close();
      await host.start();
      await waitSubscribed(host, ['vm-k1', 'vm-k2']);
      const lines = list[0]!.lines();
      for (let i = 1; i < lines.length; i++) assert.equal(lines[i]!.n, lines[i - 1]!.n + 1);
    });
  });
});
