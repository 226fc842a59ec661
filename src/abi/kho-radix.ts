/**
 * KHO's preserved-memory map: the radix tree (kho-v2 onwards) that tells the next kernel
 * which pages to keep.
 *
 * A preservation is a naturally aligned block of 2^order pages. Its key puts an "order
 * bit" at position 52 - order above the block's address shifted right by 12 + order, so
 * every order shares one key space and one tree. The tree has six levels of one 4 KiB
 * page each: levels 5 to 1 are tables of 512 little-endian u64 physical addresses, each
 * indexed by 9 key bits (level i by bits 15 + 9(i - 1) and up), and level 0 is a
 * 32768-bit bitmap indexed by the low 15 key bits. The root (level 5) is what the KHO FDT's
 * `preserved-memory-map` points at.
 *
 * The tree's own pages are ordinary allocations, not preservations: the next kernel walks
 * them during early boot, when it only allocates from the scratch areas, and then lets
 * them be reused. So encodeRadixTree allocates node pages but does not mark them.
 *
 * This file is the format: keys, layout and the encoder. Reading a tree is
 * kho-radix-walk.ts (a walker tuned for terabytes); what a walk yields, indexed, is
 * preserved-map.ts.
 */
import { AbiError } from './errors.js';
import { PAGE_SHIFT, PAGE_SIZE, type PhysicalMemoryWriter, type PhysicalRange } from './memory.js';

/** A preserved block: 2^order pages at `pa`, which is aligned to its size. */
export interface PreservedRange {
  pa: bigint;
  order: number;
}

/** Position of the order bit for an order-0 page: 64 - PAGE_SHIFT. */
export const KHO_ORDER_0_LOG2 = 64 - PAGE_SHIFT;
export const TABLE_SIZE_LOG2 = 9;
export const TABLE_ENTRIES = 1 << TABLE_SIZE_LOG2;
export const BITMAP_SIZE_LOG2 = PAGE_SHIFT + 3;
/** Five table levels above the bitmap level: DIV_ROUND_UP(52 - 15 + 1, 9) + 1. */
export const KHO_TREE_MAX_DEPTH = Math.ceil((KHO_ORDER_0_LOG2 - BITMAP_SIZE_LOG2 + 1) / TABLE_SIZE_LOG2) + 1;
export const ROOT_LEVEL = KHO_TREE_MAX_DEPTH - 1;

export function radixKey(pa: bigint, order: number): bigint {
  checkRange({ pa, order });
  return (1n << BigInt(KHO_ORDER_0_LOG2 - order)) | (pa >> BigInt(PAGE_SHIFT + order));
}

/** Inverse of radixKey; throws for keys no preservation produces (no order bit at or below bit 52). */
export function rangeOfRadixKey(key: bigint, where: { pa?: bigint } = {}): PreservedRange {
  const orderBit = bitLength(key) - 1;
  if (orderBit < 0 || orderBit > KHO_ORDER_0_LOG2) {
    throw new AbiError('kho-radix-leaf', where, `key 0x${key.toString(16)} encodes no page order`);
  }
  const order = KHO_ORDER_0_LOG2 - orderBit;
  return { pa: (key - (1n << BigInt(orderBit))) << BigInt(PAGE_SHIFT + order), order };
}

/** Bytes covered by a preserved block. */
export function rangeBytes(range: PreservedRange): bigint {
  return BigInt(PAGE_SIZE) << BigInt(range.order);
}

/** The addresses a preserved block covers, e.g. to mark them busy in a PageAllocator. */
export function physicalRangeOf(range: PreservedRange): PhysicalRange {
  return { start: range.pa, end: range.pa + rangeBytes(range) };
}

/**
 * The blocks kho_preserve_pages() records for `nrPages` pages at `pa`: the largest
 * naturally aligned block that fits at each step. (The kernel also splits at NUMA node
 * boundaries, which an emulated single-node machine never has.)
 */
export function preservePagesRanges(pa: bigint, nrPages: number | bigint): PreservedRange[] {
  if (pa % BigInt(PAGE_SIZE) !== 0n)
    throw new AbiError('kho-preserve', { pa }, 'address is not page aligned');
  const ranges: PreservedRange[] = [];
  let pfn = pa >> BigInt(PAGE_SHIFT);
  const end = pfn + BigInt(nrPages);
  while (pfn < end) {
    const order = Math.min(trailingZeros(pfn), floorLog2(end - pfn));
    ranges.push({ pa: pfn << BigInt(PAGE_SHIFT), order });
    pfn += 1n << BigInt(order);
  }
  return ranges;
}

/**
 * Builds the tree for `ranges`, allocating its pages through `writer` (root first, then
 * depth first in key order), and returns the root's physical address.
 */
export function encodeRadixTree(writer: PhysicalMemoryWriter, ranges: Iterable<PreservedRange>): bigint {
  const root: TableNode = new Map();
  for (const range of ranges) {
    const key = radixKey(range.pa, range.order);
    let table = root;
    for (let level = ROOT_LEVEL; level > 1; level--) {
      const index = tableIndex(key, level);
      let next = table.get(index);
      if (!next) {
        next = new Map();
        table.set(index, next);
      }
      table = next as TableNode;
    }
    const index = tableIndex(key, 1);
    let leaf = table.get(index) as Uint8Array | undefined;
    if (!leaf) {
      leaf = new Uint8Array(PAGE_SIZE);
      table.set(index, leaf);
    }
    const bit = Number(key & BigInt((1 << BITMAP_SIZE_LOG2) - 1));
    leaf[bit >> 3]! |= 1 << (bit & 7);
  }
  return writeNode(writer, root);
}

type TableNode = Map<number, TableNode | Uint8Array>;

function writeNode(writer: PhysicalMemoryWriter, node: TableNode | Uint8Array): bigint {
  const pa = writer.allocPages(1);
  if (node instanceof Uint8Array) {
    writer.write(pa, node);
    return pa;
  }
  const table = new Uint8Array(PAGE_SIZE);
  const view = new DataView(table.buffer);
  for (const index of [...node.keys()].sort((a, b) => a - b)) {
    view.setBigUint64(index * 8, writeNode(writer, node.get(index)!), true);
  }
  writer.write(pa, table);
  return pa;
}

function tableIndex(key: bigint, level: number): number {
  return Number(
    (key >> BigInt((level - 1) * TABLE_SIZE_LOG2 + BITMAP_SIZE_LOG2)) & BigInt(TABLE_ENTRIES - 1),
  );
}

function checkRange(range: PreservedRange): void {
  const { pa, order } = range;
  if (!Number.isInteger(order) || order < 0 || order > KHO_ORDER_0_LOG2) {
    throw new AbiError('kho-preserve', { pa }, `order ${order} is outside 0..${KHO_ORDER_0_LOG2}`);
  }
  if (typeof pa !== 'bigint' || pa < 0n || pa + (BigInt(PAGE_SIZE) << BigInt(order)) > 1n << 64n) {
    throw new AbiError('kho-preserve', {}, `address ${String(pa)} is outside the 64-bit space`);
  }
  if (pa % (BigInt(PAGE_SIZE) << BigInt(order)) !== 0n) {
    throw new AbiError('kho-preserve', { pa }, `not aligned to its order-${order} size`);
  }
}

function trailingZeros(value: bigint): number {
  if (value === 0n) return 64;
  let n = 0;
  while ((value & (1n << BigInt(n))) === 0n) n++;
  return n;
}

function floorLog2(value: bigint): number {
  return bitLength(value) - 1;
}

/** Bits needed to write `value` (0 for 0); keys are below 2^60, so this is the hot path. */
export function bitLength(value: bigint): number {
  if (value >= 1n << 64n) return value.toString(2).length;
  const high = Number(value >> 32n);
  if (high !== 0) return 64 - Math.clz32(high);
  return 32 - Math.clz32(Number(value));
}
