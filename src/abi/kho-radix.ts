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
 */
import { AbiError, hexPa } from './errors.js';
import {
  PAGE_SHIFT,
  PAGE_SIZE,
  type PhysicalMemory,
  type PhysicalMemoryWriter,
  type PhysicalRange,
  readStructInto,
} from './memory.js';

/** A preserved block: 2^order pages at `pa`, which is aligned to its size. */
export interface PreservedRange {
  pa: bigint;
  order: number;
}

/** Position of the order bit for an order-0 page: 64 - PAGE_SHIFT. */
export const KHO_ORDER_0_LOG2 = 64 - PAGE_SHIFT;
const TABLE_SIZE_LOG2 = 9;
const TABLE_ENTRIES = 1 << TABLE_SIZE_LOG2;
const BITMAP_SIZE_LOG2 = PAGE_SHIFT + 3;
/** Five table levels above the bitmap level: DIV_ROUND_UP(52 - 15 + 1, 9) + 1. */
export const KHO_TREE_MAX_DEPTH = Math.ceil((KHO_ORDER_0_LOG2 - BITMAP_SIZE_LOG2 + 1) / TABLE_SIZE_LOG2) + 1;
const ROOT_LEVEL = KHO_TREE_MAX_DEPTH - 1;
/** Bounds the memory a corrupt tree full of set bits can make a decoder use. */
export const DEFAULT_MAX_PRESERVED_RANGES = 1 << 24;

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

export interface RadixWalkOptions {
  maxRanges?: number;
}

/**
 * `blocks` preserved blocks of one order back to back: [pa, pa + blocks * 2^order pages).
 * A walk reports maximal runs, so a fully preserved 1 GiB of 4 KiB pages is one run.
 */
export interface PreservedRun {
  order: number;
  pa: bigint;
  blocks: number;
}

/**
 * Receives one run of a walk. `first` is the index of the run's first block,
 * pa >> (12 + order): below 2^52, so exact as a number. Runs arrive in key order (larger
 * orders first, then by address), merged across bitmap words and leaves.
 */
export type RadixRunVisitor = (order: number, first: number, blocks: number) => void;

/** The address of block `first` of `order` (see RadixRunVisitor). */
export function runPa(order: number, first: number): bigint {
  return BigInt(first) << BigInt(PAGE_SHIFT + order);
}

const BITMAP_WORDS = PAGE_SIZE / 4;
const BITMAP_BITS = 1 << BITMAP_SIZE_LOG2;
/** Every bit of a leaf can be a transition; plus the slots leafTransitions writes ahead. */
const TRANSITIONS_CAPACITY = BITMAP_BITS + 2;
/**
 * One leaf's transitions, shared by every walk. A module-level array is a constant to
 * V8: it embeds its address in the scanning and pairing loops instead of checking the
 * array's map and reloading its length and data pointer on every run, which cost a
 * third of the pairing loop (the visitor's stores could have changed them, as far as
 * V8 knows). A walk started from inside a visitor saves and restores it (walkDepth).
 */
const TRANSITIONS = new Int32Array(TRANSITIONS_CAPACITY);
/** Walks in progress: more than one when a visitor starts another walk. */
let walkDepth = 0;
/** Keys at or above this have an order bit above bit 52: no page order. */
const FIRST_INVALID_KEY = 1n << BigInt(KHO_ORDER_0_LOG2 + 1);
const FULL_LEAF = Buffer.alloc(PAGE_SIZE, 0xff);
const MAX_SAFE_PA = 1n << 53n;
/** Leaves read with one request when they sit back to back: 256 KiB. */
const LEAF_BATCH = 64;
/** Bitmap words are read as host int32s: right on little-endian hosts (as KHO is); others go bit by bit. */
const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * Walks the tree at `rootPa` and reports preserved memory as runs (RadixRunVisitor), the
 * form that scales: a terabyte of 4 KiB pages is 2^28 blocks but a handful of runs.
 * Checks everything walkRadixTree does: a zero root, a misaligned pointer, a node that
 * is not readable, a page reached twice (a cycle or shared subtree), a key with no valid
 * order. Returns the physical addresses of the tree's own pages, in walk order.
 */
export function walkRadixTreeRuns(memory: PhysicalMemory, rootPa: bigint, visit: RadixRunVisitor): bigint[] {
  if (!leafTransitionsPrimed) {
    primeLeafTransitions();
    leafTransitionsPrimed = true;
  }
  // Node pages as numbers below 2^53 (all real ones), so the hot path needs no bigints.
  // Seen pages by frame number (small integers hash faster than addresses above 2^31).
  const seen = new Set<number | bigint>();
  const nodePages: (number | bigint)[] = [];
  const key = (pa: bigint): number | bigint => (pa < MAX_SAFE_PA ? Number(pa) : pa);
  const frame = (pa: bigint): number | bigint => (pa < MAX_SAFE_PA ? Number(pa) / PAGE_SIZE : pa);
  // Reused buffers (a walk reads thousands of pages): one page per table level, and a
  // batch of leaves, read at once when a table's leaves sit back to back in memory.
  const tablePages = Array.from({ length: KHO_TREE_MAX_DEPTH }, () => new Uint8Array(PAGE_SIZE));
  const batch = new Uint8Array(LEAF_BATCH * PAGE_SIZE);
  const leafBytes = Array.from({ length: LEAF_BATCH }, (_, i) =>
    batch.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE),
  );
  const leafWords = leafBytes.map((bytes) => new Int32Array(bytes.buffer, bytes.byteOffset, BITMAP_WORDS));
  const leafBuffers = leafBytes.map((bytes) => Buffer.from(bytes.buffer, bytes.byteOffset, PAGE_SIZE));
  // The run being built, carried across words and leaves until something breaks it.
  let runOrder = -1;
  let runFirst = 0;
  let runBlocks = 0;

  const add = (order: number, first: number, blocks: number): void => {
    if (order === runOrder && first === runFirst + runBlocks) {
      runBlocks += blocks;
      return;
    }
    if (runBlocks > 0) visit(runOrder, runFirst, runBlocks);
    runOrder = order;
    runFirst = first;
    runBlocks = blocks;
  };

  /** The checks every node gets before it is read: alignment, and no page twice. */
  const admit = (pa: bigint, structure: string, from: string): void => {
    if (pa % BigInt(PAGE_SIZE) !== 0n) throw new AbiError(structure, { pa }, `${from} is not page aligned`);
    if (seen.has(frame(pa)))
      throw new AbiError(structure, { pa }, `${from} reaches this page a second time (cycle or shared node)`);
  };
  const mark = (pa: bigint): void => {
    seen.add(frame(pa));
    nodePages.push(key(pa));
  };

  /** Bit by bit, for the two leaves whose keys are not all of one valid order. */
  const walkLeafSlowly = (bitmap: Uint8Array, leafPa: bigint, prefix: bigint): void => {
    for (let byte = 0; byte < PAGE_SIZE; byte++) {
      const bits = bitmap[byte]!;
      if (bits === 0) continue;
      for (let b = 0; b < 8; b++) {
        if ((bits & (1 << b)) === 0) continue;
        const range = rangeOfRadixKey(prefix | BigInt(byte * 8 + b), { pa: leafPa });
        add(range.order, Number(range.pa >> BigInt(PAGE_SHIFT + range.order)), 1);
      }
    }
  };

  /** A leaf already read into batch slot `slot`. */
  const scanSlot = (slot: number, leafPa: bigint, prefix: bigint): void => {
    // Key 0 and orders 38..52 share the first leaf; keys from 2^53 on are all invalid.
    if (prefix === 0n || prefix >= FIRST_INVALID_KEY || !HOST_LITTLE_ENDIAN) {
      walkLeafSlowly(leafBytes[slot]!, leafPa, prefix);
      return;
    }
    // Every key in this leaf has its order bit at the same place, above the 15 bitmap bits.
    const orderBit = bitLength(prefix) - 1;
    scanSlotOfOrder(slot, KHO_ORDER_0_LOG2 - orderBit, Number(prefix - (1n << BigInt(orderBit))));
  };

  /** A leaf in batch slot `slot` whose blocks are `leafFirst` onwards, all of `order`. */
  const scanSlotOfOrder = (slot: number, order: number, leafFirst: number): void => {
    let open = -1;
    if (runBlocks > 0) {
      if (runOrder === order && runFirst + runBlocks === leafFirst) open = runFirst;
      else visit(runOrder, runFirst, runBlocks);
      runBlocks = 0;
    }
    if (leafBuffers[slot]!.equals(FULL_LEAF)) {
      // A full leaf (2^15 blocks: 128 MiB of 4 KiB pages) only extends or opens a run.
      if (open < 0) open = leafFirst;
    } else {
      // Transitions alternate: the end of the run carried in (if any), then start, end...
      const count = leafTransitions(leafWords[slot]!, BITMAP_WORDS, open >= 0 ? 1 : 0);
      let k = 0;
      if (open >= 0 && count > 0) {
        visit(order, open, leafFirst + TRANSITIONS[0]! - open);
        open = -1;
        k = 1;
      }
      const paired = k + ((count - k) & ~1);
      visitTransitionPairs(k, paired, order, leafFirst, visit);
      if (paired < count) open = leafFirst + TRANSITIONS[paired]!;
    }
    if (open >= 0) {
      runOrder = order;
      runFirst = open;
      runBlocks = leafFirst + BITMAP_BITS - open;
    }
  };

  /** One leaf into batch slot 0, with its checks. */
  const readLeaf = (leafPa: bigint): void => {
    admit(leafPa, 'kho-radix-leaf', 'a level-1 entry');
    mark(leafPa);
    readStructInto(memory, 'kho-radix-leaf', leafPa, leafBytes[0]!);
  };

  /**
   * The leaves of a level-1 table, in entry order. Leaves at consecutive addresses
   * (entries i, i+1, ... pointing at pa, pa + 4096, ...) that pass their checks are read
   * with one request; if that fails, they are read one by one, so the error names the
   * same page as a walk reading one page at a time.
   */
  const walkLeaves = (view: DataView, prefix: bigint): void => {
    const prefixOf = (i: number): bigint => prefix | (BigInt(i) << BigInt(BITMAP_SIZE_LOG2));
    // When every key under this table has its order bit at one place (all but the first
    // table), each leaf's order and first block follow from its index, without bigints.
    const last = prefix | (BigInt(TABLE_ENTRIES - 1) << BigInt(BITMAP_SIZE_LOG2));
    const orderBit = bitLength(prefix) - 1;
    const uniform =
      prefix > 0n && last < FIRST_INVALID_KEY && HOST_LITTLE_ENDIAN && bitLength(last) - 1 === orderBit;
    const order = KHO_ORDER_0_LOG2 - orderBit;
    const tableFirst = uniform ? Number(prefix - (1n << BigInt(orderBit))) : 0;
    const scan = (slot: number, leafPa: number | bigint, i: number): void => {
      if (uniform) scanSlotOfOrder(slot, order, tableFirst + i * BITMAP_BITS);
      else scanSlot(slot, BigInt(leafPa), prefixOf(i));
    };
    /** Entry i as a number, or -1 when it is 2^53 or more (then read as a bigint). */
    const entry = (i: number): number => {
      const high = view.getUint32(i * 8 + 4, true);
      return high < 2 ** (53 - 32) ? high * 2 ** 32 + view.getUint32(i * 8, true) : -1;
    };
    const one = (pa: bigint, i: number): void => {
      readLeaf(pa);
      scan(0, pa, i);
    };
    let i = 0;
    while (i < TABLE_ENTRIES) {
      const first = entry(i);
      if (first === 0) {
        i++;
        continue;
      }
      if (first < 0) {
        one(view.getBigUint64(i * 8, true), i);
        i++;
        continue;
      }
      let n = 0;
      while (n < LEAF_BATCH && i + n < TABLE_ENTRIES) {
        const pa = entry(i + n);
        if (pa !== first + n * PAGE_SIZE || pa % PAGE_SIZE !== 0 || seen.has(pa / PAGE_SIZE)) break;
        n++;
      }
      if (n <= 1) {
        one(BigInt(first), i);
        i++;
        continue;
      }
      try {
        readStructInto(memory, 'kho-radix-leaf', BigInt(first), batch.subarray(0, n * PAGE_SIZE));
      } catch (error) {
        if (!(error instanceof AbiError)) throw error;
        for (let k = 0; k < n; k++) one(BigInt(first + k * PAGE_SIZE), i + k);
        i += n;
        continue;
      }
      for (let k = 0; k < n; k++) {
        const pa = first + k * PAGE_SIZE;
        seen.add(pa / PAGE_SIZE);
        nodePages.push(pa);
        scan(k, pa, i + k);
      }
      i += n;
    }
  };

  const walkTable = (tablePa: bigint, level: number, prefix: bigint, from: string): void => {
    admit(tablePa, 'kho-radix-node', from);
    mark(tablePa);
    const table = tablePages[level]!;
    readStructInto(memory, 'kho-radix-node', tablePa, table);
    const view = new DataView(table.buffer, table.byteOffset, table.byteLength);
    if (level === 1) {
      walkLeaves(view, prefix);
      return;
    }
    const shift = BigInt((level - 1) * TABLE_SIZE_LOG2 + BITMAP_SIZE_LOG2);
    for (let i = 0; i < TABLE_ENTRIES; i++) {
      if (view.getUint32(i * 8, true) === 0 && view.getUint32(i * 8 + 4, true) === 0) continue;
      const child = view.getBigUint64(i * 8, true);
      walkTable(
        child,
        level - 1,
        prefix | (BigInt(i) << shift),
        `entry ${i} of the level-${level} node at ${hexPa(tablePa)}`,
      );
    }
  };

  if (rootPa === 0n)
    throw new AbiError('kho-radix-node', { pa: rootPa }, 'the preserved-memory-map root is zero');
  // A walk inside a visitor would overwrite the transitions its caller is visiting.
  const outer = walkDepth > 0 ? TRANSITIONS.slice() : null;
  walkDepth++;
  try {
    walkTable(rootPa, ROOT_LEVEL, 0n, 'preserved-memory-map');
    if (runBlocks > 0) visit(runOrder, runFirst, runBlocks);
  } finally {
    walkDepth--;
    if (outer) TRANSITIONS.set(outer);
  }
  return nodePages.map((pa) => BigInt(pa));
}

/**
 * The transitions of the first `wordCount` words (a multiple of 4) of a bitmap leaf: the
 * bits where a run of set bits starts or ends, ascending, written to TRANSITIONS;
 * returns how many.
 * `previous` is the bit before the leaf (1 when a run is carried in from the previous
 * leaf, so that bit 0 set is no start). Words are host-order int32s (little-endian hosts
 * only, as KHO is); word w's transitions are `v ^ (v << 1 | last bit of word w - 1)`.
 *
 * Written for V8's optimizer:
 * - the first two transitions of a word are taken without branching (a transition that
 *   is not there writes a slot that the next one overwrites), so the common word of a
 *   fragmented map (zero to two transitions) costs no mispredicted branch, which a test
 *   per word and per transition did (a third of the time of a walk); four words per
 *   iteration let the CPU overlap their work;
 * - after the loop there is only `return n`: the first call is optimized on-stack in its
 *   loop, so code after it has no type feedback; Node 20 then bails out of that code on
 *   every later call that reaches such a spot (hundreds of deopts per walk).
 */
function leafTransitions(words: Int32Array, wordCount: number, previous: number): number {
  const out = TRANSITIONS;
  let n = 0;
  let last = previous;
  // Four words per iteration: fewer loop tests, and the words' work interleaves.
  for (let w = 0; w < wordCount; w += 4) {
    const v0 = words[w]!;
    const v1 = words[w + 1]!;
    const v2 = words[w + 2]!;
    const v3 = words[w + 3]!;
    let t = v0 ^ ((v0 << 1) | last);
    // 31 - clz32(lowest set bit) is its index; `top` adds the word's first bit.
    let top = (w << 5) + 31;
    out[n] = top - Math.clz32(t & -t);
    n += (t | -t) >>> 31;
    t &= t - 1;
    out[n] = top - Math.clz32(t & -t);
    n += (t | -t) >>> 31;
    t &= t - 1;
    while (t !== 0) {
      out[n++] = top - Math.clz32(t & -t);
      t &= t - 1;
    }
    t = v1 ^ ((v1 << 1) | (v0 >>> 31));
    top += 32;
    out[n] = top - Math.clz32(t & -t);
    n += (t | -t) >>> 31;
    t &= t - 1;
    out[n] = top - Math.clz32(t & -t);
    n += (t | -t) >>> 31;
    t &= t - 1;
    while (t !== 0) {
      out[n++] = top - Math.clz32(t & -t);
      t &= t - 1;
    }
    t = v2 ^ ((v2 << 1) | (v1 >>> 31));
    top += 32;
    out[n] = top - Math.clz32(t & -t);
    n += (t | -t) >>> 31;
    t &= t - 1;
    out[n] = top - Math.clz32(t & -t);
    n += (t | -t) >>> 31;
    t &= t - 1;
    while (t !== 0) {
      out[n++] = top - Math.clz32(t & -t);
      t &= t - 1;
    }
    t = v3 ^ ((v3 << 1) | (v2 >>> 31));
    top += 32;
    out[n] = top - Math.clz32(t & -t);
    n += (t | -t) >>> 31;
    t &= t - 1;
    out[n] = top - Math.clz32(t & -t);
    n += (t | -t) >>> 31;
    t &= t - 1;
    while (t !== 0) {
      out[n++] = top - Math.clz32(t & -t);
      t &= t - 1;
    }
    last = v3 >>> 31;
  }
  return n;
}

/**
 * Runs leafTransitions a few dozen times on a small synthetic bitmap that takes every
 * path in it (a word with more than two transitions, a run carried in, a run left open),
 * so that V8 has type feedback for all of its code before it optimizes it (V8 allocates
 * a function's feedback vector only after several calls, hence not once). Without this
 * the first real leaves decide: V8 compiles the loop on-stack from the feedback they
 * left, and Node 20 keeps re-entering that on-stack code after it bails out for missing
 * feedback, so a path those leaves did not take bails out on every later leaf that
 * takes it (up to 1669 deopts in one benchmark run, each costing more than a leaf's
 * scan). visitTransitionPairs needs none: its loop body is all one path, and priming
 * its visitor call with a stand-in would make V8 compile in the stand-in instead.
 */
function primeLeafTransitions(): void {
  const words = Int32Array.of(0x0f0f0f0f, -1, 0, -1 << 4);
  for (let i = 0; i < 32; i++) leafTransitions(words, words.length, i & 1);
}
let leafTransitionsPrimed = false;

/** One run per pair of TRANSITIONS [from, to): blocks leafFirst + start up to leafFirst + end. */
function visitTransitionPairs(
  from: number,
  to: number,
  order: number,
  leafFirst: number,
  visit: RadixRunVisitor,
): void {
  for (let k = from; k < to; k += 2) {
    const start = TRANSITIONS[k]!;
    visit(order, leafFirst + start, TRANSITIONS[k + 1]! - start);
  }
}

/**
 * Visits every preserved block in the tree at `rootPa`, in key order (larger orders
 * first, then by address). Throws AbiError for a zero or misaligned pointer, a node that
 * is not readable, a page reached twice (a cycle or shared subtree), a key with no valid
 * order, or more than `maxRanges` blocks.
 * Returns the physical addresses of the tree's own pages.
 */
export function walkRadixTree(
  memory: PhysicalMemory,
  rootPa: bigint,
  visit: (range: PreservedRange) => void,
  options: RadixWalkOptions = {},
): bigint[] {
  const maxRanges = options.maxRanges ?? DEFAULT_MAX_PRESERVED_RANGES;
  let visited = 0;
  return walkRadixTreeRuns(memory, rootPa, (order, first, blocks) => {
    if (visited + blocks > maxRanges) {
      const pa = runPa(order, first + (maxRanges - visited));
      throw new AbiError('kho-radix-leaf', { pa }, `more than ${maxRanges} preserved blocks`);
    }
    visited += blocks;
    const shift = BigInt(PAGE_SHIFT + order);
    for (let i = 0; i < blocks; i++) visit({ pa: BigInt(first + i) << shift, order });
  });
}

/** All preserved blocks of the tree at `rootPa`, and the tree's own pages. */
export function decodeRadixTree(
  memory: PhysicalMemory,
  rootPa: bigint,
  options: RadixWalkOptions = {},
): { ranges: PreservedRange[]; nodePages: bigint[] } {
  const ranges: PreservedRange[] = [];
  const nodePages = walkRadixTree(memory, rootPa, (range) => ranges.push(range), options);
  return { ranges, nodePages };
}

export interface PreservedSummary {
  blocks: number;
  bytes: bigint;
  byOrder: { order: number; blocks: number; bytes: bigint }[];
}

/** Counts and bytes per order, for `luoctl inspect`. */
export function summarizePreserved(ranges: Iterable<PreservedRange>): PreservedSummary {
  const byOrder = new Map<number, { order: number; blocks: number; bytes: bigint }>();
  let blocks = 0;
  let bytes = 0n;
  for (const range of ranges) {
    const size = rangeBytes(range);
    const entry = byOrder.get(range.order) ?? { order: range.order, blocks: 0, bytes: 0n };
    entry.blocks++;
    entry.bytes += size;
    byOrder.set(range.order, entry);
    blocks++;
    bytes += size;
  }
  return { blocks, bytes, byOrder: [...byOrder.values()].sort((a, b) => a.order - b.order) };
}

/** The runs of one order in a PreservedMemoryMap: ascending, disjoint and maximal. */
export interface OrderRuns {
  readonly order: number;
  readonly runs: RunList;
}

/**
 * Preserved blocks indexed by start address: what the next kernel knows after it has
 * walked the tree (kho_restore_folio() and friends accept only the head of a block).
 * Held as runs per order, so a map of 2^28 pages costs a few runs, not 2^28 entries.
 */
export class PreservedMemoryMap {
  /** Ascending by order. */
  private readonly orders: OrderRuns[];
  private given: readonly PreservedRange[] | undefined;
  /** Block heads exactly as given to the constructor, which accepts any range, aligned or not. */
  private readonly heads: Map<bigint, number> | undefined;
  /** Preserved blocks, all orders. */
  readonly blockCount: number;

  /**
   * From individual blocks in any order (duplicates count once), as tests and small
   * handovers have them; orderAt() then answers for exactly these heads.
   */
  constructor(ranges: Iterable<PreservedRange> | { runs: OrderRuns[] }) {
    if ('runs' in ranges) {
      this.orders = ranges.runs;
    } else {
      const given = [...ranges];
      this.given = given;
      this.heads = new Map(given.map((range) => [range.pa, range.order]));
      const byOrder = new Map<number, number[]>();
      for (const range of given) {
        const list = byOrder.get(range.order) ?? [];
        list.push(Number(range.pa >> BigInt(PAGE_SHIFT + range.order)));
        byOrder.set(range.order, list);
      }
      const builder = new PreservedMapBuilder();
      for (const order of [...byOrder.keys()].sort((x, y) => y - x)) {
        const firsts = byOrder.get(order)!.sort((x, y) => x - y);
        firsts.forEach((first, i) => {
          if (i === 0 || first !== firsts[i - 1]) builder.add(order, first, 1);
        });
      }
      this.orders = builder.orderRuns();
    }
    this.blockCount = this.orders.reduce((n, o) => n + o.runs.totalBlocks, 0);
  }

  /** Collects a walk's runs (walkRadixTreeRuns) into a map, without listing single blocks. */
  static collect(): { visit: RadixRunVisitor; finish(): PreservedMemoryMap } {
    const builder = new PreservedMapBuilder();
    return {
      visit: (order, first, blocks) => builder.add(order, first, blocks),
      finish: () => new PreservedMemoryMap({ runs: builder.orderRuns() }),
    };
  }

  /** Every block, larger orders first then by address; built on first use (a large map has many). */
  get ranges(): readonly PreservedRange[] {
    if (!this.given) {
      const ranges: PreservedRange[] = [];
      for (const { order, runs } of [...this.orders].reverse()) {
        const shift = BigInt(PAGE_SHIFT + order);
        for (let i = 0; i < runs.length; i++) {
          const first = runs.firstAt(i);
          const blocks = runs.blocksAt(i);
          for (let b = 0; b < blocks; b++) ranges.push({ pa: BigInt(first + b) << shift, order });
        }
      }
      this.given = ranges;
    }
    return this.given;
  }

  /**
   * The order of the block starting at `pa`, or undefined if no block starts there. When
   * blocks of several orders start there, a walked map answers the smallest.
   */
  orderAt(pa: bigint): number | undefined {
    if (this.heads) return this.heads.get(pa);
    for (const { order, runs } of this.orders) {
      const size = BigInt(PAGE_SIZE) << BigInt(order);
      if (pa % size !== 0n) continue;
      const index = Number(pa / size);
      let low = 0;
      let high = runs.length;
      while (low < high) {
        const mid = (low + high) >>> 1;
        if (runs.firstAt(mid) + runs.blocksAt(mid) <= index) low = mid + 1;
        else high = mid;
      }
      if (low < runs.length && runs.firstAt(low) <= index) return order;
    }
    return undefined;
  }

  /** Orders present, ascending, with their block and run counts. */
  orderSummaries(): { order: number; blocks: number; runs: number }[] {
    return this.orders.map(({ order, runs }) => ({ order, blocks: runs.totalBlocks, runs: runs.length }));
  }

  /** Runs of every order, ascending by order then address; stop early by returning false. */
  forEachRun(visit: (run: PreservedRun) => boolean | undefined): void {
    for (const { order, runs } of this.orders) {
      for (let i = 0; i < runs.length; i++) {
        if (visit({ order, pa: runPa(order, runs.firstAt(i)), blocks: runs.blocksAt(i) }) === false) return;
      }
    }
  }

  /**
   * Pairs of blocks that share memory (the kernel reserves both; it is a sign of a bug):
   * for each pair of overlapping runs, the first pair of blocks that overlap.
   *
   * Each order's runs are already sorted, so this merges them (a sweep in address order,
   * larger orders first at one address) in page units, which are exact numbers below
   * 2^52: a map of millions of runs costs no object or bigint per run.
   */
  overlaps(): [PreservedRange, PreservedRange][] {
    const orders = this.orders;
    const count = orders.length;
    const found: [PreservedRange, PreservedRange][] = [];
    if (count === 0) return found;
    const pages = Float64Array.from(orders, ({ order }) => 2 ** order);
    const next = new Int32Array(count);
    /** Per order, the start (in pages) of its next run; Infinity once all are taken. */
    const heads = new Float64Array(count);
    const advance = (o: number): void => {
      const { runs } = orders[o]!;
      heads[o] = next[o]! < runs.length ? runs.firstAt(next[o]!) * pages[o]! : Number.POSITIVE_INFINITY;
    };
    for (let o = 0; o < count; o++) advance(o);
    // The run reaching furthest so far, in pages: its start, end and order.
    let widestStart = 0;
    let widestEnd = -1;
    let widestOrder = -1;
    for (;;) {
      // The next run: the lowest start, the larger order first at one start.
      let pick = count - 1;
      for (let o = count - 2; o >= 0; o--) if (heads[o]! < heads[pick]!) pick = o;
      if (heads[pick] === Number.POSITIVE_INFINITY) return found;
      // The picked order keeps its turn while its runs start before every other head
      // (larger orders win a tie): usually for long stretches.
      let beforeHigher = Number.POSITIVE_INFINITY;
      for (let o = pick + 1; o < count; o++) beforeHigher = Math.min(beforeHigher, heads[o]!);
      let notAfterLower = Number.POSITIVE_INFINITY;
      for (let o = 0; o < pick; o++) notAfterLower = Math.min(notAfterLower, heads[o]!);
      const { order, runs } = orders[pick]!;
      const size = pages[pick]!;
      let at = next[pick]!;
      while (at < runs.length) {
        const start = runs.firstAt(at) * size;
        if (start >= beforeHigher || start > notAfterLower) break;
        const end = start + runs.blocksAt(at) * size;
        at++;
        if (start < widestEnd) {
          const widestSize = 2 ** widestOrder;
          const outer = widestStart + Math.floor((start - widestStart) / widestSize) * widestSize;
          found.push([
            { pa: BigInt(outer) << BigInt(PAGE_SHIFT), order: widestOrder },
            { pa: BigInt(start) << BigInt(PAGE_SHIFT), order },
          ]);
        }
        if (end > widestEnd) {
          widestStart = start;
          widestEnd = end;
          widestOrder = order;
        }
      }
      next[pick] = at;
      advance(pick);
    }
  }
}

/** Gathers runs per order, merging adjacent ones; runs of one order must come in address order. */
class PreservedMapBuilder {
  private readonly byOrder: (RunList | undefined)[] = [];
  /** The list added to last: a walk visits one order at a time. */
  private current: RunList | undefined;
  private currentOrder = -1;

  add(order: number, first: number, blocks: number): void {
    let list = this.current;
    if (order !== this.currentOrder || list === undefined) {
      list = this.byOrder[order] ??= new RunList();
      this.current = list;
      this.currentOrder = order;
    }
    list.add(first, blocks);
  }

  orderRuns(): OrderRuns[] {
    const orders: OrderRuns[] = [];
    this.byOrder.forEach((runs, order) => {
      if (runs) orders.push({ order, runs });
    });
    return orders;
  }
}

/** Runs per chunk once a list has more than one chunk. */
const RUN_CHUNK_LOG2 = 16;
const RUN_CHUNK = 1 << RUN_CHUNK_LOG2;

/**
 * Runs of one order: the first block and the block count of each, merged as they are
 * added. A terabyte of fragmented memory is millions of runs, so they live in typed
 * arrays (no object or boxed number per run, nothing for the collector to trace) held
 * in chunks: the first grows by doubling up to RUN_CHUNK runs, then chunks of RUN_CHUNK
 * are added. Nothing is copied twice and no memory is touched beyond what the runs fill,
 * which dominated the cost of a doubling array (fresh pages for every copy).
 */
export class RunList {
  private readonly firsts: Float64Array[];
  private readonly counts: Float64Array[];
  /** The last chunk of each column, where runs are added. */
  private lastFirsts: Float64Array;
  private lastCounts: Float64Array;
  /** Runs in the last chunk. */
  private filled = 0;
  /** The block after the last run, where an adjacent run would start; -1 before any. */
  private end = -1;
  /** Runs. */
  length = 0;
  /** Blocks in all runs. */
  totalBlocks = 0;

  constructor() {
    this.lastFirsts = new Float64Array(64);
    this.lastCounts = new Float64Array(64);
    this.firsts = [this.lastFirsts];
    this.counts = [this.lastCounts];
  }

  add(first: number, blocks: number): void {
    if (first === this.end) {
      this.lastCounts[this.filled - 1]! += blocks;
    } else {
      if (this.filled === this.lastFirsts.length) this.makeRoom();
      this.lastFirsts[this.filled] = first;
      this.lastCounts[this.filled] = blocks;
      this.filled++;
      this.length++;
    }
    this.end = first + blocks;
    this.totalBlocks += blocks;
  }

  /** Index of run i's first block (pa >> (12 + order)); exact, as all are below 2^52. */
  firstAt(i: number): number {
    return this.firsts[i >>> RUN_CHUNK_LOG2]![i & (RUN_CHUNK - 1)]!;
  }

  blocksAt(i: number): number {
    return this.counts[i >>> RUN_CHUNK_LOG2]![i & (RUN_CHUNK - 1)]!;
  }

  /** The last chunk is full: doubles a lone first chunk below RUN_CHUNK, else adds one. */
  private makeRoom(): void {
    const size = this.lastFirsts.length;
    if (size < RUN_CHUNK) {
      this.lastFirsts = grown(this.lastFirsts, size * 2);
      this.lastCounts = grown(this.lastCounts, size * 2);
      this.firsts[0] = this.lastFirsts;
      this.counts[0] = this.lastCounts;
      return;
    }
    this.lastFirsts = new Float64Array(RUN_CHUNK);
    this.lastCounts = new Float64Array(RUN_CHUNK);
    this.firsts.push(this.lastFirsts);
    this.counts.push(this.lastCounts);
    this.filled = 0;
  }
}

function grown(array: Float64Array, size: number): Float64Array {
  const copy = new Float64Array(size);
  copy.set(array);
  return copy;
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
function bitLength(value: bigint): number {
  if (value >= 1n << 64n) return value.toString(2).length;
  const high = Number(value >> 32n);
  if (high !== 0) return 64 - Math.clz32(high);
  return 32 - Math.clz32(Number(value));
}
