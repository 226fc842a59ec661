/** luo-qemu's reading of the QEMU command line it is given (src/qemu/args.ts). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkQemuArgs, guestArgs } from '../src/qemu/args.js';

test('options luo-qemu sets itself, a memory-backend and vfio-pci are refused, naming the argument', () => {
  assert.throws(() => checkQemuArgs([]), { code: 'EINVAL', message: /no QEMU command/ });
  assert.throws(() => checkQemuArgs(['qemu', '-m', '1G']), { code: 'EINVAL', message: /-m is not allowed/ });
  assert.throws(() => checkQemuArgs(['qemu', '--incoming', 'defer']), { code: 'EINVAL' });
  assert.throws(() => checkQemuArgs(['qemu', '-machine', 'q35,memory-backend=ram']), {
    code: 'EINVAL',
    message: /memory-backend/,
  });
  assert.throws(() => checkQemuArgs(['qemu', '-device', 'vfio-pci,host=0000:01:00.0']), {
    code: 'EOPNOTSUPP',
    message: /vfio-pci.*cannot cross a live update/,
  });
  checkQemuArgs(['qemu-system-x86_64', '-nodefaults', '-serial', 'file:OUT1']);
});

test('guest arguments leave out host-side endpoints, in both spellings, and keep the rest in order', () => {
  const before = [
    'qemu',
    '-nodefaults',
    '-serial',
    'file:OUT1',
    '-drive',
    'file=g.img,if=floppy',
    '-D',
    'a.log',
  ];
  const after = ['qemu', '-nodefaults', '-serial=file:OUT2', '-drive', 'file=g.img,if=floppy', '-D', 'b.log'];
  assert.deepEqual(guestArgs(before), ['qemu', '-nodefaults', '-drive', 'file=g.img,if=floppy']);
  assert.deepEqual(guestArgs(before), guestArgs(after));
  // A different guest (another disk, another device) still differs.
  assert.notDeepEqual(
    guestArgs(before),
    guestArgs(['qemu', '-nodefaults', '-drive', 'file=h.img,if=floppy']),
  );
  assert.notDeepEqual(guestArgs(before), guestArgs([...before, '-device', 'e1000']));
});
