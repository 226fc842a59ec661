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
import { encodeRadixTree, type PreservedRange, radixKey } from '../src/abi/kho-radix.js';
import { runPa, walkRadixTreeRuns } from '../src/abi/kho-radix-walk.js';
import { PAGE_SIZE, PagedMemory, PhysicalMemoryWriter } from '../src/abi/memory.js';
import { PageAllocator } from '../src/abi/page-allocator.js';
import { PreservedMemoryMap } from '../src/abi/preserved-map.js';

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

/**
 * overlaps() by its definition: every run as [start, end) in bytes, sorted by start
 * (larger orders first at one start); a run that starts before the widest run so far
 * ends overlaps it, and the pair reported is the widest run's block that holds the
 * start, and the run's first block.
 */
function overlapsByDefinition(ranges: PreservedRange[]): [PreservedRange, PreservedRange][] {
  const runs: { start: bigint; end: bigint; order: number }[] = [];
  const map = new PreservedMemoryMap(ranges);
  map.forEachRun((run) => {
    const size = PAGE << BigInt(run.order);
    runs.push({ start: run.pa, end: run.pa + BigInt(run.blocks) * size, order: run.order });
    return true;
  });
  runs.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : b.order - a.order));
  const found: [PreservedRange, PreservedRange][] = [];
  let widest: (typeof runs)[number] | undefined;
  for (const run of runs) {
    if (widest && run.start < widest.end) {
      const size = PAGE << BigInt(widest.order);
      found.push([
        { pa: widest.start + ((run.start - widest.start) / size) * size, order: widest.order },
        { pa: run.start, order: run.order },
      ]);
    }
    if (!widest || run.end > widest.end) widest = run;
  }
  return found;
}

test("overlaps(): a larger block that starts where a smaller order's later run starts is taken first", () => {
  const at = (page: number, order: number): PreservedRange => ({ pa: BigInt(page) * PAGE, order });
  // Order-0 runs at pages 0-1 and 8; an order-3 block over pages 8-15.
  const ranges = [at(0, 0), at(1, 0), at(8, 0), at(8, 3)];
  assert.deepEqual(overlapsByDefinition(ranges), [[at(8, 3), at(8, 0)]]);
  assert.deepEqual(new PreservedMemoryMap(ranges).overlaps(), [[at(8, 3), at(8, 0)]]);
  // An order-1 block inside an order-9 one, after an order-1 run before it.
  const nested = [at(0, 1), at(512, 9), at(600, 1)];
  assert.deepEqual(new PreservedMemoryMap(nested).overlaps(), overlapsByDefinition(nested));
  assert.equal(new PreservedMemoryMap(nested).overlaps().length, 1);
});

test('overlaps(): exactly the pairs of its definition, for blocks of mixed orders that share memory (property)', () => {
  let withOverlaps = 0;
  fc.assert(
    fc.property(
      fc.array(
        fc.tuple(
          fc.constantFrom(0, 0, 1, 2, 3, 9),
          fc.integer({ min: 0, max: 256 }),
          fc.integer({ min: 1, max: 8 }),
        ),
        { maxLength: 20 },
      ),
      (specs) => {
        // Block indices in pages, aligned down to each order: many land inside others.
        const ranges = unique(
          specs.flatMap(([order, page, length]) =>
            Array.from({ length }, (_, i) => ({
              pa: (BigInt(page >> order) + BigInt(i)) * (PAGE << BigInt(order)),
              order,
            })),
          ),
        );
        const expected = overlapsByDefinition(ranges);
        if (expected.length > 0) withOverlaps++;
        assert.deepEqual(new PreservedMemoryMap(ranges).overlaps(), expected);
        // The same from a walk of the tree those blocks make.
        const { memory, root } = build(ranges);
        const collector = PreservedMemoryMap.collect();
        walkRadixTreeRuns(memory, root, collector.visit);
        assert.deepEqual(collector.finish().overlaps(), expected);
      },
    ),
    { numRuns: 150 },
  );
  assert.ok(withOverlaps > 30, `only ${withOverlaps} of 150 cases had overlaps`);
});

test('a map of 200,000 runs (several storage chunks) keeps every run, merges across chunk edges, and answers lookups', () => {
  // Order-0 runs of 1..3 pages with one-page gaps, then a run that extends the last one.
  const collector = PreservedMemoryMap.collect();
  const expected: [number, number][] = [];
  let page = 1000;
  for (let i = 0; i < 200_000; i++) {
    const blocks = 1 + (i % 3);
    collector.visit(0, page, blocks);
    expected.push([page, blocks]);
    page += blocks + 1;
  }
  // Adjacent to the previous run: merged into it, as a walk's runs across leaves are.
  collector.visit(0, page - 1, 5);
  expected[expected.length - 1]![1] += 5;
  collector.visit(9, 1 << 20, 2);
  const map = collector.finish();
  const got: [number, number][] = [];
  map.forEachRun((run) => {
    if (run.order === 0) got.push([Number(run.pa / PAGE), run.blocks]);
    return true;
  });
  assert.deepEqual(got, expected);
  assert.deepEqual(map.orderSummaries(), [
    { order: 0, blocks: expected.reduce((n, [, b]) => n + b, 0), runs: 200_000 },
    { order: 9, blocks: 2, runs: 1 },
  ]);
  for (const i of [0, 65_535, 65_536, 131_071, 131_072, 199_999]) {
    const [first, blocks] = expected[i]!;
    assert.equal(map.orderAt(BigInt(first) * PAGE), 0, `run ${i} head`);
    assert.equal(map.orderAt(BigInt(first + blocks - 1) * PAGE), 0, `run ${i} last block`);
    assert.equal(map.orderAt(BigInt(first + blocks) * PAGE), undefined, `after run ${i}`);
  }
  assert.equal(map.orderAt(BigInt(1 << 20) * (PAGE << 9n)), 9);
  assert.deepEqual(map.overlaps(), []);
});

test('a walk started from inside a visitor leaves the outer walk intact', () => {
  // Many runs per leaf in both trees, so the outer walk is mid-leaf when the inner one runs.
  const alternating = (base: number, count: number) =>
    Array.from({ length: count }, (_, i) => ({ pa: BigInt(base + 2 * i) * PAGE, order: 0 }));
  const outer = build(alternating(0, 500));
  const inner = build(alternating(70_001, 300));
  const alone = walkRuns(outer.memory, outer.root);
  const innerAlone = walkRuns(inner.memory, inner.root);
  const seen: { order: number; first: number; blocks: number }[] = [];
  const innerRuns: { order: number; first: number; blocks: number }[][] = [];
  walkRadixTreeRuns(outer.memory, outer.root, (order, first, blocks) => {
    seen.push({ order, first, blocks });
    if (seen.length % 100 === 1) innerRuns.push(walkRuns(inner.memory, inner.root));
  });
  assert.equal(alone.length, 500);
  assert.deepEqual(seen, alone);
  assert.equal(innerRuns.length, 5);
  for (const runs of innerRuns) assert.deepEqual(runs, innerAlone);
});
