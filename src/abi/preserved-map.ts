/**
 * What the next kernel knows once it has walked KHO's radix tree: preserved blocks indexed
 * by address, held as runs per order (a map of 2^28 pages costs a few runs, not 2^28
 * entries), with the queries luoctl inspect needs (the block at an address, overlaps,
 * per-order summaries).
 */
import { type PreservedRange, rangeBytes } from './kho-radix.js';
import { type PreservedRun, type RadixRunVisitor, runPa } from './kho-radix-walk.js';
import { PAGE_SHIFT, PAGE_SIZE } from './memory.js';

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
