import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import fc from 'fast-check';
import { AbiError } from '../src/abi/errors.js';
import { decodeFdt } from '../src/abi/fdt.js';
import {
  checkHandover,
  decodeHandover,
  type FileModel,
  type HandoverModel,
  handoverBootOutcome,
  handoverCompatibles,
  type KernelReaction,
  readHandover,
  writeHandover,
} from '../src/abi/handover.js';
import { encodeKhoRoot, KHO_KEXEC_METADATA_SIZE, khoU64, scanForKhoRoots } from '../src/abi/kho.js';
import { encodeBlockHeader } from '../src/abi/kho-block.js';
import { encodeRadixTree, type PreservedRange, physicalRangeOf, rangeBytes } from '../src/abi/kho-radix.js';
import { decodeLuoSer, LUO_SER_SIZE } from '../src/abi/luo.js';
import { type MemfdState, writeMemfdContents } from '../src/abi/memfd.js';
import { PAGE_SIZE, PagedMemory, PhysicalMemoryWriter } from '../src/abi/memory.js';
import { FileSegmentMemory, SparseFileMemory } from '../src/abi/memory-files.js';
import { PageAllocator } from '../src/abi/page-allocator.js';
import { elfCore } from './fixtures/abi/elf-core.js';

const dir = mkdtempSync(join(tmpdir(), 'luokit-abi-handover-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const TEST_HANDLER = 'test-handler-v1';
const HANDLERS = { fileHandlers: ['memfd-v2', TEST_HANDLER] };

interface FileSpec {
  token: bigint;
  memfd?: { content: Uint8Array; extra: number; order: number; pos: bigint; seals: number };
  data?: bigint;
}

/** Turns specs into a model, writing memfd contents first as the emulator does at kexec. */
function buildModel(
  writer: PhysicalMemoryWriter,
  sessions: { name: string; files: FileSpec[] }[],
  extra: Partial<HandoverModel> = {},
): HandoverModel {
  return {
    liveupdateNum: 1n,
    previousRelease: '7.2.13-luokit',
    kexecCount: 1,
    ...extra,
    sessions: sessions.map((session) => ({
      name: session.name,
      files: session.files.map((file): FileModel => {
        if (!file.memfd) return { token: file.token, compatible: TEST_HANDLER, data: file.data ?? 0n };
        const { content, extra: more, order, pos, seals } = file.memfd;
        const size = BigInt(content.byteLength + more);
        const memfd: MemfdState = {
          pos,
          size,
          seals,
          folios: writeMemfdContents(writer, content, { size, order }),
        };
        return { token: file.token, compatible: 'memfd-v2', memfd };
      }),
    })),
  };
}

/** What readHandover returns for a written model: defaults filled in. */
function normalized(model: HandoverModel): HandoverModel {
  return {
    ...model,
    sessions: model.sessions.map((session) => ({
      name: session.name,
      files: session.files.map((file) =>
        file.memfd
          ? {
              token: file.token,
              compatible: file.compatible,
              memfd: { ...file.memfd, flags: file.memfd.flags ?? 0 },
            }
          : { token: file.token, compatible: file.compatible, data: file.data ?? 0n },
      ),
    })),
    flbs: model.flbs ?? [],
    reserveMem: model.reserveMem ?? [],
  };
}

function smallHandover(files: FileSpec[] = [memfdSpec(1n)], extra: Partial<HandoverModel> = {}) {
  const memory = new PagedMemory();
  const writer = new PhysicalMemoryWriter(memory);
  const model = buildModel(
    writer,
    [
      { name: 'vm-1', files },
      { name: 'empty', files: [] },
    ],
    extra,
  );
  const written = writeHandover(writer, model);
  return { memory, writer, model, ...written };
}

function memfdSpec(token: bigint, seals = 0): FileSpec {
  return {
    token,
    memfd: { content: new TextEncoder().encode('guest RAM'), extra: PAGE_SIZE, order: 0, pos: 3n, seals },
  };
}

/** fast-check records have no prototype; the decoder's objects do. */
function plain<T extends object>(arbitrary: fc.Arbitrary<T>): fc.Arbitrary<T> {
  return arbitrary.map((value) => ({ ...value }));
}

const sessionName = fc.stringMatching(/^[a-zA-Z0-9._-]{1,63}$/);
const fileSpec = (token: bigint): fc.Arbitrary<FileSpec> =>
  fc.oneof(
    fc.record({ token: fc.constant(token), data: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }) }),
    fc.record({
      token: fc.constant(token),
      memfd: fc.record({
        content: fc.uint8Array({ maxLength: 2 * PAGE_SIZE + 100 }),
        extra: fc.integer({ min: 0, max: PAGE_SIZE }),
        order: fc.integer({ min: 0, max: 1 }),
        pos: fc.bigInt({ min: 0n, max: 1n << 32n }),
        seals: fc.integer({ min: 0, max: 0x3f }),
      }),
    }),
  );
const fileSpecs = (max: number) =>
  fc
    .uniqueArray(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), { maxLength: max })
    .chain((tokens) => fc.tuple(...tokens.map(fileSpec)).map((files): FileSpec[] => [...files]));
const sessionSpecs = fc
  .tuple(
    fc.uniqueArray(sessionName, { maxLength: 60 }),
    fc.integer({ min: 0, max: 140 }), // files of one big session: up to three file blocks
  )
  .chain(([names, bigCount]) =>
    fc.tuple(
      ...names.map((name, i) =>
        (i === 0
          ? fc.constant(
              Array.from(
                { length: bigCount },
                (_, t): FileSpec => ({ token: BigInt(t), data: BigInt(t) * 3n }),
              ),
            )
          : fileSpecs(3)
        ).map((files) => ({ name, files })),
      ),
    ),
  );
const extras = fc.record({
  liveupdateNum: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
  previousRelease: fc.stringMatching(/^[0-9a-z.+-]{0,64}$/),
  kexecCount: fc.nat({ max: 0xffff_ffff }),
  flbs: fc.array(
    plain(
      fc.record({
        name: fc.stringMatching(/^[a-z0-9-]{1,47}$/),
        data: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
        count: fc.bigInt({ min: 1n, max: 1000n }),
      }),
    ),
    { maxLength: 63 },
  ),
  reserveMem: fc.uniqueArray(
    plain(
      fc.record({
        name: fc.stringMatching(/^[a-z][a-z0-9_]{0,15}$/),
        start: fc.integer({ min: 0x100, max: 0x1000 }).map((mib) => BigInt(mib) << 20n),
        size: fc.integer({ min: 1, max: 256 }).map((pages) => BigInt(pages) * 4096n),
      }),
    ),
    // Regions of at most 1 MiB at distinct MiB boundaries never overlap.
    { maxLength: 3, comparator: (a, b) => a.name === b.name || a.start === b.start },
  ),
});

test('whole handovers round-trip: sessions and files over several blocks, memfds, FLBs (property)', () => {
  fc.assert(
    fc.property(sessionSpecs, extras, (sessions, extra) => {
      const memory = new PagedMemory();
      const writer = new PhysicalMemoryWriter(memory);
      const model = buildModel(writer, sessions, extra);
      const written = writeHandover(writer, model);
      assert.deepEqual(readHandover(written.fdt, memory, HANDLERS), normalized(model));
      const decoding = decodeHandover(written.fdt, memory, HANDLERS);
      assert.deepEqual(decoding.problems, [], 'a written handover has nothing to report');
      assert.deepEqual(sortRanges(decoding.layout.preserved), sortRanges(dedupe(written.preserved)));
      assert.ok(
        decoding.layout.preserved.some((r) => r.pa === written.fdtPa),
        'the FDT page is preserved',
      );
    }),
    { numRuns: 25 },
  );
});

test('writeHandover lays the kernel structures out where their pointers say', () => {
  const { memory, fdt, fdtPa, memoryMapPa, model } = smallHandover();
  const root = decodeFdt(fdt).root;
  assert.deepEqual(
    root.children.map((c) => c.name),
    ['LUO', 'kexec-metadata'],
    'newest subtree first, as libfdt inserts them',
  );
  assert.deepEqual(root.props.get('preserved-memory-map'), khoU64(memoryMapPa));
  assert.deepEqual(memory.read(fdtPa, fdt.byteLength), fdt, 'the FDT page holds the same blob');
  const luo = root.children[0]!;
  assert.deepEqual(luo.props.get('blob-size'), khoU64(BigInt(LUO_SER_SIZE)));
  const luoSerPa = new DataView(luo.props.get('preserved-data')!.buffer).getBigUint64(0, true);
  const ser = decodeLuoSer(memory.read(luoSerPa, LUO_SER_SIZE));
  assert.equal(ser.compatible, 'luo-v5');
  assert.equal(ser.liveupdateNum, model.liveupdateNum);
  assert.deepEqual(root.children[1]!.props.get('blob-size'), khoU64(BigInt(KHO_KEXEC_METADATA_SIZE)));
  assert.deepEqual(
    [...memory.read(ser.sessionsPa, 16)],
    [...encodeBlockHeader({ next: 0n, count: 2n })],
    'two sessions fit one block',
  );
});

test('writeHandover refuses what the kernel never writes', () => {
  const writer = new PhysicalMemoryWriter(new PagedMemory());
  const base = { liveupdateNum: 0n, previousRelease: '', kexecCount: 0 };
  const twice = { name: 'a', files: [] };
  assert.throws(() => writeHandover(writer, { ...base, sessions: [twice, twice] }), /duplicate session 'a'/);
  const file = { token: 1n, compatible: TEST_HANDLER };
  assert.throws(
    () => writeHandover(writer, { ...base, sessions: [{ name: 'a', files: [file, file] }] }),
    /duplicate token: file 1 of session 'a'/,
  );
  assert.throws(
    () =>
      writeHandover(writer, {
        ...base,
        sessions: [{ name: 'a', files: [{ token: 1n, compatible: 'memfd-v2' }] }],
      }),
    /no memfd state for file 1/,
  );
  assert.throws(
    () =>
      writeHandover(writer, {
        ...base,
        sessions: [],
        reserveMem: [{ name: 'r', start: 0x4000_0000n, size: 100n }],
      }),
    /whole number of pages/,
  );
});

/** Rewrites the handover's root FDT with a new memory map built from `keep`. */
function withMemoryMap(
  s: ReturnType<typeof smallHandover>,
  keep: (r: PreservedRange) => boolean,
): Uint8Array {
  const memoryMapPa = encodeRadixTree(s.writer, s.preserved.filter(keep));
  const luo = decodeFdt(s.fdt).root.children;
  const subtrees = luo.reverse().map((node) => ({
    name: node.name,
    pa: new DataView(node.props.get('preserved-data')!.buffer).getBigUint64(0, true),
    size: new DataView(node.props.get('blob-size')!.buffer).getBigUint64(0, true),
  }));
  return encodeKhoRoot({ memoryMapPa, subtrees });
}

function reactions(fdt: Uint8Array, memory: PagedMemory): KernelReaction[] {
  return checkHandover(fdt, memory).map((p) => p.reaction);
}

test('a foreign KHO version, a bad FDT or a bad memory map means a cold boot', () => {
  const memory = new PagedMemory();
  const writer = new PhysicalMemoryWriter(memory);
  const { fdt } = writeHandover(writer, buildModel(writer, [{ name: 's', files: [memfdSpec(1n)] }]), {
    khoCompatible: 'kho-v3',
  });
  const decoding = decodeHandover(fdt, memory);
  assert.deepEqual(
    decoding.problems.map((p) => p.reaction),
    ['cold-boot'],
  );
  assert.equal(decoding.model, undefined);
  assert.deepEqual(decoding.layout.khoCompatible, ['kho-v3']);
  assert.throws(
    () => readHandover(fdt, memory),
    (e: unknown) => e instanceof AbiError && /'kho-v3'/.test(e.message),
  );

  assert.deepEqual(reactions(new Uint8Array(100), memory), ['cold-boot']);
  const s = smallHandover();
  const lost = encodeKhoRoot({ memoryMapPa: 0x7700_0000n, subtrees: [] });
  assert.deepEqual(reactions(lost, s.memory), ['cold-boot']);
});

test('a foreign LUO version, or a broken LUO blob or session chain, panics', () => {
  const memory = new PagedMemory();
  const writer = new PhysicalMemoryWriter(memory);
  const { fdt } = writeHandover(writer, buildModel(writer, []), { luoCompatible: 'luo-v1' });
  assert.deepEqual(reactions(fdt, memory), ['panic']);
  assert.throws(() => readHandover(fdt, memory), /'luo-v1' is not 'luo-v5'/);

  const s = smallHandover();
  const ser = luoSer(s);
  s.memory.write(ser.sessionsPa, encodeBlockHeader({ next: ser.sessionsPa, count: 2n }));
  assert.deepEqual(reactions(s.fdt, s.memory), ['panic']);

  const short = smallHandover();
  const tiny = encodeKhoRoot({
    memoryMapPa: short.memoryMapPa,
    subtrees: [{ name: 'LUO', pa: luoSerPaOf(short.fdt), size: 16n }],
  });
  assert.deepEqual(reactions(tiny, short.memory), ['panic']);
});

test('a bad file chain, an unknown handler or a duplicate session name fails every open with EIO', () => {
  const s = smallHandover([memfdSpec(1n), { token: 2n, data: 5n }]);
  const problems = checkHandover(s.fdt, s.memory);
  assert.deepEqual(
    problems.map((p) => [p.reaction, p.session, p.token]),
    [['device-eio', 'vm-1', 2n]],
  );
  assert.match(problems[0]!.error.message, /no handler for compatible 'test-handler-v1'/);
  assert.deepEqual(checkHandover(s.fdt, s.memory, HANDLERS), []);

  const chain = smallHandover();
  const sessionEntry = chain.memory.read(luoSer(chain).sessionsPa + 16n, 80);
  const filesPa = new DataView(sessionEntry.buffer).getBigUint64(64, true);
  chain.memory.write(filesPa, encodeBlockHeader({ next: 0n, count: 64n }));
  assert.deepEqual(
    checkHandover(chain.fdt, chain.memory).map((p) => [p.reaction, p.session]),
    [['device-eio', 'vm-1']],
  );

  const names = smallHandover();
  const second = luoSer(names).sessionsPa + 16n + 80n;
  names.memory.write(second, new TextEncoder().encode('vm-1\0'));
  assert.deepEqual(reactions(names.fdt, names.memory), ['device-eio']);

  const count = smallHandover();
  count.memory.write(luoSer(count).sessionsPa + 16n + 72n, khoU64(2n));
  assert.deepEqual(reactions(count.fdt, count.memory), ['device-eio']);
});

test('a bad memfd record fails only the retrieval of that file', () => {
  const s = smallHandover([memfdSpec(1n), memfdSpec(2n, 0x40)]);
  const problems = checkHandover(s.fdt, s.memory);
  assert.deepEqual(
    problems.map((p) => [p.reaction, p.session, p.token]),
    [['retrieve-fails', 'vm-1', 2n]],
  );
  const decoding = decodeHandover(s.fdt, s.memory);
  assert.ok(decoding.model?.sessions[0]?.files[0]?.memfd, 'the good file still decodes');
  assert.throws(() => readHandover(s.fdt, s.memory), /EOPNOTSUPP/);
});

test('warnings: ignored kexec-metadata, unpreserved metadata pages; the handover still reads', () => {
  const s = smallHandover();
  const metadataPa = s.preserved[1]!.pa;
  s.memory.write(metadataPa, Uint8Array.of(2)); // version 2
  const decoding = decodeHandover(s.fdt, s.memory);
  assert.deepEqual(
    decoding.problems.map((p) => p.reaction),
    ['warning'],
  );
  assert.equal(readHandover(s.fdt, s.memory).previousRelease, '');

  const unpreserved = smallHandover();
  const luoSerPa = luoSerPaOf(unpreserved.fdt);
  const fdt = withMemoryMap(unpreserved, (r) => r.pa !== luoSerPa);
  const problems = checkHandover(fdt, unpreserved.memory);
  assert.deepEqual(
    problems.map((p) => [p.reaction, p.error.structure]),
    [['warning', 'luo_ser']],
  );
  assert.match(problems[0]!.error.message, /is not preserved/);
  assert.deepEqual(readHandover(fdt, unpreserved.memory), readHandover(unpreserved.fdt, unpreserved.memory));
});

test('a handover without a LUO subtree restores no sessions', () => {
  const s = smallHandover();
  const fdt = encodeKhoRoot({ memoryMapPa: s.memoryMapPa, subtrees: [] });
  assert.deepEqual(readHandover(fdt, s.memory), {
    liveupdateNum: 0n,
    previousRelease: '',
    kexecCount: 0,
    sessions: [],
    flbs: [],
    reserveMem: [],
  });
});

test('boot outcomes follow the compatibles the handover carries', () => {
  const s = smallHandover();
  assert.equal(handoverBootOutcome(s.fdt, s.memory, '7.2.13').outcome, 'ok');
  assert.equal(handoverBootOutcome(s.fdt, s.memory, '7.3.4').outcome, 'ok');
  assert.equal(handoverBootOutcome(s.fdt, s.memory, '7.1').outcome, 'kho-mismatch');
  assert.deepEqual(handoverCompatibles(s.fdt, s.memory), {
    kho: ['kho-v4'],
    luo: 'luo-v5',
    fileHandlers: ['memfd-v2'],
  });

  const as = (khoCompatible: string, luoCompatible: string) => {
    const memory = new PagedMemory();
    const writer = new PhysicalMemoryWriter(memory);
    const model = buildModel(writer, [{ name: 'a', files: [memfdSpec(1n)] }]);
    const { fdt } = writeHandover(writer, model, { khoCompatible, luoCompatible });
    return { fdt, memory };
  };
  const old = as('kho-v1', 'luo-v1');
  assert.equal(handoverBootOutcome(old.fdt, old.memory, '7.0').outcome, 'unknown-handler:memfd-v2');
  const mixed = as('kho-v4', 'luo-v1');
  assert.equal(handoverBootOutcome(mixed.fdt, mixed.memory, '7.2').outcome, 'luo-mismatch');
  assert.deepEqual(handoverCompatibles(mixed.fdt, mixed.memory), {
    kho: ['kho-v4'],
    luo: 'luo-v1',
    fileHandlers: ['memfd-v2'],
  });
  assert.equal(handoverBootOutcome(new Uint8Array(8), s.memory, '7.2').outcome, 'kho-mismatch');
});

test('the emulator path: memory.img and kho.dtb on disk, read back by a fresh boot', () => {
  const imagePath = join(dir, 'memory.img');
  const image = SparseFileMemory.open(imagePath, { writable: true });
  const writer = new PhysicalMemoryWriter(image);
  const model = buildModel(writer, [{ name: 'db', files: [memfdSpec(9n)] }], { reserveMem: [] });
  const { fdt, preserved } = writeHandover(writer, model);
  image.close();
  writeFileSync(join(dir, 'kho.dtb'), fdt);

  const incoming = SparseFileMemory.open(imagePath);
  const decoding = decodeHandover(fdt, incoming);
  assert.deepEqual(decoding.model, normalized(model));
  // The next boot's allocator starts from what was preserved and never reuses it.
  const allocator = new PageAllocator({ busy: decoding.layout.preserved.map(physicalRangeOf) });
  for (let i = 0; i < 40; i++) {
    const pa = allocator.alloc(1);
    assert.ok(
      !preserved.some((r) => pa >= r.pa && pa < r.pa + rangeBytes(r)),
      `page ${pa.toString(16)} was preserved`,
    );
  }
  incoming.close();
});

test('luoctl inspect path: a QEMU ELF dump of the same memory, the FDT found by scanning', () => {
  const s = smallHandover();
  const segments = s.memory.ranges().map((range) => ({
    type: 1,
    paddr: range.start,
    data: s.memory.read(range.start, Number(range.end - range.start)),
  }));
  const path = join(dir, 'guest.core');
  writeFileSync(path, elfCore(segments));
  const dump = FileSegmentMemory.openElfCore(path);
  const [found] = scanForKhoRoots(dump);
  assert.equal(found?.pa, s.fdtPa);
  const fdt = dump.read(found!.pa, PAGE_SIZE);
  assert.deepEqual(readHandover(fdt, dump), normalized(s.model));
  dump.close();
});

function luoSerPaOf(fdt: Uint8Array): bigint {
  const luo = decodeFdt(fdt).root.children.find((c) => c.name === 'LUO')!;
  return new DataView(luo.props.get('preserved-data')!.buffer).getBigUint64(0, true);
}

function luoSer(s: { fdt: Uint8Array; memory: PagedMemory }) {
  return decodeLuoSer(s.memory.read(luoSerPaOf(s.fdt), LUO_SER_SIZE));
}

function dedupe(ranges: PreservedRange[]): PreservedRange[] {
  return [...new Map(ranges.map((r) => [`${r.pa}/${r.order}`, r])).values()];
}

function sortRanges(ranges: PreservedRange[]): PreservedRange[] {
  return [...ranges].sort((a, b) => (a.pa < b.pa ? -1 : a.pa > b.pa ? 1 : a.order - b.order));
}
