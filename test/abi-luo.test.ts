import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { AbiError } from '../src/abi/errors.js';
import {
  decodeBlockHeader,
  encodeBlockHeader,
  entriesPerBlock,
  KHO_MAX_BLOCKS,
  readBlockChain,
  writeBlockChain,
} from '../src/abi/kho-block.js';
import {
  decodeLuoFileSer,
  decodeLuoSer,
  decodeLuoSessionSer,
  encodeLuoFileSer,
  encodeLuoFlbPage,
  encodeLuoSer,
  encodeLuoSessionSer,
  LUO_FILE_SER_SIZE,
  LUO_FLB_MAX,
  LUO_SER_SIZE,
  LUO_SESSION_SER_SIZE,
  readLuoFlbs,
} from '../src/abi/luo.js';
import { PAGE_SIZE, PagedMemory, PhysicalMemoryWriter } from '../src/abi/memory.js';

const zeros = (n: number): number[] => new Array<number>(n).fill(0);
const ascii = (text: string): number[] => [...new TextEncoder().encode(text)];
const u64le = (value: bigint): number[] =>
  Array.from({ length: 8 }, (_, i) => Number((value >> BigInt(8 * i)) & 0xffn));

test('LUO struct sizes and per-block counts follow luo.h and kho_block.c', () => {
  assert.equal(LUO_SER_SIZE, 32);
  assert.equal(LUO_SESSION_SER_SIZE, 80);
  assert.equal(LUO_FILE_SER_SIZE, 64);
  assert.equal(entriesPerBlock(LUO_SESSION_SER_SIZE), 51);
  assert.equal(entriesPerBlock(LUO_FILE_SER_SIZE), 63);
  assert.equal(LUO_FLB_MAX, 63);
  assert.equal(KHO_MAX_BLOCKS, 10_000);
});

test('luo_ser: {char compatible[8]; u64 liveupdate_num; u64 sessions_pa; u64 flbs_pa}', () => {
  const bytes = [
    ...[0x6c, 0x75, 0x6f, 0x2d, 0x76, 0x35, 0x00, 0x00], // "luo-v5", NUL, pad to ALIGN(7, 8)
    ...[0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00], // liveupdate_num = 2
    ...[0x00, 0x50, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00], // sessions_pa = 0x1005000
    ...[0x00, 0x40, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00], // flbs_pa = 0x1004000
  ];
  const ser = { compatible: 'luo-v5', liveupdateNum: 2n, sessionsPa: 0x100_5000n, flbsPa: 0x100_4000n };
  assert.deepEqual([...encodeLuoSer(ser)], bytes);
  assert.deepEqual(decodeLuoSer(Uint8Array.from(bytes)), ser);
  // All eight bytes used: strncmp(…, 8) still compares them.
  assert.equal(
    decodeLuoSer(Uint8Array.from([...ascii('luo-v123'), ...bytes.slice(8)])).compatible,
    'luo-v123',
  );
  assert.throws(() => decodeLuoSer(new Uint8Array(31)), AbiError);
});

test('luo_session_ser: {char name[64]; u64 files; u64 count}', () => {
  const bytes = [
    ...ascii('vm-1'), //                                     name "vm-1"
    ...zeros(60), //                                         NUL and zero fill to 64
    ...[0x00, 0x60, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00], // files = 0x1006000
    ...[0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00], // count = 3
  ];
  const ser = { name: 'vm-1', filesPa: 0x100_6000n, fileCount: 3n };
  assert.deepEqual([...encodeLuoSessionSer(ser)], bytes);
  assert.deepEqual(decodeLuoSessionSer(Uint8Array.from(bytes)), { ...ser, nameTerminated: true });
  const full = Uint8Array.from([...ascii('n'.repeat(64)), ...bytes.slice(64)]);
  assert.deepEqual(decodeLuoSessionSer(full), { ...ser, name: 'n'.repeat(63), nameTerminated: false });
  assert.throws(() => encodeLuoSessionSer({ ...ser, name: 'n'.repeat(64) }), AbiError);
  assert.throws(() => encodeLuoSessionSer({ ...ser, name: '' }), AbiError);
});

test('luo_file_ser: {char compatible[48]; u64 data; u64 token}', () => {
  const bytes = [
    ...ascii('memfd-v2'), //                                 compatible "memfd-v2"
    ...zeros(40), //                                         NUL and zero fill to 48
    ...[0x00, 0x70, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00], // data = 0x1007000 (the memfd_luo_ser)
    ...[0x42, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80], // token = 0x8000000000000042
  ];
  const ser = { compatible: 'memfd-v2', data: 0x100_7000n, token: 0x8000_0000_0000_0042n };
  assert.deepEqual([...encodeLuoFileSer(ser)], bytes);
  assert.deepEqual(decodeLuoFileSer(Uint8Array.from(bytes)), { ...ser, compatibleTerminated: true });
  assert.throws(() => encodeLuoFileSer({ ...ser, compatible: 'x'.repeat(48) }), AbiError);
});

test('kho_block_header_ser: {u64 next; u64 count}', () => {
  const bytes = [
    ...[0x00, 0x80, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00], // next = 0x1008000
    ...[0x33, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00], // count = 51
  ];
  assert.deepEqual([...encodeBlockHeader({ next: 0x100_8000n, count: 51n })], bytes);
  assert.deepEqual(decodeBlockHeader(Uint8Array.from(bytes)), { next: 0x100_8000n, count: 51n });
});

test('FLB page: {u64 pgcnt; u64 count} then {char name[48]; u64 data; u64 count} entries', () => {
  const expected = [
    ...u64le(1n), //                                   pgcnt = 1
    ...u64le(1n), //                                   count = 1
    ...ascii('liveupdate-test-flb-v0'), //             name
    ...zeros(48 - 22), //                              NUL and zero fill to 48
    ...[0xe0, 0xbe, 0xfe, 0xca, 0x0d, 0xf0, 0xed, 0xfe], // data = 0xfeedf00dcafebee0 (the test FLB's magic)
    ...u64le(2n), //                                   count = 2 files depend on it
  ];
  const flbs = [{ name: 'liveupdate-test-flb-v0', data: 0xfeed_f00d_cafe_bee0n, count: 2n }];
  const page = encodeLuoFlbPage(flbs);
  assert.equal(page.byteLength, PAGE_SIZE);
  assert.deepEqual([...page.subarray(0, expected.length)], expected);
  assert.ok(page.subarray(expected.length).every((b) => b === 0));

  const memory = new PagedMemory();
  memory.write(0x2000n, page);
  assert.deepEqual(readLuoFlbs(memory, 0x2000n), flbs);
  assert.throws(() => readLuoFlbs(memory, 0x2008n), /not page aligned/);
  memory.write(0x2000n, Uint8Array.from(u64le(2n)));
  assert.throws(() => readLuoFlbs(memory, 0x2000n), /pgcnt 2/);
  memory.write(0x2000n, Uint8Array.from([...u64le(1n), ...u64le(64n)]));
  assert.throws(() => readLuoFlbs(memory, 0x2000n), /count 64 exceeds 63/);
  assert.throws(() => encodeLuoFlbPage(new Array(64).fill(flbs[0])), AbiError);
});

test('block chains of sessions and files round-trip across several blocks (property)', () => {
  fc.assert(
    fc.property(
      fc.constantFrom(LUO_SESSION_SER_SIZE, LUO_FILE_SER_SIZE),
      fc.integer({ min: 0, max: 200 }),
      fc.integer(),
      (entrySize, count, seed) => {
        const writer = new PhysicalMemoryWriter(new PagedMemory());
        const entries = Array.from({ length: count }, (_, i) =>
          Uint8Array.from({ length: entrySize }, (_, j) => (seed + i * 31 + j) & 0xff),
        );
        const { headPa, preserved } = writeBlockChain(writer, entries, entrySize, 'test blocks');
        const perBlock = entriesPerBlock(entrySize);
        assert.equal(preserved.length, Math.ceil(count / perBlock));
        assert.equal(headPa, count === 0 ? 0n : preserved[0]!.pa);
        const read = readBlockChain(writer, headPa, entrySize, 'test blocks');
        assert.deepEqual(read.entries, entries);
        assert.deepEqual(
          read.blocks,
          preserved.map((p) => p.pa),
        );
        read.blocks.forEach((pa, i) => {
          const header = decodeBlockHeader(writer.read(pa, 16));
          assert.equal(header.count, BigInt(Math.min(perBlock, count - i * perBlock)));
        });
      },
    ),
    { numRuns: 60 },
  );
});

test('readBlockChain refuses cycles, bad counts and bad pointers, as kho_block_set_restore() does', () => {
  const setup = () => {
    const writer = new PhysicalMemoryWriter(new PagedMemory());
    const entries = Array.from({ length: 120 }, () => new Uint8Array(LUO_SESSION_SER_SIZE));
    const { headPa, preserved } = writeBlockChain(
      writer,
      entries,
      LUO_SESSION_SER_SIZE,
      'luo session blocks',
    );
    return { writer, headPa, blocks: preserved.map((p) => p.pa) };
  };
  const cases: [string, (s: ReturnType<typeof setup>) => void, RegExp][] = [
    [
      'cycle',
      (s) => s.writer.write(s.blocks[2]!, encodeBlockHeader({ next: s.blocks[0]!, count: 18n })),
      /loops back/,
    ],
    [
      'self loop',
      (s) => s.writer.write(s.blocks[0]!, encodeBlockHeader({ next: s.blocks[0]!, count: 51n })),
      /loops back/,
    ],
    [
      'count 0',
      (s) => s.writer.write(s.blocks[1]!, encodeBlockHeader({ next: s.blocks[2]!, count: 0n })),
      /count 0/,
    ],
    [
      'count 52',
      (s) => s.writer.write(s.blocks[0]!, encodeBlockHeader({ next: s.blocks[1]!, count: 52n })),
      /count 52/,
    ],
    [
      'misaligned',
      (s) => s.writer.write(s.blocks[0]!, encodeBlockHeader({ next: s.blocks[1]! + 16n, count: 51n })),
      /aligned/,
    ],
    [
      'dangling',
      (s) => s.writer.write(s.blocks[1]!, encodeBlockHeader({ next: 0x7000_0000n, count: 51n })),
      /not readable/,
    ],
  ];
  for (const [name, mutate, reason] of cases) {
    const s = setup();
    mutate(s);
    assert.throws(
      () => readBlockChain(s.writer, s.headPa, LUO_SESSION_SER_SIZE, 'luo session blocks'),
      (e: unknown) => e instanceof AbiError && e.structure === 'luo session blocks' && reason.test(e.message),
      name,
    );
  }
});

test('block chains stop at 10,000 blocks both ways', () => {
  const writer = new PhysicalMemoryWriter(new PagedMemory());
  const entry = new Uint8Array(LUO_FILE_SER_SIZE);
  const tooMany = new Array<Uint8Array>(KHO_MAX_BLOCKS * 63 + 1).fill(entry);
  assert.throws(() => writeBlockChain(writer, tooMany, LUO_FILE_SER_SIZE, 'luo file blocks'), /cap is 10000/);

  const memory = new PagedMemory();
  const base = 0x100_0000n;
  for (let i = 0; i <= KHO_MAX_BLOCKS; i++) {
    const pa = base + BigInt(i) * BigInt(PAGE_SIZE);
    memory.write(pa, encodeBlockHeader({ next: pa + BigInt(PAGE_SIZE), count: 1n }));
  }
  assert.throws(
    () => readBlockChain(memory, base, LUO_FILE_SER_SIZE, 'luo file blocks'),
    /more than 10000 blocks/,
  );
});
