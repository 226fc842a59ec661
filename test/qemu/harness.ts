/**
 * What the QEMU tests share (test/qemu.test.ts, test/qemu-lifecycle.test.ts): VMs that are
 * killed when the file ends, started and waited on until their guests print, and an update.
 */
import { after } from 'node:test';
import { LuoClient } from '../../src/client/index.js';
import { secondEdges } from '../../src/vm/counter-serial.js';
import type { HolderHost } from '../crash/hosts.js';
import { waitSubscribed } from '../crash/vms.js';
import { waitUntil } from '../support/wait.js';
import { QemuVm } from './vm.js';

const vms: QemuVm[] = [];
after(() => {
  for (const vm of vms.splice(0)) vm.kill();
});

export function newVm(host: HolderHost, id: string, extraQemuArgs: string[] = []): QemuVm {
  const vm = new QemuVm({ id, dir: host.dir, socket: host.socket, extraQemuArgs });
  vms.push(vm);
  return vm;
}

/** Started, subscribed, and its guest printing. */
export async function running(host: HolderHost, list: QemuVm[]): Promise<void> {
  for (const vm of list) vm.start();
  await waitSubscribed(
    host,
    list.map((v) => v.id),
  );
  // Three second boundaries: the guest's clocks are calibrated before the update.
  await waitUntil(
    () => list.every((vm) => secondEdges(vm.lines()) >= 3),
    'every guest prints its counter',
    30_000,
  );
}

export async function update(host: HolderHost, timeoutMs: number): Promise<Record<string, unknown>> {
  const admin = await LuoClient.connect(host.socket);
  try {
    return await admin.update({ timeoutMs });
  } finally {
    admin.close();
  }
}
