/**
 * kho_vmalloc: how KHO hands over a virtually contiguous (vmalloc) buffer whose pages
 * are scattered in physical memory. memfd uses it for its folio array.
 *
 * The 16-byte descriptor is {u64 first chunk, u32 total_pages, u16 flags, u16 order}.
 * Chunks are single pages: a u64 `next` chunk address, then 511 u64 addresses of the
 * buffer's blocks of 2^order pages, in buffer order, ended by a zero unless the chunk is
 * full. The kernel starts a new chunk as soon as one fills, so a buffer of exactly 511
 * blocks has a second, empty chunk. Every chunk page and every block is itself preserved.
 */
import { readU16, readU32, readU64, writeU16, writeU32, writeU64 } from './bytes.js';
import { AbiError, hexPa } from './errors.js';
import { type PreservedRange, preservePagesRanges } from './kho-radix.js';
import {
  checkPageAligned,
  PAGE_SIZE,
  type PhysicalMemory,
  type PhysicalMemoryWriter,
  readStruct,
} from './memory.js';

export const KHO_VMALLOC_SIZE = 16;
/** Physical addresses per chunk page: (PAGE_SIZE - 8) / 8. */
export const KHO_VMALLOC_CHUNK_ENTRIES = (PAGE_SIZE - 8) / 8;
/** The buffer was vmalloc()ed (VM_ALLOC). */
export const KHO_VMALLOC_ALLOC = 0x1;
/** The buffer may be mapped with huge pages (VM_ALLOW_HUGE_VMAP). */
export const KHO_VMALLOC_HUGE_VMAP = 0x2;
/** The largest block a huge vmalloc mapping uses: a 1 GiB PUD with 4 KiB pages. */
export const KHO_VMALLOC_MAX_ORDER = 18;
const STRUCTURE = 'kho_vmalloc';
const CHUNK = 'kho_vmalloc_chunk';
const MAX_BUFFER_BYTES = 2 ** 32;

export interface KhoVmalloc {
  /** Physical address of the first chunk page. */
  first: bigint;
  totalPages: number;
  flags: number;
  order: number;
}

export function encodeKhoVmalloc(descriptor: KhoVmalloc): Uint8Array {
  const bytes = new Uint8Array(KHO_VMALLOC_SIZE);
  writeU64(bytes, 0, descriptor.first, STRUCTURE, 'first');
  writeU32(bytes, 8, descriptor.totalPages, STRUCTURE, 'total_pages');
  writeU16(bytes, 12, descriptor.flags, STRUCTURE, 'flags');
  writeU16(bytes, 14, descriptor.order, STRUCTURE, 'order');
  return bytes;
}

export function decodeKhoVmalloc(bytes: Uint8Array): KhoVmalloc {
  if (bytes.byteLength < KHO_VMALLOC_SIZE)
    throw new AbiError(STRUCTURE, { offset: 0 }, `needs ${KHO_VMALLOC_SIZE} bytes`);
  return {
    first: readU64(bytes, 0),
    totalPages: readU32(bytes, 8),
    flags: readU16(bytes, 12),
    order: readU16(bytes, 14),
  };
}

/**
 * Lays `data` out as a preserved vmalloc buffer of 2^order-page blocks (order 0 for a
 * plain vmalloc/vcalloc, as memfd's folio array is). Returns the descriptor and every
 * block KHO must preserve for it: chunk pages and data blocks.
 */
export function writeKhoVmalloc(
  writer: PhysicalMemoryWriter,
  data: Uint8Array,
  options: { order?: number; flags?: number } = {},
): { descriptor: KhoVmalloc; preserved: PreservedRange[] } {
  const order = options.order ?? 0;
  const flags = options.flags ?? KHO_VMALLOC_ALLOC;
  if (!Number.isInteger(order) || order < 0 || order > KHO_VMALLOC_MAX_ORDER) {
    throw new AbiError(STRUCTURE, {}, `order ${order} is outside 0..${KHO_VMALLOC_MAX_ORDER}`);
  }
  if (data.byteLength === 0) throw new AbiError(STRUCTURE, {}, 'an empty buffer has no vmalloc area');
  const blockPages = 1 << order;
  const blockBytes = blockPages * PAGE_SIZE;
  const blocks = Math.ceil(data.byteLength / blockBytes);

  const preserved: PreservedRange[] = [];
  const newChunk = (): { pa: bigint; page: Uint8Array } => {
    const pa = writer.allocPages(1);
    preserved.push({ pa, order: 0 });
    return { pa, page: new Uint8Array(PAGE_SIZE) };
  };
  const first = newChunk();
  let chunk = first;
  let slot = 0;
  for (let b = 0; b < blocks; b++) {
    const pa = writer.allocPages(blockPages, order);
    writer.write(pa, data.subarray(b * blockBytes, (b + 1) * blockBytes));
    preserved.push(...preservePagesRanges(pa, blockPages));
    writeU64(chunk.page, 8 + slot * 8, pa, CHUNK, 'phys');
    if (++slot === KHO_VMALLOC_CHUNK_ENTRIES) {
      const next = newChunk();
      writeU64(chunk.page, 0, next.pa, CHUNK, 'next');
      writer.write(chunk.pa, chunk.page);
      chunk = next;
      slot = 0;
    }
  }
  writer.write(chunk.pa, chunk.page);
  return { descriptor: { first: first.pa, totalPages: blocks * blockPages, flags, order }, preserved };
}

export interface KhoVmallocContents {
  /** The whole buffer: totalPages pages. */
  data: Uint8Array;
  chunkPages: bigint[];
  /** Start of each block of 2^order pages, in buffer order. */
  blocks: bigint[];
}

/**
 * Reassembles a preserved vmalloc buffer, checking what kho_restore_vmalloc() checks
 * (blocks add up to exactly total_pages) and what it takes for granted: chunks are
 * aligned, readable and form no cycle, blocks are aligned to their order.
 */
export function readKhoVmalloc(memory: PhysicalMemory, descriptor: KhoVmalloc): KhoVmallocContents {
  const { first, totalPages, order } = descriptor;
  if (order > KHO_VMALLOC_MAX_ORDER)
    throw new AbiError(STRUCTURE, { pa: first }, `order ${order} is too large`);
  const blockPages = 1 << order;
  const blockBytes = BigInt(blockPages * PAGE_SIZE);
  if (totalPages === 0 || totalPages % blockPages !== 0) {
    throw new AbiError(
      STRUCTURE,
      { pa: first },
      `total_pages ${totalPages} is not a positive multiple of ${blockPages}`,
    );
  }
  if (totalPages * PAGE_SIZE > MAX_BUFFER_BYTES) {
    throw new AbiError(STRUCTURE, { pa: first }, `total_pages ${totalPages} is larger than luokit reads`);
  }
  const totalBlocks = totalPages / blockPages;
  const maxChunks = Math.floor(totalBlocks / KHO_VMALLOC_CHUNK_ENTRIES) + 1;
  if (first === 0n) throw new AbiError(STRUCTURE, { pa: first }, 'no first chunk');

  const chunkPages: bigint[] = [];
  const blocks: bigint[] = [];
  const seen = new Set<bigint>();
  for (let chunkPa = first; chunkPa !== 0n; ) {
    checkPageAligned(CHUNK, chunkPa);
    if (seen.has(chunkPa)) throw new AbiError(CHUNK, { pa: chunkPa }, 'chunk list loops back to this chunk');
    if (chunkPages.length === maxChunks) {
      throw new AbiError(CHUNK, { pa: chunkPa }, `more chunks than ${totalBlocks} blocks need`);
    }
    seen.add(chunkPa);
    chunkPages.push(chunkPa);
    const page = readStruct(memory, CHUNK, chunkPa, PAGE_SIZE);
    for (let i = 0; i < KHO_VMALLOC_CHUNK_ENTRIES; i++) {
      const blockPa = readU64(page, 8 + i * 8);
      if (blockPa === 0n) break;
      if (blocks.length === totalBlocks) {
        throw new AbiError(CHUNK, { pa: chunkPa }, `more blocks than total_pages ${totalPages} allows`);
      }
      if (blockPa % blockBytes !== 0n) {
        throw new AbiError(
          CHUNK,
          { pa: chunkPa },
          `block ${hexPa(blockPa)} is not aligned to order ${order}`,
        );
      }
      blocks.push(blockPa);
    }
    chunkPa = readU64(page, 0);
  }
  if (blocks.length !== totalBlocks) {
    throw new AbiError(
      STRUCTURE,
      { pa: first },
      `chunks list ${blocks.length} blocks, total_pages needs ${totalBlocks}`,
    );
  }

  const data = new Uint8Array(totalPages * PAGE_SIZE);
  blocks.forEach((blockPa, i) => {
    data.set(readStruct(memory, 'kho_vmalloc block', blockPa, Number(blockBytes)), i * Number(blockBytes));
  });
  return { data, chunkPages, blocks };
}
