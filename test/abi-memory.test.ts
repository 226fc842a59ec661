import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import fc from 'fast-check';
import { AbiError } from '../src/abi/errors.js';
import { PAGE_SIZE, PagedMemory, PhysicalMemoryWriter, readStruct } from '../src/abi/memory.js';
import { FileSegmentMemory, SparseFileMemory } from '../src/abi/memory-files.js';
import { DEFAULT_ALLOCATION_BASE, PageAllocator } from '../src/abi/page-allocator.js';
import { elfCore } from './fixtures/abi/elf-core.js';

const dir = mkdtempSync(join(tmpdir(), 'luokit-abi-memory-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const MiB = 1n << 20n;

test('PagedMemory: reads span pages; absent pages are AbiErrors naming the page', () => {
  const memory = new PagedMemory();
  memory.write(0x1ffen, Uint8Array.of(1, 2, 3, 4));
  assert.deepEqual([...memory.read(0x1ffen, 4)], [1, 2, 3, 4]);
  assert.deepEqual([...memory.read(0x1000n, 2)], [0, 0]);
  assert.deepEqual(memory.ranges(), [{ start: 0x1000n, end: 0x3000n }]);
  const error = assertAbiError(() => memory.read(0x2ff0n, 32));
  assert.equal(error.pa, 0x3000n);
  assert.throws(() => memory.read(-1n, 1), AbiError);
  assert.throws(() => memory.read(0x1000n, -1), AbiError);
  assert.throws(() => memory.read(1n << 60n, 1), AbiError);
  memory.dropPage(0x1000n);
  assert.throws(() => memory.read(0x1ffen, 1), AbiError);
  assert.deepEqual(memory.pageAddresses(), [0x2000n]);
});

test('PagedMemory.clone is deep', () => {
  const memory = new PagedMemory();
  memory.write(0n, Uint8Array.of(7));
  const copy = memory.clone();
  copy.write(0n, Uint8Array.of(9));
  assert.equal(memory.read(0n, 1)[0], 7);
});

test('SparseFileMemory: byte pa of the file is address pa; holes read as zero; the end is the limit', () => {
  const path = join(dir, 'memory.img');
  const memory = SparseFileMemory.open(path, { writable: true });
  memory.write(16n * MiB, Uint8Array.of(0xaa, 0xbb));
  assert.deepEqual([...memory.read(16n * MiB - 2n, 4)], [0, 0, 0xaa, 0xbb]);
  assert.deepEqual(memory.ranges(), [{ start: 0n, end: 16n * MiB + 2n }]);
  assert.throws(() => memory.read(16n * MiB, 3), AbiError);
  memory.zero(32n * MiB, PAGE_SIZE);
  assert.equal(statSync(path).size, Number(32n * MiB) + PAGE_SIZE);
  memory.write(32n * MiB, Uint8Array.of(5));
  memory.zero(32n * MiB, 1);
  assert.equal(memory.read(32n * MiB, 1)[0], 0);
  memory.close();

  const reader = SparseFileMemory.open(path);
  assert.deepEqual([...reader.read(16n * MiB, 2)], [0xaa, 0xbb]);
  assert.throws(() => reader.write(0n, Uint8Array.of(1)), Error);
  reader.close();

  const fd = openSync(path, 'r');
  const borrowed = SparseFileMemory.fromFd(fd);
  assert.equal(borrowed.read(16n * MiB + 1n, 1)[0], 0xbb);
  borrowed.close();
  closeSync(fd); // still open: fromFd does not take ownership
});

test('raw dump: file byte 0 is the base address; nothing else is present', () => {
  const path = join(dir, 'raw.bin');
  writeFileSync(
    path,
    Uint8Array.from({ length: 8192 }, (_, i) => i & 0xff),
  );
  const memory = FileSegmentMemory.openRawDump(path, 0x4000_0000n);
  assert.deepEqual([...memory.read(0x4000_1000n, 3)], [0, 1, 2]);
  assert.deepEqual(memory.ranges(), [{ start: 0x4000_0000n, end: 0x4000_2000n }]);
  assert.throws(() => memory.read(0x3fff_ffffn, 2), AbiError);
  assert.throws(() => memory.read(0x4000_1fffn, 2), AbiError);
  memory.close();
});

test('ELF core: PT_LOAD p_paddr maps to file bytes; beyond p_filesz is absent; notes are ignored', () => {
  for (const options of [{}, { bigEndian: true }, { extendedCount: true }]) {
    const path = join(dir, 'core.elf');
    writeFileSync(
      path,
      elfCore(
        [
          { type: 4, paddr: 0n, data: Uint8Array.of(9, 9, 9, 9) }, // PT_NOTE
          { type: 1, paddr: 0x2000n, data: new Uint8Array(0x1000).fill(0x22), memsz: 0x3000n },
          { type: 1, paddr: 0x1000n, data: new Uint8Array(0x1000).fill(0x11) },
        ],
        options,
      ),
    );
    const memory = FileSegmentMemory.openElfCore(path);
    assert.deepEqual(memory.ranges(), [
      { start: 0x1000n, end: 0x2000n },
      { start: 0x2000n, end: 0x3000n },
    ]);
    assert.deepEqual([...memory.read(0x1ffen, 4)], [0x11, 0x11, 0x22, 0x22]);
    assert.throws(() => memory.read(0x2fffn, 2), AbiError, 'p_memsz beyond p_filesz is not in the file');
    assert.throws(() => memory.read(0n, 1), AbiError);
    memory.close();
  }
});

test('ELF core: refuses what it cannot map', () => {
  const path = join(dir, 'bad.elf');
  const good = elfCore([{ type: 1, paddr: 0x1000n, data: new Uint8Array(16) }]);
  const cases: [string, Uint8Array][] = [
    ['not ELF', new Uint8Array(64)],
    ['kdump', Uint8Array.from([...new TextEncoder().encode('KDUMP   '), ...new Uint8Array(56)])],
    ['32-bit', patched(good, 4, [1])],
    ['not a core', patched(good, 16, [2, 0])],
    ['truncated header', good.subarray(0, 40)],
    ['program headers past the end', patched(good, 56, [0x40, 0])],
    [
      'overlapping segments',
      elfCore([
        { type: 1, paddr: 0x1000n, data: new Uint8Array(32) },
        { type: 1, paddr: 0x1010n, data: new Uint8Array(32) },
      ]),
    ],
  ];
  for (const [name, bytes] of cases) {
    writeFileSync(path, bytes);
    assert.throws(() => FileSegmentMemory.openElfCore(path), AbiError, name);
  }
  // A dump cut short keeps what is there.
  writeFileSync(path, good.subarray(0, good.byteLength - 8));
  const memory = FileSegmentMemory.openElfCore(path);
  assert.deepEqual(memory.ranges(), [{ start: 0x1000n, end: 0x1008n }]);
  memory.close();
});

test('PageAllocator: first fit above the base, aligned, reusing freed pages lowest first', () => {
  const allocator = new PageAllocator();
  const a = allocator.alloc(1);
  assert.equal(a, DEFAULT_ALLOCATION_BASE);
  const b = allocator.alloc(2, 9);
  assert.equal(b, DEFAULT_ALLOCATION_BASE + 2n * MiB); // next 2 MiB boundary
  const c = allocator.alloc(1);
  assert.equal(c, a + 0x1000n); // fills the gap below b
  allocator.free(a, 1);
  assert.equal(allocator.alloc(1), a);
  assert.throws(() => allocator.free(a + 0x100_0000n, 1), AbiError);
  assert.throws(() => allocator.alloc(0), AbiError);
  assert.throws(() => new PageAllocator({ base: 0x1234n }), AbiError);
  assert.throws(() => new PageAllocator({ base: 0x1000n, limit: 0x3000n }).alloc(3), AbiError);
});

test('PageAllocator: rebuilt from busy ranges, it never hands them out again', () => {
  const busy = [
    { start: 0x100_0000n, end: 0x100_3000n },
    { start: 0x100_4000n, end: 0x100_5000n },
  ];
  const allocator = new PageAllocator({ busy });
  assert.equal(allocator.alloc(1), 0x100_3000n);
  assert.equal(allocator.alloc(2), 0x100_5000n);
  assert.deepEqual(allocator.busyRanges(), [{ start: 0x100_0000n, end: 0x100_7000n }]);
});

test('PageAllocator: random alloc/free sequences never overlap (property)', () => {
  const step = fc.oneof(
    fc.record({ alloc: fc.integer({ min: 1, max: 8 }), align: fc.integer({ min: 0, max: 4 }) }),
    fc.record({ free: fc.nat() }),
  );
  fc.assert(
    fc.property(fc.array(step, { maxLength: 60 }), (steps) => {
      const allocator = new PageAllocator({ base: 0x10000n });
      const live: { pa: bigint; count: number }[] = [];
      for (const s of steps) {
        if ('alloc' in s) {
          const pa = allocator.alloc(s.alloc, s.align);
          assert.equal(pa % (0x1000n << BigInt(s.align)), 0n);
          for (const other of live) {
            const overlap =
              pa < other.pa + BigInt(other.count) * 0x1000n && other.pa < pa + BigInt(s.alloc) * 0x1000n;
            assert.ok(!overlap, 'allocations overlap');
          }
          live.push({ pa, count: s.alloc });
        } else if (live.length > 0) {
          const [victim] = live.splice(s.free % live.length, 1);
          allocator.free(victim!.pa, victim!.count);
        }
      }
    }),
  );
});

test('PhysicalMemoryWriter hands out zeroed pages, even reused ones', () => {
  const writer = new PhysicalMemoryWriter(new PagedMemory());
  const pa = writer.allocPages(1);
  writer.write(pa, new Uint8Array(PAGE_SIZE).fill(0xff));
  writer.freePages(pa, 1);
  const again = writer.allocPages(1);
  assert.equal(again, pa);
  assert.ok(writer.read(again, PAGE_SIZE).every((b) => b === 0));
  assert.deepEqual(writer.ranges(), [{ start: pa, end: pa + 0x1000n }]);
});

test('readStruct names the structure and the address when memory is missing', () => {
  const error = assertAbiError(() => readStruct(new PagedMemory(), 'luo_ser', 0x5000n, 32));
  assert.equal(error.structure, 'luo_ser');
  assert.equal(error.pa, 0x5000n);
  assert.match(error.message, /^luo_ser at pa 0x5000: 32 bytes not readable/);
});

function assertAbiError(work: () => unknown): AbiError {
  try {
    work();
  } catch (error) {
    assert.ok(error instanceof AbiError, `expected AbiError, got ${String(error)}`);
    return error;
  }
  assert.fail('expected an AbiError');
}

function patched(bytes: Uint8Array, offset: number, values: number[]): Uint8Array {
  const copy = bytes.slice();
  copy.set(values, offset);
  return copy;
}
