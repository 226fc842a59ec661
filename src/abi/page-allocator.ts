/**
 * The emulated kernel's physical page allocator.
 *
 * Its whole state is the set of busy ranges, so it can be rebuilt at any time: an
 * emulated boot starts from the incoming handover's preserved ranges (the pages the
 * previous kernel asked KHO to keep, which the real kernel memblock_reserve()s), and from
 * then on every page it hands out or frees updates the set. Allocation is first fit,
 * upward from `base` (16 MiB by default, clear of the low memory real firmware and
 * kernels occupy), so addresses are stable for a given history and freed pages are
 * reused lowest first instead of the image growing without end.
 */
import { AbiError, hexPa } from './errors.js';
import type { PhysicalRange } from './memory.js';

export const DEFAULT_ALLOCATION_BASE = 16n << 20n;
/** x86_64 and arm64 physical addresses fit in 52 bits. */
export const DEFAULT_ALLOCATION_LIMIT = 1n << 52n;

const PAGE_BYTES = 4096n;
const STRUCTURE = 'page-allocator';

export interface PageAllocatorOptions {
  /** Lowest address handed out; page aligned. */
  base?: bigint;
  /** One past the highest address handed out. */
  limit?: bigint;
  /** Ranges already in use, e.g. the incoming handover's preserved memory. */
  busy?: Iterable<PhysicalRange>;
}

export class PageAllocator {
  readonly base: bigint;
  readonly limit: bigint;
  /** Sorted, disjoint, with touching ranges merged. */
  private readonly busy: PhysicalRange[] = [];

  constructor(options: PageAllocatorOptions = {}) {
    this.base = options.base ?? DEFAULT_ALLOCATION_BASE;
    this.limit = options.limit ?? DEFAULT_ALLOCATION_LIMIT;
    if (this.base % PAGE_BYTES !== 0n || this.base < 0n || this.limit <= this.base) {
      throw new AbiError(STRUCTURE, {}, `bad window [${hexPa(this.base)}, ${hexPa(this.limit)})`);
    }
    for (const range of options.busy ?? []) this.markBusy(range.start, range.end - range.start);
  }

  /** `count` contiguous pages whose first address is a multiple of 2^alignOrder pages. */
  alloc(count: number, alignOrder = 0): bigint {
    if (!Number.isSafeInteger(count) || count < 1)
      throw new AbiError(STRUCTURE, {}, `bad page count ${count}`);
    if (!Number.isInteger(alignOrder) || alignOrder < 0 || alignOrder > 40) {
      throw new AbiError(STRUCTURE, {}, `bad alignment order ${alignOrder}`);
    }
    const size = BigInt(count) * PAGE_BYTES;
    const align = PAGE_BYTES << BigInt(alignOrder);
    let candidate = alignUp(this.base, align);
    for (let i = this.firstEndingAfter(candidate); i < this.busy.length; i++) {
      const range = this.busy[i]!;
      if (candidate + size <= range.start) break;
      if (range.end > candidate) candidate = alignUp(range.end, align);
    }
    if (candidate + size > this.limit) {
      throw new AbiError(STRUCTURE, {}, `no room for ${count} pages below ${hexPa(this.limit)}`);
    }
    this.markBusy(candidate, size);
    return candidate;
  }

  /** Returns pages to the allocator; they must all be busy. */
  free(pa: bigint, count: number): void {
    const end = pa + BigInt(count) * PAGE_BYTES;
    const i = this.firstEndingAfter(pa);
    const range = this.busy[i];
    if (!range || range.start > pa || range.end < end) {
      throw new AbiError(STRUCTURE, { pa }, `freeing ${count} pages that are not all allocated`);
    }
    const pieces: PhysicalRange[] = [];
    if (range.start < pa) pieces.push({ start: range.start, end: pa });
    if (end < range.end) pieces.push({ start: end, end: range.end });
    this.busy.splice(i, 1, ...pieces);
  }

  /** Marks [pa, pa + size) busy (rounded out to whole pages); overlapping what is busy is fine. */
  markBusy(pa: bigint, size: bigint): void {
    if (size <= 0n) return;
    let start = pa - (pa % PAGE_BYTES);
    let end = alignUp(pa + size, PAGE_BYTES);
    const i = this.firstEndingAfter(start - 1n);
    let remove = 0;
    while (i + remove < this.busy.length && this.busy[i + remove]!.start <= end) {
      const range = this.busy[i + remove]!;
      if (range.start < start) start = range.start;
      if (range.end > end) end = range.end;
      remove++;
    }
    this.busy.splice(i, remove, { start, end });
  }

  busyRanges(): readonly PhysicalRange[] {
    return this.busy.map((r) => ({ ...r }));
  }

  /** Index of the first busy range whose end is beyond `pa` (binary search). */
  private firstEndingAfter(pa: bigint): number {
    let low = 0;
    let high = this.busy.length;
    while (low < high) {
      const mid = (low + high) >> 1;
      if (this.busy[mid]!.end <= pa) low = mid + 1;
      else high = mid;
    }
    return low;
  }
}

function alignUp(value: bigint, align: bigint): bigint {
  const rest = value % align;
  return rest === 0n ? value : value + align - rest;
}
