/**
 * Reading KHO's radix tree (kho-radix.ts has the format): the walk the next kernel does
 * in early boot, as luoctl inspect must do it over a dump of any size.
 *
 * walkRadixTreeRuns is the engine: it reports maximal runs rather than blocks and reads
 * leaves in batches, because a terabyte of preserved 4 KiB pages is 2^28 blocks but a
 * handful of runs. walkRadixTree and decodeRadixTree give single blocks, for tests and
 * small handovers. Every walk checks what a corrupt or hostile tree can do: a cycle, a
 * shared subtree, a misaligned pointer, an unreadable node, a key with no page order.
 */
import { AbiError, hexPa } from './errors.js';
import {
  BITMAP_SIZE_LOG2,
  bitLength,
  KHO_ORDER_0_LOG2,
  KHO_TREE_MAX_DEPTH,
  type PreservedRange,
  ROOT_LEVEL,
  rangeOfRadixKey,
  TABLE_ENTRIES,
  TABLE_SIZE_LOG2,
} from './kho-radix.js';
import { PAGE_SHIFT, PAGE_SIZE, type PhysicalMemory, readStructInto } from './memory.js';

/** Bounds the memory a corrupt tree full of set bits can make a decoder use. */
export const DEFAULT_MAX_PRESERVED_RANGES = 1 << 24;

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
