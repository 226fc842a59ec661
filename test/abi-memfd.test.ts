import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { AbiError } from '../src/abi/errors.js';
import {
  decodeMemfdFolioSer,
  decodeMemfdLuoSer,
  encodeMemfdFolioSer,
  encodeMemfdLuoSer,
  MEMFD_LUO_FOLIO_DIRTY,
  MEMFD_LUO_FOLIO_UPTODATE,
  MEMFD_LUO_SER_SIZE,
  type MemfdState,
  readMemfd,
  readMemfdContents,
  writeMemfd,
  writeMemfdContents,
} from '../src/abi/memfd.js';
import { PAGE_SIZE, PagedMemory, PhysicalMemoryWriter } from '../src/abi/memory.js';
import { PreservedMemoryMap } from '../src/abi/preserved-map.js';

test('memfd_luo_ser: {u64 pos; u64 size; u32 seals; u32 flags; u64 nr_folios; struct kho_vmalloc folios}', () => {
  const bytes = [
    ...[0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00], //  0: pos = 16
    ...[0x00, 0x30, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00], //  8: size = 0x3000
    ...[0x0a, 0x00, 0x00, 0x00], //                          16: seals = F_SEAL_SHRINK | F_SEAL_WRITE
    ...[0x00, 0x00, 0x00, 0x00], //                          20: flags = 0
    ...[0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00], // 24: nr_folios = 3
    ...[0x00, 0x90, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00], // 32: folios.first = 0x1009000
    ...[0x01, 0x00, 0x00, 0x00], //                          40: folios.total_pages = 1
    ...[0x01, 0x00], //                                      44: folios.flags = KHO_VMALLOC_ALLOC
    ...[0x00, 0x00], //                                      46: folios.order = 0
  ];
  assert.equal(bytes.length, MEMFD_LUO_SER_SIZE);
  const ser = {
    pos: 16n,
    size: 0x3000n,
    seals: 0xa,
    flags: 0,
    nrFolios: 3n,
    folios: { first: 0x100_9000n, totalPages: 1, flags: 1, order: 0 },
  };
  assert.deepEqual([...encodeMemfdLuoSer(ser)], bytes);
  assert.deepEqual(decodeMemfdLuoSer(Uint8Array.from(bytes)), ser);
  assert.throws(() => decodeMemfdLuoSer(new Uint8Array(47)), AbiError);
});

test('memfd_luo_folio_ser: {u64 pfn:52, flags:12; u64 index}', () => {
  const bytes = [
    ...[0x45, 0x23, 0x01, 0x00, 0x00, 0x00, 0x30, 0x00], // pfn 0x12345 in bits 0..51, flags 3 in bits 52..63
    ...[0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00], // index = 7
  ];
  const folio = { pfn: 0x12345n, flags: MEMFD_LUO_FOLIO_DIRTY | MEMFD_LUO_FOLIO_UPTODATE, index: 7n };
  assert.deepEqual([...encodeMemfdFolioSer(folio)], bytes);
  assert.deepEqual(decodeMemfdFolioSer(Uint8Array.from(bytes)), folio);
  assert.deepEqual(
    decodeMemfdFolioSer(Uint8Array.from([...new Array(8).fill(0xff), ...new Array(8).fill(0)])),
    {
      pfn: (1n << 52n) - 1n,
      flags: 0xfff,
      index: 0n,
    },
  );
  assert.throws(() => encodeMemfdFolioSer({ ...folio, pfn: 1n << 52n }), AbiError);
  assert.throws(() => encodeMemfdFolioSer({ ...folio, flags: 0x1000 }), AbiError);
});

function preservedMap(preserved: { pa: bigint; order: number }[]): PreservedMemoryMap {
  return new PreservedMemoryMap(preserved);
}

test('memfds round-trip: record, folio array and contents (property)', () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ maxLength: 5 * PAGE_SIZE }),
      fc.integer({ min: 0, max: 3 * PAGE_SIZE }),
      fc.integer({ min: 0, max: 2 }),
      fc.bigInt({ min: 0n, max: 1n << 40n }),
      fc.integer({ min: 0, max: 0x3f }),
      (content, extra, order, pos, seals) => {
        const writer = new PhysicalMemoryWriter(new PagedMemory());
        const size = BigInt(content.byteLength + extra);
        const folios = writeMemfdContents(writer, content, { size, order });
        assert.equal(
          folios.reduce((pages, f) => pages + (1 << f.order), 0),
          Math.ceil(Number(size) / PAGE_SIZE),
          'every page below size is present',
        );
        const state: MemfdState = { pos, size, seals, flags: 0, folios };
        const { pa, preserved } = writeMemfd(writer, state);
        const record = readMemfd(writer, pa, preservedMap(preserved));
        assert.deepEqual(record.state, state);
        assert.equal(record.skippedEntries, 0);
        const expected = new Uint8Array(Number(size));
        expected.set(content);
        assert.deepEqual(readMemfdContents(writer, record.state), expected);
      },
    ),
    { numRuns: 60 },
  );
});

test('an empty memfd has no folios and a zero vmalloc descriptor', () => {
  const writer = new PhysicalMemoryWriter(new PagedMemory());
  const { pa, preserved } = writeMemfd(writer, { pos: 0n, size: 0n, seals: 0, folios: [] });
  assert.deepEqual(preserved, [{ pa, order: 0 }]);
  assert.ok(writer.read(pa + 24n, 24).every((b) => b === 0));
  assert.deepEqual(readMemfd(writer, pa, preservedMap(preserved)).state, {
    pos: 0n,
    size: 0n,
    seals: 0,
    flags: 0,
    folios: [],
  });
});

test('readMemfd refuses what memfd_luo_retrieve() cannot restore', () => {
  const setup = () => {
    const writer = new PhysicalMemoryWriter(new PagedMemory());
    const folios = writeMemfdContents(writer, new Uint8Array(2 * PAGE_SIZE).fill(1));
    const state: MemfdState = { pos: 0n, size: BigInt(2 * PAGE_SIZE), seals: 0, folios };
    return { writer, state, ...writeMemfd(writer, state) };
  };
  {
    const s = setup();
    s.writer.write(s.pa + 16n, Uint8Array.of(0x40)); // F_SEAL_* bit 6: unknown to memfd-v2
    assert.throws(() => readMemfd(s.writer, s.pa, preservedMap(s.preserved)), /EOPNOTSUPP/);
  }
  {
    const s = setup();
    const withoutFolio = s.preserved.filter((p) => p.pa !== s.state.folios[1]!.pa);
    assert.throws(
      () => readMemfd(s.writer, s.pa, preservedMap(withoutFolio)),
      /folio 1 is not a preserved block/,
    );
  }
  {
    const s = setup();
    const claimsOrder1 = s.preserved.map((p) => (p.pa === s.state.folios[1]!.pa ? { ...p, order: 1 } : p));
    assert.throws(() => readMemfd(s.writer, s.pa, preservedMap(claimsOrder1)), /not aligned to its order 1/);
  }
  {
    const s = setup();
    s.writer.write(s.pa + 24n, Uint8Array.of(0x01, 0x01)); // nr_folios = 257 > 256 entries in one page
    assert.throws(
      () => readMemfd(s.writer, s.pa, preservedMap(s.preserved)),
      /more than the 4096-byte folio array/,
    );
  }
  {
    const writer = new PhysicalMemoryWriter(new PagedMemory());
    const [folio] = writeMemfdContents(writer, new Uint8Array(PAGE_SIZE));
    const twin = { ...folio!, pa: writer.allocPages(1) };
    const { pa, preserved } = writeMemfd(writer, { pos: 0n, size: 4096n, seals: 0, folios: [folio!, twin] });
    assert.throws(() => readMemfd(writer, pa, preservedMap(preserved)), /EEXIST/);
  }
  assert.throws(() => readMemfd(new PagedMemory(), 0n, preservedMap([])), /data handle is 0/);
  assert.throws(() => readMemfd(new PagedMemory(), 0x1010n, preservedMap([])), /not page aligned/);
  assert.throws(() => readMemfd(new PagedMemory(), 0x1000n, preservedMap([])), /not readable/);
});

test('folio entries with pfn 0 are skipped, as the kernel skips them', () => {
  const writer = new PhysicalMemoryWriter(new PagedMemory());
  const folios = writeMemfdContents(writer, new Uint8Array(2 * PAGE_SIZE).fill(9));
  const { pa, preserved } = writeMemfd(writer, { pos: 0n, size: BigInt(2 * PAGE_SIZE), seals: 0, folios });
  const chunk = decodeMemfdLuoSer(writer.read(pa, MEMFD_LUO_SER_SIZE)).folios.first;
  const arrayPage = writer.read(chunk + 8n, 8);
  writer.write(new DataView(arrayPage.buffer).getBigUint64(0, true), new Uint8Array(8)); // entry 0 := pfn 0
  const record = readMemfd(writer, pa, preservedMap(preserved));
  assert.equal(record.skippedEntries, 1);
  assert.deepEqual(
    record.state.folios.map((f) => f.index),
    [1n],
  );
  const contents = readMemfdContents(writer, record.state);
  assert.ok(contents.subarray(0, PAGE_SIZE).every((b) => b === 0));
  assert.ok(contents.subarray(PAGE_SIZE).every((b) => b === 9));
});

test('writeMemfd and writeMemfdContents refuse impossible folios', () => {
  const writer = new PhysicalMemoryWriter(new PagedMemory());
  const folio = { index: 0n, pa: 0x100_0000n, order: 0, flags: 3 };
  assert.throws(
    () => writeMemfd(writer, { pos: 0n, size: 1n, seals: 0, folios: [{ ...folio, pa: 0n }] }),
    /pfn 0/,
  );
  assert.throws(
    () =>
      writeMemfd(writer, { pos: 0n, size: 1n, seals: 0, folios: [{ ...folio, order: 1, pa: 0x100_1000n }] }),
    /order 1/,
  );
  assert.throws(
    () => writeMemfd(writer, { pos: 0n, size: 1n, seals: 0, folios: [{ ...folio, order: 1, index: 1n }] }),
    /index 1/,
  );
  assert.throws(
    () => readMemfdContents(writer, { pos: 0n, size: 1n << 40n, seals: 0, folios: [] }),
    /more than luokit restores/,
  );
});
