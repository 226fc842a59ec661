/**
 * A data pattern that is cheap to write at GB/s and still makes byte-for-byte
 * verification meaningful.
 *
 * One 64 MiB buffer of pseudo-random bytes is made once. Chunk `c` of a file
 * is that buffer with a 16-byte header stamped on every 4 KiB page:
 * `u32 magic, u32 c, u64 absolute offset of the page` (native endianness).
 * So every page of the file is distinct: a page copied to the wrong place, a
 * folio dropped, duplicated or reordered, a zero page or a truncated file all
 * fail verification, and writing the pattern costs one pwrite per 64 MiB
 * plus 16K small stores to re-stamp the headers.
 *
 * Used by the benchmarks (bench/) and by the example VMM (--fill). The
 * real-kernel bench's C floor (test/vm/floor/luo_floor.c) writes the same
 * bytes; test/vm/blackout.test.ts holds the two to it.
 */
import * as fs from 'node:fs';
import { pwriteAll } from '../sys/file.js';

export const PATTERN_CHUNK = 64 << 20;
export const PATTERN_PAGE = 4096;
const MAGIC = 0x424f554c; // "LUOB" little-endian
const WORDS_PER_PAGE = PATTERN_PAGE / 4;

export class Pattern {
  readonly chunkBytes: number;
  readonly #buffer: Buffer;
  readonly #words: Uint32Array;
  #stamped = -1;

  constructor(chunkBytes = PATTERN_CHUNK, seed = 0x2545f491) {
    if (chunkBytes <= 0 || chunkBytes % PATTERN_PAGE !== 0) {
      throw new Error(`pattern chunk must be a positive multiple of ${PATTERN_PAGE}, got ${chunkBytes}`);
    }
    this.chunkBytes = chunkBytes;
    this.#buffer = Buffer.allocUnsafe(chunkBytes);
    this.#words = new Uint32Array(this.#buffer.buffer, this.#buffer.byteOffset, chunkBytes / 4);
    // xorshift32: fast, non-periodic over 64 MiB, and the same on every run.
    let x = seed >>> 0 || 1;
    const words = this.#words;
    for (let i = 0; i < words.length; i++) {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      words[i] = x;
    }
  }

  /** The bytes of chunk `index` in full; valid until the next call to `chunk`. */
  chunk(index: number): Buffer {
    if (this.#stamped !== index) {
      const words = this.#words;
      const base = index * this.chunkBytes;
      for (let w = 0, page = 0; w < words.length; w += WORDS_PER_PAGE, page++) {
        const offset = base + page * PATTERN_PAGE;
        words[w] = MAGIC;
        words[w + 1] = index;
        words[w + 2] = offset >>> 0;
        words[w + 3] = Math.floor(offset / 2 ** 32);
      }
      this.#stamped = index;
    }
    return this.#buffer;
  }

  /** The expected bytes of file range [offset, offset + length), within one chunk. */
  expected(offset: number, length: number): Buffer {
    const index = Math.floor(offset / this.chunkBytes);
    const inChunk = offset - index * this.chunkBytes;
    if (inChunk + length > this.chunkBytes) throw new Error('expected(): range crosses a chunk boundary');
    return this.chunk(index).subarray(inChunk, inChunk + length);
  }

  /** Write `size` bytes of the pattern to `fd` from offset 0. */
  writeTo(fd: number, size: number): void {
    for (let offset = 0, index = 0; offset < size; offset += this.chunkBytes, index++) {
      const length = Math.min(this.chunkBytes, size - offset);
      pwriteAll(fd, this.chunk(index).subarray(0, length), offset);
    }
  }

  /**
   * The expected bytes of the page at `offset` (page-aligned) copied into `into` (one page),
   * without re-stamping the whole chunk: a writer that rewrites random pages with their own
   * pattern bytes (the example VMM's vCPU with `--verify pattern`) costs one page copy each.
   */
  pageInto(offset: number, into: Buffer): Buffer {
    if (offset % PATTERN_PAGE !== 0 || into.length < PATTERN_PAGE)
      throw new Error(`pageInto(): offset ${offset} is not page-aligned or the buffer is under a page`);
    const index = Math.floor(offset / this.chunkBytes);
    const inChunk = offset - index * this.chunkBytes;
    // Bytes 16.. of a page are the same in every chunk; the header is this page's own.
    this.#buffer.copy(into, 0, inChunk, inChunk + PATTERN_PAGE);
    const header = new Uint32Array([MAGIC, index, offset >>> 0, Math.floor(offset / 2 ** 32)]);
    Buffer.from(header.buffer).copy(into, 0);
    return into;
  }

  /**
   * Check every byte of `fd` in [from, to) (the file is `size` bytes) against the pattern,
   * one whole chunk per read and one Buffer comparison each; throws at the first difference.
   */
  verifyAll(fd: number, size: number, from = 0, to = size): void {
    checkSize(fd, size);
    const end = Math.min(to, size);
    const scratch = Buffer.allocUnsafe(Math.min(this.chunkBytes, Math.max(end - from, 1)));
    for (let offset = from; offset < end; ) {
      const chunkEnd = (Math.floor(offset / this.chunkBytes) + 1) * this.chunkBytes;
      const length = Math.min(chunkEnd, end) - offset;
      readFully(fd, scratch, length, offset);
      compare(scratch.subarray(0, length), this.expected(offset, length), offset);
      offset += length;
    }
  }

  /**
   * Check `pages` pages spread over the file (always the first and the last,
   * the rest at a fixed stride with a deterministic jitter), plus the size.
   */
  verifySample(fd: number, size: number, pages = 4096): number {
    checkSize(fd, size);
    const total = Math.ceil(size / PATTERN_PAGE);
    const picks = new Set<number>([0, total - 1]);
    const stride = Math.max(1, Math.floor(total / pages));
    let jitter = 0x9e3779b9;
    for (let p = 0; p < total && picks.size < pages; p += stride) {
      jitter = (Math.imul(jitter, 1664525) + 1013904223) >>> 0;
      picks.add(Math.min(total - 1, p + (jitter % stride)));
    }
    const scratch = Buffer.allocUnsafe(PATTERN_PAGE);
    // Ascending, so each chunk is stamped once.
    for (const page of [...picks].sort((a, b) => a - b)) {
      const offset = page * PATTERN_PAGE;
      const length = Math.min(PATTERN_PAGE, size - offset);
      readFully(fd, scratch, length, offset);
      compare(scratch.subarray(0, length), this.expected(offset, length), offset);
    }
    return picks.size;
  }
}

function checkSize(fd: number, size: number): void {
  const actual = fs.fstatSync(fd).size;
  if (actual !== size) throw new Error(`verification: the file is ${actual} bytes, expected ${size}`);
}

function readFully(fd: number, into: Buffer, length: number, position: number): void {
  let done = 0;
  while (done < length) {
    const n = fs.readSync(fd, into, done, length - done, position + done);
    if (n === 0) throw new Error(`verification: end of file at ${position + done}, expected ${length} bytes`);
    done += n;
  }
}

function compare(actual: Buffer, expected: Buffer, offset: number): void {
  if (actual.equals(expected)) return;
  let i = 0;
  while (actual[i] === expected[i]) i++;
  const at = offset + i;
  const page = Math.floor(at / PATTERN_PAGE) * PATTERN_PAGE;
  const header = actual.subarray(page - offset, page - offset + 16).toString('hex');
  throw new Error(
    `verification: first difference at byte ${at} (0x${at.toString(16)}): ` +
      `got 0x${actual[i]!.toString(16)}, expected 0x${expected[i]!.toString(16)}; that page's header is ${header}`,
  );
}
