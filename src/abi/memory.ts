/**
 * Physical memory, as the handover codecs see it.
 *
 * The KHO handover is a web of structures linked by physical addresses, so every decoder
 * reads through one small interface: `read(pa, length)`, which either returns exactly the
 * bytes at those addresses or throws an AbiError because some of them are not present.
 * The same decoders therefore work on the emulator's `memory.img` (a sparse file where
 * byte `pa` is physical address `pa`), a raw dump of a RAM range, a QEMU ELF core, or an
 * in-memory page map in tests.
 *
 * Writing goes through PhysicalMemoryWriter, which pairs writable memory with a
 * PageAllocator (page-allocator.ts): the emulator allocates every handover page through it.
 * Memory that lives in files (a dump's segments, the emulator's sparse image) is
 * memory-files.ts.
 */
import { AbiError } from './errors.js';
import { PageAllocator } from './page-allocator.js';

export const PAGE_SHIFT = 12;
/** KHO refuses to hand over between kernels with different page sizes; luokit supports 4 KiB. */
export const PAGE_SIZE = 1 << PAGE_SHIFT;

/** Physical addresses [start, end). */
export interface PhysicalRange {
  start: bigint;
  end: bigint;
}

export interface PhysicalMemory {
  /** The `length` bytes at `pa`; throws AbiError if any of them is not present. */
  read(pa: bigint, length: number): Uint8Array;
  /**
   * Optional: fills `target` with the target.byteLength bytes at `pa`, as read() would
   * return them, so a decoder reading thousands of pages can reuse one buffer.
   */
  readInto?(pa: bigint, target: Uint8Array): void;
  /** The present ranges, ascending and disjoint (for scanning a dump). */
  ranges(): PhysicalRange[];
}

export interface WritablePhysicalMemory extends PhysicalMemory {
  write(pa: bigint, bytes: Uint8Array): void;
  /** Makes [pa, pa + length) present and zero. */
  zero(pa: bigint, length: number): void;
}
/** Physical addresses stay below 2^53, where a file position is still an exact number. */
export const MAX_FILE_POSITION = BigInt(Number.MAX_SAFE_INTEGER);

/**
 * Reads a struct image at `pa`, reporting a missing byte as a problem of `structure`
 * (the memory itself only knows that some address is absent).
 */
export function readStruct(memory: PhysicalMemory, structure: string, pa: bigint, size: number): Uint8Array {
  try {
    return memory.read(pa, size);
  } catch (error) {
    if (error instanceof AbiError)
      throw new AbiError(structure, { pa }, `${size} bytes not readable: ${error.reason}`);
    throw error;
  }
}

/** readStruct into a buffer the caller reuses (PhysicalMemory.readInto when the memory has it). */
export function readStructInto(
  memory: PhysicalMemory,
  structure: string,
  pa: bigint,
  target: Uint8Array,
): void {
  try {
    if (memory.readInto) memory.readInto(pa, target);
    else target.set(memory.read(pa, target.byteLength));
  } catch (error) {
    if (error instanceof AbiError)
      throw new AbiError(structure, { pa }, `${target.byteLength} bytes not readable: ${error.reason}`);
    throw error;
  }
}

/** Throws unless `pa` is page aligned, as every page the kernel allocates for the handover is. */
export function checkPageAligned(structure: string, pa: bigint): void {
  if (pa % BigInt(PAGE_SIZE) !== 0n) throw new AbiError(structure, { pa }, 'not page aligned');
}

/** Pages held in a Map: tests, fuzzing, and building images in memory. Absent pages are not present. */
export class PagedMemory implements WritablePhysicalMemory {
  private readonly pages = new Map<bigint, Uint8Array>();

  read(pa: bigint, length: number): Uint8Array {
    checkRequest(pa, length);
    const out = new Uint8Array(length);
    this.forEachPagePart(pa, length, (pfn, inPage, at, n) => {
      const page = this.pages.get(pfn);
      if (!page) throw new AbiError('physical-memory', { pa: pfn << BigInt(PAGE_SHIFT) }, 'page not present');
      out.set(page.subarray(inPage, inPage + n), at);
    });
    return out;
  }

  write(pa: bigint, bytes: Uint8Array): void {
    checkRequest(pa, bytes.byteLength);
    this.forEachPagePart(pa, bytes.byteLength, (pfn, inPage, at, n) => {
      this.page(pfn).set(bytes.subarray(at, at + n), inPage);
    });
  }

  zero(pa: bigint, length: number): void {
    checkRequest(pa, length);
    this.forEachPagePart(pa, length, (pfn, inPage, _at, n) => {
      this.page(pfn).fill(0, inPage, inPage + n);
    });
  }

  /** Forgets the page holding `pa`, so pointers into it dangle. */
  dropPage(pa: bigint): void {
    this.pages.delete(pa >> BigInt(PAGE_SHIFT));
  }

  /** Addresses of the present pages, ascending. */
  pageAddresses(): bigint[] {
    return [...this.pages.keys()].sort(compareBigint).map((pfn) => pfn << BigInt(PAGE_SHIFT));
  }

  clone(): PagedMemory {
    const copy = new PagedMemory();
    for (const [pfn, page] of this.pages) copy.pages.set(pfn, page.slice());
    return copy;
  }

  ranges(): PhysicalRange[] {
    const ranges: PhysicalRange[] = [];
    for (const pa of this.pageAddresses()) {
      const last = ranges.at(-1);
      if (last && last.end === pa) last.end = pa + BigInt(PAGE_SIZE);
      else ranges.push({ start: pa, end: pa + BigInt(PAGE_SIZE) });
    }
    return ranges;
  }

  private page(pfn: bigint): Uint8Array {
    let page = this.pages.get(pfn);
    if (!page) {
      page = new Uint8Array(PAGE_SIZE);
      this.pages.set(pfn, page);
    }
    return page;
  }

  private forEachPagePart(
    pa: bigint,
    length: number,
    visit: (pfn: bigint, inPage: number, at: number, n: number) => void,
  ): void {
    let at = 0;
    while (at < length) {
      const here = pa + BigInt(at);
      const inPage = Number(here % BigInt(PAGE_SIZE));
      const n = Math.min(PAGE_SIZE - inPage, length - at);
      visit(here >> BigInt(PAGE_SHIFT), inPage, at, n);
      at += n;
    }
  }
}

/**
 * Writable memory plus a page allocator: how the emulator lays out a handover. Pages come
 * back zeroed, as the kernel's get_zeroed_page() and kho_alloc_preserve() give them.
 */
export class PhysicalMemoryWriter implements PhysicalMemory {
  constructor(
    readonly memory: WritablePhysicalMemory,
    readonly allocator: PageAllocator = new PageAllocator(),
  ) {}

  read(pa: bigint, length: number): Uint8Array {
    return this.memory.read(pa, length);
  }

  ranges(): PhysicalRange[] {
    return this.memory.ranges();
  }

  write(pa: bigint, bytes: Uint8Array): void {
    this.memory.write(pa, bytes);
  }

  /** `count` zeroed contiguous pages starting on a 2^alignOrder-page boundary. */
  allocPages(count: number, alignOrder = 0): bigint {
    const pa = this.allocator.alloc(count, alignOrder);
    this.memory.zero(pa, count * PAGE_SIZE);
    return pa;
  }

  freePages(pa: bigint, count: number): void {
    this.allocator.free(pa, count);
  }
}

/** Throws AbiError for an address or length no physical memory can have. */
export function checkRequest(pa: bigint, length: number): void {
  if (typeof pa !== 'bigint' || pa < 0n)
    throw new AbiError('physical-memory', {}, `bad physical address ${String(pa)}`);
  if (!Number.isSafeInteger(length) || length < 0) {
    throw new AbiError('physical-memory', { pa }, `bad length ${length}`);
  }
  if (pa + BigInt(length) > MAX_FILE_POSITION) {
    throw new AbiError('physical-memory', { pa }, 'address beyond what luokit can address (2^53)');
  }
}

function compareBigint(a: bigint, b: bigint): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
