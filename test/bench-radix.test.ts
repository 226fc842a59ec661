/**
 * The radix benchmark compares like with like only if its three decoders (src/abi's
 * walker, the handover reader's map, and the C walker) find exactly what the builder
 * wrote: checked here on a scaled-down image, with the C walker built as the bench
 * builds it.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import {
  buildRadixImage,
  buildRadixWalker,
  decodeToMap,
  decodeWithAbi,
  decodeWithC,
  tallyOfMap,
} from '../bench/radix.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-bench-radix-test-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('a scaled-down radix image: src/abi, the map and the C walker all find what the builder wrote', () => {
  const image = buildRadixImage(path.join(dir, 'memory.img'), 32);
  // Every kind of run the full mix has: 4 KiB runs, 2 MiB and 1 GiB blocks, orders 1..8.
  assert.deepEqual(
    image.expected.orders.map(([order]) => order),
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 18],
  );
  assert.equal(image.preservedBytes, image.preservedPages * 4096);
  assert.deepEqual(decodeWithAbi(image), image.expected);
  assert.deepEqual(tallyOfMap(decodeToMap(image)), image.expected);
  const fromC = decodeWithC(buildRadixWalker(dir), image);
  assert.deepEqual(fromC.tally, image.expected);
  assert.ok(fromC.time.cpu >= 0 && fromC.time.wall > 0);
});

test('the checksum tells runs apart: a tree missing one block decodes to a different tally', () => {
  const image = buildRadixImage(path.join(dir, 'damaged.img'), 32);
  // Clear the lowest set bit of the first non-empty leaf page (leaves come first).
  const fd = fs.openSync(image.path, 'r+');
  try {
    const page = Buffer.alloc(4096);
    let pa = 16 * 1024 * 1024;
    for (; ; pa += 4096) {
      fs.readSync(fd, page, 0, 4096, pa);
      if (page.some((b) => b !== 0)) break;
    }
    const at = page.findIndex((b) => b !== 0);
    page[at]! &= page[at]! - 1;
    fs.writeSync(fd, page, 0, 4096, pa);
  } finally {
    fs.closeSync(fd);
  }
  const got = decodeWithAbi(image);
  assert.notDeepEqual(got, image.expected);
  assert.deepEqual(decodeWithC(buildRadixWalker(dir), image).tally, got);
});
