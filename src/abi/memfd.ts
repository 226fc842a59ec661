/**
 * The memfd file handler's handover record, `memfd-v2` (mm/memfd_luo.c,
 * include/linux/kho/abi/memfd.h).
 *
 * A preserved memfd's luo_file_ser.data is the physical address of a 48-byte
 * memfd_luo_ser in its own preserved page:
 *
 *   {u64 pos; u64 size; u32 seals; u32 flags; u64 nr_folios; struct kho_vmalloc folios}
 *
 * `folios` is a vmalloc buffer (kho-vmalloc.ts) of nr_folios 16-byte entries
 * {u64 pfn:52 | flags:12; u64 index}: the folio's page frame number in the low 52 bits,
 * MEMFD_LUO_FOLIO_DIRTY (bit 0) and _UPTODATE (bit 1) above it, and the folio's page
 * offset in the file. The folio's order is not in the entry: it is the order the folio
 * was preserved with in the KHO radix tree. Preserving pins every page below i_size, so
 * the folios cover the whole file (holes are allocated and zeroed), and the kernel sets
 * both flags on every folio. An empty file has nr_folios 0 and a zero descriptor.
 */
import { readU32, readU64, writeU32, writeU64 } from './bytes.js';
import { AbiError } from './errors.js';
import { type PreservedRange, rangeBytes } from './kho-radix.js';
import {
  decodeKhoVmalloc,
  encodeKhoVmalloc,
  KHO_VMALLOC_SIZE,
  type KhoVmalloc,
  readKhoVmalloc,
  writeKhoVmalloc,
} from './kho-vmalloc.js';
import {
  checkPageAligned,
  PAGE_SHIFT,
  PAGE_SIZE,
  type PhysicalMemory,
  type PhysicalMemoryWriter,
  readStruct,
} from './memory.js';
import type { PreservedMemoryMap } from './preserved-map.js';

export const MEMFD_LUO_FH_COMPATIBLE = 'memfd-v2';
export const MEMFD_LUO_SER_SIZE = 8 + 8 + 4 + 4 + 8 + KHO_VMALLOC_SIZE;
export const MEMFD_LUO_FOLIO_SER_SIZE = 16;
export const MEMFD_LUO_FOLIO_DIRTY = 1 << 0;
export const MEMFD_LUO_FOLIO_UPTODATE = 1 << 1;
/** F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE | F_SEAL_EXEC. */
export const MEMFD_LUO_ALL_SEALS = 0x3f;
const PFN_BITS = 52n;
const PFN_MASK = (1n << PFN_BITS) - 1n;
const FOLIO_FLAGS_MAX = 0xfff;

export interface MemfdLuoSer {
  pos: bigint;
  size: bigint;
  seals: number;
  flags: number;
  nrFolios: bigint;
  folios: KhoVmalloc;
}

export interface MemfdLuoFolioSer {
  pfn: bigint;
  flags: number;
  index: bigint;
}

/** A folio of a preserved memfd: 2^order pages at `pa` holding file pages from `index` on. */
export interface MemfdFolio {
  index: bigint;
  pa: bigint;
  order: number;
  flags: number;
}

/** What the handover says about one memfd. */
export interface MemfdState {
  pos: bigint;
  size: bigint;
  seals: number;
  /** No flags are defined; the kernel writes 0. */
  flags?: number;
  folios: MemfdFolio[];
}

export function encodeMemfdLuoSer(ser: MemfdLuoSer): Uint8Array {
  const bytes = new Uint8Array(MEMFD_LUO_SER_SIZE);
  writeU64(bytes, 0, ser.pos, 'memfd_luo_ser', 'pos');
  writeU64(bytes, 8, ser.size, 'memfd_luo_ser', 'size');
  writeU32(bytes, 16, ser.seals, 'memfd_luo_ser', 'seals');
  writeU32(bytes, 20, ser.flags, 'memfd_luo_ser', 'flags');
  writeU64(bytes, 24, ser.nrFolios, 'memfd_luo_ser', 'nr_folios');
  bytes.set(encodeKhoVmalloc(ser.folios), 32);
  return bytes;
}

export function decodeMemfdLuoSer(bytes: Uint8Array): MemfdLuoSer {
  if (bytes.byteLength < MEMFD_LUO_SER_SIZE)
    throw new AbiError('memfd_luo_ser', { offset: 0 }, `needs ${MEMFD_LUO_SER_SIZE} bytes`);
  return {
    pos: readU64(bytes, 0),
    size: readU64(bytes, 8),
    seals: readU32(bytes, 16),
    flags: readU32(bytes, 20),
    nrFolios: readU64(bytes, 24),
    folios: decodeKhoVmalloc(bytes.subarray(32)),
  };
}

export function encodeMemfdFolioSer(folio: MemfdLuoFolioSer): Uint8Array {
  const structure = 'memfd_luo_folio_ser';
  if (folio.pfn < 0n || folio.pfn > PFN_MASK)
    throw new AbiError(structure, {}, `pfn 0x${folio.pfn.toString(16)} needs more than 52 bits`);
  if (!Number.isInteger(folio.flags) || folio.flags < 0 || folio.flags > FOLIO_FLAGS_MAX) {
    throw new AbiError(structure, {}, `flags ${folio.flags} need more than 12 bits`);
  }
  const bytes = new Uint8Array(MEMFD_LUO_FOLIO_SER_SIZE);
  writeU64(bytes, 0, folio.pfn | (BigInt(folio.flags) << PFN_BITS), structure, 'pfn/flags');
  writeU64(bytes, 8, folio.index, structure, 'index');
  return bytes;
}

export function decodeMemfdFolioSer(bytes: Uint8Array, offset = 0): MemfdLuoFolioSer {
  const word = readU64(bytes, offset);
  return { pfn: word & PFN_MASK, flags: Number(word >> PFN_BITS), index: readU64(bytes, offset + 8) };
}

/**
 * Writes a memfd's record as memfd_luo_preserve() does: the record in its own page, the
 * folio array as a vmalloc buffer. The folio contents must already be at their `pa`
 * (see writeMemfdContents). Returns the record's address (the file's `data` handle) and
 * every block to preserve, the folios included.
 */
export function writeMemfd(
  writer: PhysicalMemoryWriter,
  state: MemfdState,
): { pa: bigint; preserved: PreservedRange[] } {
  const pa = writer.allocPages(1);
  const preserved: PreservedRange[] = [{ pa, order: 0 }];
  let descriptor: KhoVmalloc = { first: 0n, totalPages: 0, flags: 0, order: 0 };
  if (state.folios.length > 0) {
    const array = new Uint8Array(state.folios.length * MEMFD_LUO_FOLIO_SER_SIZE);
    state.folios.forEach((folio, i) => {
      checkFolio(folio);
      preserved.push({ pa: folio.pa, order: folio.order });
      const pfn = folio.pa >> BigInt(PAGE_SHIFT);
      array.set(
        encodeMemfdFolioSer({ pfn, flags: folio.flags, index: folio.index }),
        i * MEMFD_LUO_FOLIO_SER_SIZE,
      );
    });
    const vmalloc = writeKhoVmalloc(writer, array);
    descriptor = vmalloc.descriptor;
    preserved.push(...vmalloc.preserved);
  }
  const ser = encodeMemfdLuoSer({
    pos: state.pos,
    size: state.size,
    seals: state.seals,
    flags: state.flags ?? 0,
    nrFolios: BigInt(state.folios.length),
    folios: descriptor,
  });
  writer.write(pa, ser);
  return { pa, preserved };
}

export interface MemfdRecord {
  state: MemfdState;
  /** Entries with pfn 0, which the kernel skips. */
  skippedEntries: number;
  /** Blocks the record itself uses: its page, the vmalloc chunks and data pages. */
  metadata: PreservedRange[];
}

/**
 * Reads the memfd record at `pa` and checks what memfd_luo_retrieve() needs to succeed:
 * known seals, a restorable folio array large enough for nr_folios, and folios that are
 * preserved blocks (their order comes from `preserved`), aligned in the file and not
 * overlapping one another.
 */
export function readMemfd(memory: PhysicalMemory, pa: bigint, preserved: PreservedMemoryMap): MemfdRecord {
  const structure = 'memfd_luo_ser';
  if (pa === 0n) throw new AbiError(structure, { pa }, 'file data handle is 0');
  checkPageAligned(structure, pa);
  const ser = decodeMemfdLuoSer(readStruct(memory, structure, pa, MEMFD_LUO_SER_SIZE));
  if ((ser.seals & ~MEMFD_LUO_ALL_SEALS) !== 0) {
    throw new AbiError(
      structure,
      { pa },
      `seals 0x${ser.seals.toString(16)} include some memfd-v2 cannot restore (EOPNOTSUPP)`,
    );
  }
  const metadata: PreservedRange[] = [{ pa, order: 0 }];
  const state: MemfdState = { pos: ser.pos, size: ser.size, seals: ser.seals, flags: ser.flags, folios: [] };
  if (ser.nrFolios === 0n) return { state, skippedEntries: 0, metadata };

  const array = readKhoVmalloc(memory, ser.folios);
  metadata.push(...array.chunkPages.map((chunk) => ({ pa: chunk, order: 0 })));
  metadata.push(...array.blocks.map((block) => ({ pa: block, order: ser.folios.order })));
  if (ser.nrFolios > BigInt(array.data.byteLength / MEMFD_LUO_FOLIO_SER_SIZE)) {
    throw new AbiError(
      structure,
      { pa },
      `nr_folios ${ser.nrFolios} is more than the ${array.data.byteLength}-byte folio array holds`,
    );
  }
  let skippedEntries = 0;
  const taken: { start: bigint; end: bigint }[] = [];
  const seenPa = new Set<bigint>();
  for (let i = 0; i < Number(ser.nrFolios); i++) {
    const entry = decodeMemfdFolioSer(array.data, i * MEMFD_LUO_FOLIO_SER_SIZE);
    if (entry.pfn === 0n) {
      skippedEntries++;
      continue;
    }
    const folioPa = entry.pfn << BigInt(PAGE_SHIFT);
    const order = preserved.orderAt(folioPa);
    if (order === undefined || seenPa.has(folioPa)) {
      throw new AbiError(
        'memfd_luo_folio_ser',
        { pa: folioPa },
        `folio ${i} is not a preserved block (or is listed twice)`,
      );
    }
    seenPa.add(folioPa);
    const pages = 1n << BigInt(order);
    if (entry.index % pages !== 0n) {
      throw new AbiError(
        'memfd_luo_folio_ser',
        { pa: folioPa },
        `folio ${i} index ${entry.index} is not aligned to its order ${order}`,
      );
    }
    taken.push({ start: entry.index, end: entry.index + pages });
    state.folios.push({ index: entry.index, pa: folioPa, order, flags: entry.flags });
  }
  taken.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  for (let i = 1; i < taken.length; i++) {
    if (taken[i]!.start < taken[i - 1]!.end) {
      throw new AbiError(
        structure,
        { pa },
        `two folios hold file page ${taken[i]!.start} (EEXIST in the page cache)`,
      );
    }
  }
  return { state, skippedEntries, metadata };
}

/**
 * Allocates and fills the folios for a memfd of `size` bytes (default: the content's
 * length) as preserving one leaves them: every page below size present, content after
 * the end of `content` zero, both flags set. Folios are 2^order pages while whole ones
 * fit, then single pages.
 */
export function writeMemfdContents(
  writer: PhysicalMemoryWriter,
  content: Uint8Array,
  options: { size?: bigint; order?: number } = {},
): MemfdFolio[] {
  const size = options.size ?? BigInt(content.byteLength);
  const order = options.order ?? 0;
  const totalPages = Number((size + BigInt(PAGE_SIZE) - 1n) / BigInt(PAGE_SIZE));
  const folios: MemfdFolio[] = [];
  for (let page = 0; page < totalPages; ) {
    const folioOrder = page + (1 << order) <= totalPages && page % (1 << order) === 0 ? order : 0;
    const pages = 1 << folioOrder;
    const pa = writer.allocPages(pages, folioOrder);
    const start = page * PAGE_SIZE;
    if (start < content.byteLength) writer.write(pa, content.subarray(start, start + pages * PAGE_SIZE));
    folios.push({
      index: BigInt(page),
      pa,
      order: folioOrder,
      flags: MEMFD_LUO_FOLIO_DIRTY | MEMFD_LUO_FOLIO_UPTODATE,
    });
    page += pages;
  }
  return folios;
}

/** The file's bytes [0, size): folio contents at their index, zero where no folio is. */
export function readMemfdContents(memory: PhysicalMemory, state: MemfdState, maxBytes = 2 ** 32): Uint8Array {
  if (state.size > BigInt(maxBytes)) {
    throw new AbiError(
      'memfd_luo_ser',
      {},
      `size ${state.size} is more than luokit restores (${maxBytes} bytes)`,
    );
  }
  const size = Number(state.size);
  const out = new Uint8Array(size);
  for (const folio of state.folios) {
    const start = folio.index * BigInt(PAGE_SIZE);
    if (start >= state.size) continue;
    const length = Number(bigMin(rangeBytes(folio), state.size - start));
    out.set(readStruct(memory, 'memfd folio', folio.pa, length), Number(start));
  }
  return out;
}

function checkFolio(folio: MemfdFolio): void {
  const structure = 'memfd_luo_folio_ser';
  if (folio.pa === 0n) throw new AbiError(structure, { pa: 0n }, 'a folio at pfn 0 would read as a hole');
  if (!Number.isInteger(folio.order) || folio.order < 0 || folio.pa % rangeBytes(folio) !== 0n) {
    throw new AbiError(structure, { pa: folio.pa }, `not aligned to order ${folio.order}`);
  }
  if (folio.index < 0n || folio.index % (1n << BigInt(folio.order)) !== 0n) {
    throw new AbiError(
      structure,
      { pa: folio.pa },
      `index ${folio.index} is not aligned to order ${folio.order}`,
    );
  }
}

function bigMin(a: bigint, b: bigint): bigint {
  return a < b ? a : b;
}
