import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { AbiError } from '../src/abi/errors.js';
import { decodeFdt, encodeFdt, fdtNode, fdtString, fdtStringList } from '../src/abi/fdt.js';
import {
  decodeKexecMetadata,
  decodeKhoRoot,
  decodeMemblockFdt,
  encodeKexecMetadata,
  encodeKhoRoot,
  encodeMemblockFdt,
  KHO_KEXEC_METADATA_SIZE,
  khoRootCompatibles,
  khoSubtree,
  khoSubtrees,
  khoU64,
  scanForKhoRoots,
} from '../src/abi/kho.js';
import {
  encodeRadixTree,
  KHO_TREE_MAX_DEPTH,
  type PreservedRange,
  preservePagesRanges,
  radixKey,
  rangeOfRadixKey,
} from '../src/abi/kho-radix.js';
import { decodeRadixTree } from '../src/abi/kho-radix-walk.js';
import {
  decodeKhoVmalloc,
  encodeKhoVmalloc,
  KHO_VMALLOC_CHUNK_ENTRIES,
  readKhoVmalloc,
  writeKhoVmalloc,
} from '../src/abi/kho-vmalloc.js';
import { PAGE_SIZE, PagedMemory, PhysicalMemoryWriter } from '../src/abi/memory.js';
import { PageAllocator } from '../src/abi/page-allocator.js';
import { PreservedMemoryMap, summarizePreserved } from '../src/abi/preserved-map.js';
import {
  bootOutcome,
  KERNEL_ABIS,
  KNOWN_COMPATIBLES,
  kernelAbi,
  knownCompatible,
} from '../src/abi/versions.js';

const le64 = (value: bigint): Uint8Array => khoU64(value);

function pageWith(entries: [number, ArrayLike<number>][]): Uint8Array {
  const page = new Uint8Array(PAGE_SIZE);
  for (const [offset, bytes] of entries) page.set(bytes, offset);
  return page;
}

function writerAt(base: bigint, memory = new PagedMemory()): PhysicalMemoryWriter {
  return new PhysicalMemoryWriter(memory, new PageAllocator({ base }));
}

test('radix geometry: six levels, key = order bit | shifted address', () => {
  assert.equal(KHO_TREE_MAX_DEPTH, 6);
  assert.equal(radixKey(0x100_0000n, 0), (1n << 52n) | 0x1000n);
  assert.equal(radixKey(0x4000_0000n, 9), (1n << 43n) | 0x200n);
  assert.deepEqual(rangeOfRadixKey((1n << 43n) | 0x200n), { pa: 0x4000_0000n, order: 9 });
  assert.deepEqual(rangeOfRadixKey(1n), { pa: 0n, order: 52 });
  assert.throws(() => rangeOfRadixKey(0n), AbiError);
  assert.throws(() => rangeOfRadixKey(1n << 55n), AbiError);
  assert.throws(() => radixKey(0x1000n, 1), AbiError, 'an order-1 block must be 8 KiB aligned');
});

/**
 * One order-0 page at 0x1000000: key 0x10000000001000, so level 5 uses entry
 * (key >> 51) & 511 = 2, levels 4..1 entry 0, and the leaf bit 0x1000 & 0x7fff = 4096
 * (byte 512, bit 0). Nodes at 0x10000 (root) .. 0x15000 (leaf).
 */
const handTree = (): PagedMemory => {
  const memory = new PagedMemory();
  memory.write(0x10000n, pageWith([[2 * 8, le64(0x11000n)]])); // level 5, entry 2
  memory.write(0x11000n, pageWith([[0, le64(0x12000n)]])); // level 4, entry 0
  memory.write(0x12000n, pageWith([[0, le64(0x13000n)]])); // level 3
  memory.write(0x13000n, pageWith([[0, le64(0x14000n)]])); // level 2
  memory.write(0x14000n, pageWith([[0, le64(0x15000n)]])); // level 1 -> bitmap
  memory.write(0x15000n, pageWith([[512, [0x01]]])); // bitmap bit 4096
  return memory;
};

test('decodeRadixTree reads a tree laid out by hand', () => {
  const { ranges, nodePages } = decodeRadixTree(handTree(), 0x10000n);
  assert.deepEqual(ranges, [{ pa: 0x100_0000n, order: 0 }]);
  assert.deepEqual(nodePages, [0x10000n, 0x11000n, 0x12000n, 0x13000n, 0x14000n, 0x15000n]);
});

test('encodeRadixTree produces the hand-laid tree byte for byte', () => {
  const writer = writerAt(0x10000n);
  assert.equal(encodeRadixTree(writer, [{ pa: 0x100_0000n, order: 0 }]), 0x10000n);
  const expected = handTree();
  for (const pa of expected.pageAddresses()) {
    assert.deepEqual(writer.read(pa, PAGE_SIZE), expected.read(pa, PAGE_SIZE), `page ${pa.toString(16)}`);
  }
});

const preservedRanges = fc
  .array(
    fc
      .tuple(fc.integer({ min: 0, max: 20 }), fc.bigInt({ min: 0n, max: (1n << 40n) - 1n }))
      .map(
        ([order, slot]): PreservedRange => ({ order, pa: (slot << BigInt(12 + order)) & ((1n << 52n) - 1n) }),
      ),
    { maxLength: 200 },
  )
  .map((ranges) => [...new Map(ranges.map((r) => [`${r.pa}/${r.order}`, r])).values()]);

const byKey = (a: PreservedRange, b: PreservedRange): number => {
  const ka = radixKey(a.pa, a.order);
  const kb = radixKey(b.pa, b.order);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
};

test('radix trees round-trip random sets of preserved blocks, walked in key order (property)', () => {
  fc.assert(
    fc.property(preservedRanges, (ranges) => {
      const writer = writerAt(0x1000n);
      const root = encodeRadixTree(writer, ranges);
      assert.deepEqual(decodeRadixTree(writer, root).ranges, [...ranges].sort(byKey));
    }),
    { numRuns: 150 },
  );
});

test('decodeRadixTree refuses cycles, shared nodes, bad pointers and impossible keys', () => {
  const cases: [string, (m: PagedMemory) => void, RegExp][] = [
    ['cycle', (m) => m.write(0x14000n, pageWith([[0, le64(0x10000n)]])), /second time/],
    [
      'shared node',
      (m) =>
        m.write(
          0x10000n,
          pageWith([
            [2 * 8, le64(0x11000n)],
            [3 * 8, le64(0x11000n)],
          ]),
        ),
      /second time/,
    ],
    ['misaligned', (m) => m.write(0x12000n, pageWith([[0, le64(0x13008n)]])), /not page aligned/],
    ['outside memory', (m) => m.write(0x13000n, pageWith([[0, le64(0x9000_0000n)]])), /not readable/],
    [
      'key above bit 52',
      (m) => m.write(0x10000n, pageWith([[5 * 8, le64(0x11000n)]])),
      /encodes no page order/,
    ],
  ];
  for (const [name, mutate, reason] of cases) {
    const memory = handTree();
    mutate(memory);
    assert.throws(
      () => decodeRadixTree(memory, 0x10000n),
      (e: unknown) => e instanceof AbiError && reason.test(e.message),
      name,
    );
  }
  assert.throws(() => decodeRadixTree(handTree(), 0n), AbiError);
  assert.throws(
    () => decodeRadixTree(handTree(), 0x10000n, { maxRanges: 0 }),
    /more than 0 preserved blocks/,
  );
});

test('kho_preserve_pages splits a run into the largest aligned blocks', () => {
  assert.deepEqual(preservePagesRanges(0x3000n, 5), [
    { pa: 0x3000n, order: 0 },
    { pa: 0x4000n, order: 2 },
  ]);
  assert.deepEqual(preservePagesRanges(0x4000_0000n, 512), [{ pa: 0x4000_0000n, order: 9 }]);
  assert.deepEqual(preservePagesRanges(0n, 3), [
    { pa: 0n, order: 1 },
    { pa: 0x2000n, order: 0 },
  ]);
  assert.throws(() => preservePagesRanges(0x10n, 1), AbiError);
});

test('preserved memory map: heads, overlaps and per-order totals', () => {
  const map = new PreservedMemoryMap([
    { pa: 0x200000n, order: 9 },
    { pa: 0x201000n, order: 0 },
    { pa: 0x400000n, order: 0 },
  ]);
  assert.equal(map.orderAt(0x200000n), 9);
  assert.equal(map.orderAt(0x201000n), 0);
  assert.equal(map.orderAt(0x202000n), undefined);
  assert.deepEqual(map.overlaps(), [
    [
      { pa: 0x200000n, order: 9 },
      { pa: 0x201000n, order: 0 },
    ],
  ]);
  assert.deepEqual(summarizePreserved(map.ranges), {
    blocks: 3,
    bytes: 0x200000n + 0x2000n,
    byOrder: [
      { order: 0, blocks: 2, bytes: 0x2000n },
      { order: 9, blocks: 1, bytes: 0x200000n },
    ],
  });
});

test('kho_vmalloc descriptor: {u64 first; u32 total_pages; u16 flags; u16 order}', () => {
  const bytes = [
    ...[0x00, 0x30, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00], // first chunk = 0x1003000
    ...[0x03, 0x00, 0x00, 0x00], //                           total_pages = 3
    ...[0x01, 0x00], //                                       flags = KHO_VMALLOC_ALLOC
    ...[0x00, 0x00], //                                       order = 0
  ];
  const descriptor = { first: 0x100_3000n, totalPages: 3, flags: 1, order: 0 };
  assert.deepEqual([...encodeKhoVmalloc(descriptor)], bytes);
  assert.deepEqual(decodeKhoVmalloc(Uint8Array.from(bytes)), descriptor);
});

test('kho_vmalloc round-trips, with a new (empty) chunk after every full one', () => {
  for (const [pages, order, chunks] of [
    [1, 0, 1],
    [510, 0, 1],
    [511, 0, 2],
    [512, 0, 2],
    [4, 1, 1],
  ] as const) {
    const writer = writerAt(0x100_0000n);
    const data = Uint8Array.from({ length: pages * PAGE_SIZE - 7 }, (_, i) => (i * 7) & 0xff);
    const { descriptor, preserved } = writeKhoVmalloc(writer, data, { order });
    const blocks = Math.ceil(pages / (1 << order));
    assert.equal(descriptor.totalPages, blocks << order);
    assert.equal(preserved.length, chunks + blocks);
    const read = readKhoVmalloc(writer, descriptor);
    assert.equal(read.chunkPages.length, chunks, `${pages} pages`);
    assert.deepEqual(read.data.subarray(0, data.byteLength), data);
    if (pages === 511) {
      const last = writer.read(read.chunkPages[1]!, PAGE_SIZE);
      assert.ok(
        last.every((b) => b === 0),
        'the chunk after a full one is empty',
      );
      assert.equal(KHO_VMALLOC_CHUNK_ENTRIES, 511);
    }
  }
});

test('readKhoVmalloc refuses inconsistent buffers', () => {
  const setup = () => {
    const writer = writerAt(0x100_0000n);
    const { descriptor } = writeKhoVmalloc(writer, new Uint8Array(3 * PAGE_SIZE));
    return { writer, descriptor };
  };
  const { writer, descriptor } = setup();
  assert.throws(() => readKhoVmalloc(writer, { ...descriptor, totalPages: 2 }), /more blocks than/);
  assert.throws(() => readKhoVmalloc(writer, { ...descriptor, totalPages: 4 }), /total_pages needs 4/);
  assert.throws(() => readKhoVmalloc(writer, { ...descriptor, totalPages: 0 }), AbiError);
  assert.throws(() => readKhoVmalloc(writer, { ...descriptor, order: 40 }), AbiError);
  assert.throws(() => readKhoVmalloc(writer, { ...descriptor, first: 0n }), /no first chunk/);
  assert.throws(
    () => readKhoVmalloc(writer, { ...descriptor, first: descriptor.first + 8n }),
    /not page aligned/,
  );
  writer.write(descriptor.first, le64(descriptor.first)); // next -> itself
  assert.throws(() => readKhoVmalloc(writer, descriptor), /more chunks|loops back/);
  const other = setup();
  other.writer.write(other.descriptor.first + 8n, le64(0x9999_0000n)); // a block that is not there
  assert.throws(() => readKhoVmalloc(other.writer, other.descriptor), /not readable/);
  assert.throws(
    () => readKhoVmalloc(other.writer, { ...other.descriptor, order: 1, totalPages: 6 }),
    /not aligned/,
  );
});

test('kexec-metadata: {u32 version; char previous_release[65]; u32 kexec_count}, packed, 73 bytes', () => {
  const release = [...new TextEncoder().encode('7.2.13-amd64')];
  const bytes = [
    ...[0x01, 0x00, 0x00, 0x00], //                    version = 1
    ...release, //                                     previous_release "7.2.13-amd64"
    ...new Array<number>(65 - release.length).fill(0), // NUL and zero fill to 65 bytes
    ...[0x03, 0x00, 0x00, 0x00], //                    kexec_count = 3 (at offset 69)
  ];
  assert.equal(bytes.length, KHO_KEXEC_METADATA_SIZE);
  const metadata = { version: 1, previousRelease: '7.2.13-amd64', kexecCount: 3 };
  assert.deepEqual([...encodeKexecMetadata(metadata)], bytes);
  assert.deepEqual(decodeKexecMetadata(Uint8Array.from(bytes), 73n), metadata);
  assert.throws(() => decodeKexecMetadata(Uint8Array.from(bytes), 3n), /no version/);
  assert.throws(() => decodeKexecMetadata(Uint8Array.from(bytes), 72n), /shorter than 73/);
  assert.throws(() => decodeKexecMetadata(Uint8Array.of(2, 0, 0, 0, ...bytes.slice(4)), 73n), /version 2/);
  const unterminated = Uint8Array.from(bytes);
  unterminated.fill(0x61, 4, 69);
  assert.equal(decodeKexecMetadata(unterminated, 73n).previousRelease, 'a'.repeat(64));
  assert.throws(() => encodeKexecMetadata({ ...metadata, previousRelease: 'x'.repeat(65) }), AbiError);
});

test('memblock subtree: memblock-v1 with reserve-mem-v1 children, u64s in CPU order', () => {
  const regions = [{ name: 'n1', start: 0xc06b_0400_0000n, size: 0x4_0000_0000n }];
  const blob = encodeMemblockFdt(regions);
  const { root } = decodeFdt(blob);
  assert.deepEqual(root.children[0]!.props.get('start'), le64(0xc06b_0400_0000n));
  assert.deepEqual(decodeMemblockFdt(blob), regions);
  const wrong = encodeFdt(fdtNode('', { compatible: fdtString('memblock-v2') }));
  assert.throws(() => decodeMemblockFdt(wrong), /not compatible with 'memblock-v1'/);
  const badChild = encodeFdt(
    fdtNode('', { compatible: fdtString('memblock-v1') }, [
      fdtNode('n1', { compatible: fdtString('reserve-mem-v1') }),
    ]),
  );
  assert.throws(() => decodeMemblockFdt(badChild), /'n1\/start' is missing/);
});

test('KHO root: compatible, a little-endian memory map, subtrees newest first', () => {
  const fdt = encodeKhoRoot({
    memoryMapPa: 0x100_0000n,
    subtrees: [
      { name: 'kexec-metadata', pa: 0x100_1000n, size: 73n },
      { name: 'LUO', pa: 0x100_2000n, size: 32n },
    ],
  });
  const root = decodeKhoRoot(fdt);
  assert.deepEqual(root.compatible, ['kho-v4']);
  assert.equal(root.memoryMapPa, 0x100_0000n);
  assert.deepEqual([...root.fdt.root.props.get('preserved-memory-map')!], [0, 0, 0, 1, 0, 0, 0, 0]);
  assert.deepEqual(
    root.fdt.root.children.map((c) => c.name),
    ['LUO', 'kexec-metadata'],
  );
  assert.deepEqual(khoSubtree(root.fdt.root, 'LUO'), { name: 'LUO', pa: 0x100_2000n, size: 32n });
  assert.equal(khoSubtree(root.fdt.root, 'memblock'), undefined);
  assert.deepEqual(khoRootCompatibles(fdt), ['kho-v4']);
});

test('KHO root: what kho_populate() refuses', () => {
  const root = (props: Record<string, Uint8Array>, children = [] as ReturnType<typeof fdtNode>[]) =>
    encodeFdt(fdtNode('', props, children));
  const map = { 'preserved-memory-map': khoU64(0x1000n) };
  assert.throws(
    () => decodeKhoRoot(root({ compatible: fdtString('kho-v3'), ...map })),
    /'kho-v3', not 'kho-v4'/,
  );
  assert.throws(() => decodeKhoRoot(root(map)), /compatible is none/);
  assert.throws(
    () => decodeKhoRoot(root({ compatible: fdtString('kho-v4') })),
    /'preserved-memory-map' is missing/,
  );
  assert.throws(
    () => decodeKhoRoot(root({ compatible: fdtString('kho-v4'), 'preserved-memory-map': khoU64(0n) })),
    /preserved-memory-map is 0/,
  );
  assert.throws(
    () => decodeKhoRoot(root({ compatible: fdtString('kho-v4'), 'preserved-memory-map': new Uint8Array(4) })),
    /4 bytes, not 8/,
  );
  // fdt_node_check_compatible() accepts the string anywhere in the list.
  const listed = decodeKhoRoot(root({ compatible: fdtStringList(['vendor,kho', 'kho-v4']), ...map }));
  assert.deepEqual(listed.compatible, ['vendor,kho', 'kho-v4']);
  // A broken subnode only matters to whoever retrieves it.
  const broken = decodeKhoRoot(
    root({ compatible: fdtString('kho-v4'), ...map }, [
      fdtNode('LUO@0', { 'preserved-data': khoU64(0x2000n) }),
    ]),
  );
  assert.throws(() => khoSubtree(broken.fdt.root, 'LUO'), /'blob-size' is missing/);
  assert.equal(khoSubtrees(broken.fdt.root).length, 1);
});

test('scanForKhoRoots finds KHO FDT pages in a dump', () => {
  const memory = new PagedMemory();
  memory.write(0x5000n, encodeKhoRoot({ memoryMapPa: 0x1000n, subtrees: [] }));
  memory.write(0x9000n, encodeFdt(fdtNode('', { compatible: fdtString('memblock-v1') })));
  memory.write(0xa000n, Uint8Array.of(0xd0, 0x0d, 0xfe, 0xed, 0xff)); // magic, then garbage
  memory.zero(0x20_0000n, 300 * PAGE_SIZE);
  memory.write(
    0x20_0000n + 299n * BigInt(PAGE_SIZE),
    encodeKhoRoot({ memoryMapPa: 0x1000n, subtrees: [], compatible: 'kho-v3' }),
  );
  assert.deepEqual(scanForKhoRoots(memory), [
    { pa: 0x5000n, compatible: ['kho-v4'] },
    { pa: 0x20_0000n + 299n * BigInt(PAGE_SIZE), compatible: ['kho-v3'] },
  ]);
});

test('known compatibles name their kernels; kernel releases map to ABIs', () => {
  assert.deepEqual(knownCompatible('kho-v4')?.kernels, ['7.2', '7.3']);
  assert.deepEqual(knownCompatible('luo-v1')?.kernels, ['6.19', '7.0', '7.1']);
  assert.deepEqual(knownCompatible('memfd-v1')?.kernels, ['6.19', '7.0']);
  assert.equal(knownCompatible('vfio-v1'), undefined);
  for (const c of KNOWN_COMPATIBLES) assert.ok(c.kernels.length > 0, c.compatible);
  assert.deepEqual(kernelAbi('7.2.0-1-amd64'), {
    kernel: '7.2',
    kho: 'kho-v4',
    luo: 'luo-v5',
    fileHandlers: ['memfd-v2'],
  });
  assert.deepEqual(kernelAbi('6.19.3'), {
    kernel: '6.19',
    kho: 'kho-v1',
    luo: 'luo-v1',
    fileHandlers: ['memfd-v1'],
  });
  assert.equal(kernelAbi('7.1')?.kho, 'kho-v3');
  assert.equal(kernelAbi('8.0'), undefined);
  assert.equal(KERNEL_ABIS.length, 5);
});

test('bootOutcome: KHO first (cold boot), then LUO (panic), then file handlers (EIO)', () => {
  const v72 = { kho: ['kho-v4'], luo: 'luo-v5', fileHandlers: ['memfd-v2', 'memfd-v2'] };
  assert.equal(bootOutcome(v72, '7.2.13'), 'ok');
  assert.equal(bootOutcome(v72, '7.3'), 'ok');
  assert.equal(bootOutcome(v72, '7.1'), 'kho-mismatch');
  assert.equal(bootOutcome(v72, '6.19'), 'kho-mismatch');
  assert.equal(bootOutcome({ ...v72, luo: 'luo-v1' }, '7.2'), 'luo-mismatch');
  assert.equal(
    bootOutcome({ kho: ['kho-v1'], luo: 'luo-v1', fileHandlers: ['memfd-v2'] }, '7.0'),
    'unknown-handler:memfd-v2',
  );
  assert.equal(bootOutcome({ kho: ['kho-v1'], luo: 'luo-v1', fileHandlers: ['memfd-v1'] }, '6.19'), 'ok');
  assert.equal(bootOutcome({ kho: ['kho-v4'], fileHandlers: [] }, '7.2'), 'ok');
  assert.equal(bootOutcome({ kho: [], fileHandlers: [] }, '7.2'), 'kho-mismatch');
  assert.throws(() => bootOutcome(v72, '9.9'), AbiError);
});
