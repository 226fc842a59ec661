/**
 * Physical memory that lives in files: a dump's segments (a raw RAM range, a QEMU ELF
 * core) read through one fd, and the emulator's `memory.img`, a sparse file where byte
 * `pa` is physical address `pa`. Both answer memory.ts's PhysicalMemory interface, so
 * every decoder reads them as it reads pages in a test.
 */
import { closeSync, constants, fstatSync, ftruncateSync, openSync, readSync, writeSync } from 'node:fs';
import { elfCoreSegments, type FileSegment } from './elf-core.js';
import { AbiError, hexPa } from './errors.js';
import {
  checkRequest,
  type PhysicalMemory,
  type PhysicalRange,
  type WritablePhysicalMemory,
} from './memory.js';

const ZERO_CHUNK = new Uint8Array(1 << 20);

/** Memory read from file segments (a raw dump, an ELF core) through one open fd. */
export class FileSegmentMemory implements PhysicalMemory {
  protected constructor(
    protected readonly fd: number,
    protected readonly segments: FileSegment[],
    private readonly structure: string,
  ) {}

  /** A raw dump whose byte 0 is physical address `base`. */
  static openRawDump(path: string, base = 0n): FileSegmentMemory {
    const fd = openSync(path, 'r');
    const size = BigInt(fstatSync(fd).size);
    return new FileSegmentMemory(
      fd,
      size > 0n ? [{ start: base, end: base + size, fileOffset: 0 }] : [],
      'raw-dump',
    );
  }

  /** A QEMU `dump-guest-memory` ELF core; see elf-core.ts. */
  static openElfCore(path: string): FileSegmentMemory {
    const fd = openSync(path, 'r');
    try {
      const fileSize = fstatSync(fd).size;
      const segments = elfCoreSegments(
        (offset, length) => readFile(fd, offset, length, 'elf-core'),
        fileSize,
      );
      return new FileSegmentMemory(fd, segments, 'elf-core');
    } catch (error) {
      closeSync(fd);
      throw error;
    }
  }

  read(pa: bigint, length: number): Uint8Array {
    checkRequest(pa, length);
    const out = new Uint8Array(length);
    this.readInto(pa, out);
    return out;
  }

  readInto(pa: bigint, out: Uint8Array): void {
    const length = out.byteLength;
    checkRequest(pa, length);
    let at = 0;
    while (at < length) {
      const here = pa + BigInt(at);
      const segment = this.segments.find((s) => s.start <= here && here < s.end);
      if (!segment) throw new AbiError(this.structure, { pa: here }, 'address not present in the dump');
      const n = Number(bigMin(segment.end - here, BigInt(length - at)));
      readFile(
        this.fd,
        segment.fileOffset + Number(here - segment.start),
        n,
        this.structure,
        out.subarray(at, at + n),
      );
      at += n;
    }
  }

  ranges(): PhysicalRange[] {
    return this.segments.map((s) => ({ start: s.start, end: s.end }));
  }

  close(): void {
    closeSync(this.fd);
  }
}

/**
 * The emulator's `memory.img`: a sparse file where byte `pa` is physical address `pa`.
 * Everything below the file's end is present (holes read as zero); growing the file with
 * ftruncate keeps new pages sparse until they are written.
 */
export class SparseFileMemory implements WritablePhysicalMemory {
  private constructor(
    /** The image's fd, for copying page contents in with copy_file_range(). */
    readonly fd: number,
    private end: bigint,
    private readonly ownsFd: boolean,
  ) {}

  /** Read-only by default; `writable` opens read-write and creates the file if it is missing. */
  static open(path: string, options: { writable?: boolean } = {}): SparseFileMemory {
    const fd = openSync(
      path,
      options.writable ? constants.O_RDWR | constants.O_CREAT : constants.O_RDONLY,
      0o600,
    );
    return new SparseFileMemory(fd, BigInt(fstatSync(fd).size), true);
  }

  /** Uses an fd the caller keeps owning (close() leaves it open). */
  static fromFd(fd: number): SparseFileMemory {
    return new SparseFileMemory(fd, BigInt(fstatSync(fd).size), false);
  }

  read(pa: bigint, length: number): Uint8Array {
    checkRequest(pa, length);
    const out = new Uint8Array(length);
    this.readInto(pa, out);
    return out;
  }

  readInto(pa: bigint, target: Uint8Array): void {
    const length = target.byteLength;
    checkRequest(pa, length);
    if (pa + BigInt(length) > this.end) {
      throw new AbiError(
        'memory-image',
        { pa },
        `${length} bytes run past the end of memory (${hexPa(this.end)})`,
      );
    }
    readFile(this.fd, Number(pa), length, 'memory-image', target);
  }

  write(pa: bigint, bytes: Uint8Array): void {
    checkRequest(pa, bytes.byteLength);
    writeFile(this.fd, Number(pa), bytes);
    this.end = bigMax(this.end, pa + BigInt(bytes.byteLength));
  }

  zero(pa: bigint, length: number): void {
    checkRequest(pa, length);
    const stop = pa + BigInt(length);
    for (let at = pa; at < bigMin(stop, this.end); at += BigInt(ZERO_CHUNK.byteLength)) {
      writeFile(
        this.fd,
        Number(at),
        ZERO_CHUNK.subarray(0, Number(bigMin(BigInt(ZERO_CHUNK.byteLength), stop - at))),
      );
    }
    if (stop > this.end) {
      ftruncateSync(this.fd, Number(stop));
      this.end = stop;
    }
  }

  ranges(): PhysicalRange[] {
    return this.end > 0n ? [{ start: 0n, end: this.end }] : [];
  }

  close(): void {
    if (this.ownsFd) closeSync(this.fd);
  }
}

function readFile(
  fd: number,
  position: number,
  length: number,
  structure: string,
  out: Uint8Array = new Uint8Array(length),
): Uint8Array {
  let done = 0;
  while (done < length) {
    let n: number;
    try {
      n = readSync(fd, out, done, length - done, position + done);
    } catch (error) {
      throw new AbiError(structure, { offset: position + done }, `read failed: ${(error as Error).message}`);
    }
    if (n === 0) throw new AbiError(structure, { offset: position + done }, 'unexpected end of file');
    done += n;
  }
  return out;
}

function writeFile(fd: number, position: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.byteLength) {
    done += writeSync(fd, bytes, done, bytes.byteLength - done, position + done);
  }
}

function bigMin(a: bigint, b: bigint): bigint {
  return a < b ? a : b;
}

function bigMax(a: bigint, b: bigint): bigint {
  return a > b ? a : b;
}
