/**
 * A fault injected at each call luod awaits or makes into the world below
 * it (the kernel, the device, the fd holder, the record store), one run per
 * call, through a whole live update on the emulated kernel with two VMMs.
 *
 * Run N makes the N-th such call fail (a rejected promise for an async
 * call, a throw for a sync one); the runs go on until one completes without
 * meeting its fault, so every call of the update's path has failed once. In
 * every run:
 *  - nothing goes unhandled (no unhandledRejection, no uncaughtException);
 *  - luod answers a bystander and ends idle (or waiting for claims);
 *  - the update either completes, every VMM claiming and verifying its
 *    memory (but for a session the fault made the next kernel lose), or is
 *    called off with every VMM told ABORTED and nothing left preserved.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import pino from 'pino';
import { LuoClient } from '../src/client/index.js';
import type { FdHolder } from '../src/daemon/fd-holder.js';
import { SessionKeeper } from '../src/daemon/keeper.js';
import { emulatedKernel, type LuodKernel } from '../src/daemon/kernel.js';
import { Luod } from '../src/daemon/luod.js';
import { listen } from '../src/daemon/server.js';
import { statePaths, stopEmulator } from '../src/kernel/emu/index.js';
import { RecordStore } from '../src/record/store.js';
import { Errno, SysError } from '../src/sys/index.js';
import type { Host } from './crash/hosts.js';
import { claimAndCheck, closeAllVms, startVm, type Vm } from './crash/vms.js';
import { bystander } from './hostile/peer.js';
import { MemoryHolder } from './support/memory-holder.js';
import { waitUntil } from './support/wait.js';

after(closeAllVms);

/** Counts calls through the objects it wraps and fails the one numbered `failAt`. */
class Faults {
  calls = 0;
  failAt = 0;
  hit: string | null = null;

  /** `asyncMethods`: the methods that return promises (their fault is a rejection). */
  wrap<T extends object>(
    label: string,
    target: T,
    asyncMethods: readonly string[],
    nested: Record<string, string> = {},
  ): T {
    const faults = this;
    return new Proxy(target, {
      get(obj, prop) {
        const value = Reflect.get(obj, prop, obj) as unknown;
        if (typeof value !== 'function' || typeof prop !== 'string') return value;
        return (...args: unknown[]) => {
          const call = `${label}.${prop}(${args.filter((a) => typeof a === 'string').join(',')})`;
          if (++faults.calls === faults.failAt) {
            faults.hit = call;
            const err = new SysError(prop, Errno.EIO, `injected fault at ${call}`);
            if (asyncMethods.includes(prop)) return Promise.reject(err);
            throw err;
          }
          const result = (value as (...a: unknown[]) => unknown).apply(obj, args);
          const inner = nested[prop];
          return inner && result && typeof result === 'object' ? faults.wrap(inner, result, []) : result;
        };
      },
    });
  }
}

const unhandled: string[] = [];
process.on('unhandledRejection', (reason) => unhandled.push(`unhandledRejection: ${String(reason)}`));

interface RunResult {
  hit: string | null;
  outcome: string;
}

async function run(failAt: number): Promise<RunResult> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-faults-'));
  const stateDir = path.join(dir, 'emu');
  const socket = path.join(dir, 'luod.sock');
  const host = { socket } as Host;
  const faults = new Faults();
  const log = pino({ level: 'silent' });
  const kernel = faults.wrap<LuodKernel>(
    'kernel',
    emulatedKernel(stateDir),
    ['release', 'bootId', 'load', 'kexec'],
    {
      openDevice: 'device',
    },
  );
  const holder = new MemoryHolder();
  const keeper = new SessionKeeper({
    holder: faults.wrap<FdHolder>('holder', holder, ['takeBack', 'hold', 'release']),
    stateFile: `${socket}.state.json`,
    bootId: () => kernel.bootId!(),
    log,
  });
  const records = faults.wrap('records', new RecordStore(path.join(dir, 'records'), 10), []);
  await keeper.start();
  const luod = new Luod({ kernel, log, keeper, records, claimTimeoutMs: 30_000 });
  const server = listen(luod, { socketPath: socket });
  const vms: Vm[] = [];
  try {
    faults.calls = 0;
    faults.failAt = failAt;
    vms.push(await startVm(host, 'vm-a'), await startVm(host, 'vm-b'));
    await waitUntil(() => (luod.status().subscribers as string[]).length === 2, 'both VMMs subscribed');
    const admin = await LuoClient.connect(socket);
    let outcome: string;
    try {
      outcome = String((await admin.update({ timeoutMs: 10_000 })).outcome);
    } catch (err) {
      outcome = `error ${(err as { code?: string }).code}`;
    } finally {
      admin.close();
    }
    const where = `fault ${failAt} at ${faults.hit ?? '(none)'}: outcome ${outcome}`;
    assert.deepEqual(unhandled, [], where);
    await bystander(socket, 5000);
    if (outcome === 'rebooted') {
      // A failed retrieve is final in LUO: the next kernel lost that session, or luod's state.
      const lost = (vm: Vm) =>
        faults.hit?.startsWith(`device.retrieveSession(${vm.id})`) ||
        faults.hit?.startsWith('device.retrieveSession(luod-internal)');
      // Never luod alone: before any claim, the holder has every session that came back.
      await waitUntil(
        () =>
          vms
            .filter((vm) => !lost(vm))
            .every((vm) =>
              [...holder.held.keys()].some((n) => n.includes('.in.') && n.endsWith(`.${vm.id}`)),
            ),
        `${where}: the holder has every incoming session`,
      );
      for (const vm of vms) {
        if (lost(vm)) continue; // recorded as a failure, nothing to claim
        await claimAndCheck(host, vm).catch((err) => assert.fail(`${where}: ${vm.id}: ${err}`));
      }
      await waitUntil(() => luod.phase === 'idle' || luod.phase === 'claiming', `${where}: luod settles`);
    } else {
      assert.match(outcome, /^(aborted|refused|error E[A-Z]+)$/, where);
      await waitUntil(() => luod.phase === 'idle', `${where}: luod is idle again`);
      await waitUntil(
        () => vms.every((vm) => vm.aborted.length > 0 || vm.preserved === 0),
        `${where}: every VMM resumed`,
      );
      for (const vm of vms) vm.close();
      const { emulatorStatus } = await import('../src/kernel/emu/index.js');
      await waitUntil(
        async () => ((await emulatorStatus(statePaths(stateDir))).outgoing as unknown[]).length === 0,
        `${where}: nothing left preserved`,
      );
    }
    return { hit: faults.hit, outcome };
  } finally {
    for (const vm of vms) vm.close();
    luod.close();
    server.close();
    holder.dropAll();
    await stopEmulator(statePaths(stateDir)).catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('a fault at each call luod makes during an update: nothing unhandled, no VM left paused, nothing lost', async () => {
  const seen: string[] = [];
  for (let failAt = 1; failAt < 200; failAt++) {
    const result = await run(failAt);
    if (result.hit === null) break; // every call of the path has failed once
    seen.push(`${result.hit} -> ${result.outcome}`);
  }
  assert.ok(seen.length >= 10, `only ${seen.length} fault points: ${seen.join('\n')}`);
  assert.ok(
    seen.some((s) => s.startsWith('kernel.kexec')),
    seen.join('\n'),
  );
  assert.ok(
    seen.some((s) => s.startsWith('holder.hold')),
    seen.join('\n'),
  );
  assert.ok(
    seen.some((s) => s.startsWith('device.createSession')),
    seen.join('\n'),
  );
  console.log(`# fault points: ${seen.length}\n# ${seen.join('\n# ')}`);
});
