/**
 * The run-based radix walker behind `luoctl inspect` and the handover reader
 * (src/abi/kho-radix.ts walkRadixTreeRuns, PreservedMemoryMap.collect): it scans bitmap
 * leaves a 32-bit word at a time and merges runs across words and leaves, so it is
 * checked here against the blocks the tree was built from, on dense sets that put run
 * boundaries at every interesting bit.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { AbiError } from '../src/abi/errors.js';
import { khoU64 } from '../src/abi/kho.js';
import {
  encodeRadixTree,
  PreservedMemoryMap,
  type PreservedRange,
  radixKey,
  runPa,
  walkRadixTreeRuns,
} from '../src/abi/kho-radix.js';
import { PAGE_SIZE, PagedMemory, PhysicalMemoryWriter } from '../src/abi/memory.js';
import { PageAllocator } from '../src/abi/page-allocator.js';

const PAGE = BigInt(PAGE_SIZE);

function build(ranges: PreservedRange[]): { memory: PagedMemory; root: bigint } {
  const memory = new PagedMemory();
  const writer = new PhysicalMemoryWriter(memory, new PageAllocator({ base: 1n << 40n }));
  return { memory, root: encodeRadixTree(writer, ranges) };
}

function walkRuns(memory: PagedMemory, root: bigint): { order: number; first: number; blocks: number }[] {
  const runs: { order: number; first: number; blocks: number }[] = [];
  walkRadixTreeRuns(memory, root, (order, first, blocks) => runs.push({ order, first, blocks }));
  return runs;
}

function expand(runs: { order: number; first: number; blocks: number }[]): PreservedRange[] {
  return runs.flatMap(({ order, first, blocks }) =>
    Array.from({ length: blocks }, (_, i) => ({ pa: runPa(order, first + i), order })),
  );
}

function byKey(a: PreservedRange, b: PreservedRange): number {
  const ka = radixKey(a.pa, a.order);
  const kb = radixKey(b.pa, b.order);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

function unique(ranges: PreservedRange[]): PreservedRange[] {
  return [...new Map(ranges.map((r) => [`${r.pa}/${r.order}`, r])).values()];
}

/** Runs of consecutive blocks: [order, first block index, length]. */
const runSpecs = fc.array(
  fc.tuple(
    fc.constantFrom(0, 0, 0, 1, 9, 18),
    fc.integer({ min: 0, max: 3 * 32768 }),
    fc.integer({ min: 1, max: 100 }),
  ),
  { maxLength: 12 },
);

test('runs expand to exactly the blocks the tree was built from, in key order (property)', () => {
  fc.assert(
    fc.property(runSpecs, (specs) => {
      const ranges = unique(
        specs.flatMap(([order, first, length]) =>
          Array.from({ length }, (_, i) => ({ pa: BigInt(first + i) * (PAGE << BigInt(order)), order })),
        ),
      );
      const { memory, root } = build(ranges);
      const runs = walkRuns(memory, root);
      assert.deepEqual(expand(runs), [...ranges].sort(byKey));
      for (let i = 1; i < runs.length; i++) {
        const [a, b] = [runs[i - 1]!, runs[i]!];
        assert.ok(!(a.order === b.order && a.first + a.blocks === b.first), 'runs are maximal');
      }
    }),
    { numRuns: 60 },
  );
});

test('run boundaries at every bit of a word, across words and across leaves', () => {
  // Every start 0..40 and length 1..70 around word 0, plus runs straddling a leaf edge.
  for (const start of [0, 1, 30, 31, 32, 33, 63, 64]) {
    for (const length of [1, 2, 31, 32, 33, 64, 65]) {
      const ranges = Array.from({ length }, (_, i) => ({ pa: BigInt(start + i) * PAGE, order: 0 }));
      const { memory, root } = build(ranges);
      assert.deepEqual(
        walkRuns(memory, root),
        [{ order: 0, first: start, blocks: length }],
        `${start}+${length}`,
      );
    }
  }
  const edge = 32768 * 3 - 5;
  const ranges = Array.from({ length: 32768 + 10 }, (_, i) => ({ pa: BigInt(edge + i) * PAGE, order: 0 }));
  const { memory, root } = build(ranges);
  assert.deepEqual(walkRuns(memory, root), [{ order: 0, first: edge, blocks: 32768 + 10 }]);
});

test('any pattern of pages around word edges decodes to its own runs (property)', () => {
  fc.assert(
    fc.property(fc.array(fc.boolean(), { minLength: 1, maxLength: 200 }), fc.nat(2), (bits, leaf) => {
      const base = leaf * 32768 - (leaf > 0 ? 100 : 0);
      const ranges = bits.flatMap((set, i) => (set ? [{ pa: BigInt(base + i) * PAGE, order: 0 }] : []));
      if (ranges.length === 0) return;
      const { memory, root } = build(ranges);
      const expected: { order: number; first: number; blocks: number }[] = [];
      bits.forEach((set, i) => {
        if (!set) return;
        const last = expected.at(-1);
        if (last && last.first + last.blocks === base + i) last.blocks++;
        else expected.push({ order: 0, first: base + i, blocks: 1 });
      });
      assert.deepEqual(walkRuns(memory, root), expected);
    }),
    { numRuns: 300 },
  );
});

test('alternating bits give one run per block; a full word in the middle joins its neighbours', () => {
  const alternating = Array.from({ length: 64 }, (_, i) => ({ pa: BigInt(2 * i) * PAGE, order: 0 }));
  const { memory, root } = build(alternating);
  assert.equal(walkRuns(memory, root).length, 64);
  const joined = [
    ...Array.from({ length: 3 }, (_, i) => ({ pa: BigInt(29 + i) * PAGE, order: 0 })),
    ...Array.from({ length: 32 }, (_, i) => ({ pa: BigInt(32 + i) * PAGE, order: 0 })),
    ...Array.from({ length: 2 }, (_, i) => ({ pa: BigInt(64 + i) * PAGE, order: 0 })),
  ];
  const tree = build(joined);
  assert.deepEqual(walkRuns(tree.memory, tree.root), [{ order: 0, first: 29, blocks: 37 }]);
});

test('the first leaf (huge orders) and keys above bit 52 take the careful path', () => {
  const huge = [
    { pa: 0n, order: 52 },
    { pa: 0n, order: 40 },
    { pa: 1n << 52n, order: 40 },
  ];
  const { memory, root } = build(huge);
  assert.deepEqual(expand(walkRuns(memory, root)), [...huge].sort(byKey));
  // A level-5 entry beyond index 3 holds keys with no order bit at or below 52.
  const bad = build([{ pa: 0x1000n, order: 0 }]);
  const rootPage = bad.memory.read(bad.root, PAGE_SIZE);
  const child = new DataView(rootPage.buffer).getBigUint64(2 * 8, true);
  bad.memory.write(bad.root + 5n * 8n, khoU64(child));
  bad.memory.write(bad.root + 2n * 8n, khoU64(0n));
  assert.throws(
    () => walkRuns(bad.memory, bad.root),
    (e: unknown) => e instanceof AbiError && /encodes no page order/.test(e.message),
  );
});

test('leaves read together still fail on the exact page: missing, or reached twice', () => {
  // Three full leaves under one level-1 table, at consecutive addresses (encodeRadixTree
  // allocates a table, then its leaves).
  const ranges = Array.from({ length: 3 * 32768 }, (_, i) => ({ pa: BigInt(32768 + i) * PAGE, order: 0 }));
  const tree = () => {
    const built = build(ranges);
    const nodes = walkRadixTreeRuns(built.memory, built.root, () => {});
    return { ...built, table: nodes[4]!, leaves: nodes.slice(5) };
  };
  const { memory, root, leaves } = tree();
  assert.deepEqual(walkRuns(memory, root), [{ order: 0, first: 32768, blocks: 3 * 32768 }]);
  assert.equal(leaves.length, 3);
  assert.deepEqual(leaves, [leaves[0]!, leaves[0]! + PAGE, leaves[0]! + 2n * PAGE]);

  const missing = tree();
  missing.memory.dropPage(missing.leaves[1]!);
  assert.throws(
    () => walkRuns(missing.memory, missing.root),
    (e: unknown) => e instanceof AbiError && e.structure === 'kho-radix-leaf' && e.pa === missing.leaves[1],
  );

  const twice = tree();
  // Entry 2 of the level-1 table points back at the first leaf.
  const entries = twice.memory.read(twice.table, PAGE_SIZE);
  const view = new DataView(entries.buffer);
  const firstIndex = [...Array(512).keys()].find((i) => view.getBigUint64(i * 8, true) === twice.leaves[0])!;
  twice.memory.write(twice.table + BigInt((firstIndex + 2) * 8), khoU64(twice.leaves[0]!));
  assert.throws(
    () => walkRuns(twice.memory, twice.root),
    (e: unknown) => e instanceof AbiError && /second time/.test(e.message) && e.pa === twice.leaves[0],
  );
});

test('PreservedMemoryMap from a walk answers like one built from blocks', () => {
  fc.assert(
    fc.property(runSpecs, (specs) => {
      const ranges = unique(
        specs.flatMap(([order, first, length]) =>
          Array.from({ length }, (_, i) => ({ pa: BigInt(first + i) * (PAGE << BigInt(order)), order })),
        ),
      );
      const { memory, root } = build(ranges);
      const collector = PreservedMemoryMap.collect();
      walkRadixTreeRuns(memory, root, collector.visit);
      const walked = collector.finish();
      const given = new PreservedMemoryMap(ranges);
      assert.equal(walked.blockCount, ranges.length);
      assert.deepEqual([...walked.ranges].sort(byKey), [...ranges].sort(byKey));
      assert.deepEqual(walked.orderSummaries(), given.orderSummaries());
      const probes = [...ranges.slice(0, 50).map((r) => r.pa), 0n, PAGE, 7n * PAGE, 1n << 30n];
      for (const pa of probes) {
        const orders = ranges.filter((r) => r.pa === pa).map((r) => r.order);
        assert.equal(walked.orderAt(pa), orders.length > 0 ? Math.min(...orders) : undefined, `pa ${pa}`);
      }
      assert.equal(walked.overlaps().length > 0, given.overlaps().length > 0);
    }),
    { numRuns: 40 },
  );
});
