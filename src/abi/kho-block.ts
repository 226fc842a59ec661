/**
 * KHO serialization blocks (kernel/liveupdate/kho_block.c): how LUO stores arrays of
 * fixed-size entries (sessions, and each session's files) in preserved memory.
 *
 * Each block is one preserved page: a 16-byte header {u64 next, u64 count} and then
 * `count` entries back to back; `next` is the physical address of the following block,
 * 0 in the last. A block holds floor((4096 - 16) / entry size) entries. The kernel grows
 * and shrinks the chain with the number of entries, so every block is non-empty and only
 * the last may be partly filled; a chain is capped at 10,000 blocks. On restore the
 * kernel refuses a chain with a cycle, more than 10,000 blocks, or a block whose count is
 * 0 or more than a block holds (EINVAL); so does readBlockChain.
 */
import { readU64, writeU64 } from './bytes.js';
import { AbiError } from './errors.js';
import type { PreservedRange } from './kho-radix.js';
import {
  checkPageAligned,
  PAGE_SIZE,
  type PhysicalMemory,
  type PhysicalMemoryWriter,
  readStruct,
} from './memory.js';

export const KHO_BLOCK_SIZE = PAGE_SIZE;
export const KHO_BLOCK_HEADER_SIZE = 16;
export const KHO_MAX_BLOCKS = 10_000;

export function entriesPerBlock(entrySize: number): number {
  return Math.floor((KHO_BLOCK_SIZE - KHO_BLOCK_HEADER_SIZE) / entrySize);
}

export interface BlockHeader {
  next: bigint;
  count: bigint;
}

export function encodeBlockHeader(header: BlockHeader): Uint8Array {
  const bytes = new Uint8Array(KHO_BLOCK_HEADER_SIZE);
  writeU64(bytes, 0, header.next, 'kho_block_header_ser', 'next');
  writeU64(bytes, 8, header.count, 'kho_block_header_ser', 'count');
  return bytes;
}

export function decodeBlockHeader(bytes: Uint8Array): BlockHeader {
  return { next: readU64(bytes, 0), count: readU64(bytes, 8) };
}

/**
 * Writes `entries` (each exactly `entrySize` bytes) into a fresh chain of blocks, one
 * page each, and returns the head address (0 when there are no entries, as the kernel
 * stores for an empty set) and the pages to preserve.
 */
export function writeBlockChain(
  writer: PhysicalMemoryWriter,
  entries: readonly Uint8Array[],
  entrySize: number,
  structure: string,
): { headPa: bigint; preserved: PreservedRange[] } {
  const perBlock = entriesPerBlock(entrySize);
  const blockCount = Math.ceil(entries.length / perBlock);
  if (blockCount > KHO_MAX_BLOCKS) {
    throw new AbiError(
      structure,
      {},
      `${entries.length} entries need ${blockCount} blocks; the cap is ${KHO_MAX_BLOCKS}`,
    );
  }
  const pages = Array.from({ length: blockCount }, () => writer.allocPages(1));
  pages.forEach((pa, b) => {
    const block = new Uint8Array(KHO_BLOCK_SIZE);
    const mine = entries.slice(b * perBlock, (b + 1) * perBlock);
    block.set(encodeBlockHeader({ next: pages[b + 1] ?? 0n, count: BigInt(mine.length) }));
    mine.forEach((entry, i) => {
      if (entry.byteLength !== entrySize) {
        throw new AbiError(structure, {}, `entry is ${entry.byteLength} bytes, expected ${entrySize}`);
      }
      block.set(entry, KHO_BLOCK_HEADER_SIZE + i * entrySize);
    });
    writer.write(pa, block);
  });
  return { headPa: pages[0] ?? 0n, preserved: pages.map((pa) => ({ pa, order: 0 })) };
}

/**
 * The entries of the chain at `headPa` (none when it is 0), each `entrySize` bytes, and
 * the block pages. `structure` names the chain in errors, e.g. `luo session blocks`.
 */
export function readBlockChain(
  memory: PhysicalMemory,
  headPa: bigint,
  entrySize: number,
  structure: string,
): { entries: Uint8Array[]; blocks: bigint[] } {
  const perBlock = entriesPerBlock(entrySize);
  const entries: Uint8Array[] = [];
  const blocks: bigint[] = [];
  const seen = new Set<bigint>();
  for (let pa = headPa; pa !== 0n; ) {
    if (seen.has(pa)) throw new AbiError(structure, { pa }, 'the chain loops back to this block');
    if (blocks.length === KHO_MAX_BLOCKS)
      throw new AbiError(structure, { pa }, `more than ${KHO_MAX_BLOCKS} blocks`);
    checkPageAligned(structure, pa);
    seen.add(pa);
    blocks.push(pa);
    const block = readStruct(memory, structure, pa, KHO_BLOCK_SIZE);
    const header = decodeBlockHeader(block);
    if (header.count === 0n || header.count > BigInt(perBlock)) {
      throw new AbiError(structure, { pa }, `block count ${header.count} is outside 1..${perBlock}`);
    }
    for (let i = 0; i < Number(header.count); i++) {
      const at = KHO_BLOCK_HEADER_SIZE + i * entrySize;
      entries.push(block.slice(at, at + entrySize));
    }
    pa = header.next;
  }
  return { entries, blocks };
}
