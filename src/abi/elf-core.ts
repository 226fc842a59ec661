/**
 * Where guest physical memory sits inside an ELF64 core file, such as QEMU's
 * `dump-guest-memory` writes (without `-z`/`-l`/`-s`, which produce kdump format).
 *
 * Each PT_LOAD program header maps guest physical addresses [p_paddr, p_paddr + p_memsz)
 * to file bytes [p_offset, p_offset + p_filesz). Only the p_filesz part is in the file;
 * the rest of p_memsz, and anything cut off by a truncated dump, is simply not present.
 * Cores with more than 65534 program headers keep the real count in section header 0's
 * sh_info (PN_XNUM), which QEMU uses for guests with many RAM blocks.
 */
import { AbiError } from './errors.js';

/** A run of physical memory present in a file: [start, end) at file offset `fileOffset`. */
export interface FileSegment {
  start: bigint;
  end: bigint;
  fileOffset: number;
}

const STRUCTURE = 'elf-core';
const ELF_MAGIC = [0x7f, 0x45, 0x4c, 0x46];
const ELFCLASS64 = 2;
const ELFDATA2LSB = 1;
const ELFDATA2MSB = 2;
const ET_CORE = 4;
const PT_LOAD = 1;
const PN_XNUM = 0xffff;
const EHDR_SIZE = 64;
const PHDR_SIZE = 56;
const SHDR_SIZE = 64;
/** Far more than any guest has RAM blocks; bounds the header read. */
const MAX_PROGRAM_HEADERS = 1 << 20;
const KDUMP_SIGNATURE = 'KDUMP   ';

/**
 * The present physical segments of an ELF64 core, sorted by address and clipped to the
 * file's real length. `readAt` returns up to `length` bytes at a file offset (fewer at EOF).
 */
export function elfCoreSegments(
  readAt: (offset: number, length: number) => Uint8Array,
  fileSize: number,
): FileSegment[] {
  const ehdr = readExactly(readAt, 0, EHDR_SIZE, fileSize, 'ELF header');
  if (new TextDecoder('latin1').decode(ehdr.subarray(0, 8)) === KDUMP_SIGNATURE) {
    throw new AbiError(
      STRUCTURE,
      { offset: 0 },
      'this is a kdump-compressed dump; dump it as plain ELF (no -z/-l/-s)',
    );
  }
  if (!ELF_MAGIC.every((b, i) => ehdr[i] === b)) throw new AbiError(STRUCTURE, { offset: 0 }, 'no ELF magic');
  if (ehdr[4] !== ELFCLASS64)
    throw new AbiError(STRUCTURE, { offset: 4 }, `ELF class ${ehdr[4]} is not ELFCLASS64`);
  const encoding = ehdr[5];
  if (encoding !== ELFDATA2LSB && encoding !== ELFDATA2MSB) {
    throw new AbiError(STRUCTURE, { offset: 5 }, `unknown ELF data encoding ${encoding}`);
  }
  const little = encoding === ELFDATA2LSB;
  const header = new DataView(ehdr.buffer, ehdr.byteOffset, ehdr.byteLength);
  const type = header.getUint16(16, little);
  if (type !== ET_CORE) throw new AbiError(STRUCTURE, { offset: 16 }, `e_type ${type} is not ET_CORE`);

  const phoff = toOffset(header.getBigUint64(32, little), 'e_phoff');
  const phentsize = header.getUint16(54, little);
  if (phentsize < PHDR_SIZE)
    throw new AbiError(STRUCTURE, { offset: 54 }, `e_phentsize ${phentsize} < ${PHDR_SIZE}`);
  let phnum = header.getUint16(56, little);
  if (phnum === PN_XNUM) phnum = extendedProgramHeaderCount(readAt, header, little, fileSize);
  if (phnum > MAX_PROGRAM_HEADERS) throw new AbiError(STRUCTURE, { offset: 56 }, `${phnum} program headers`);

  const table = readExactly(readAt, phoff, phnum * phentsize, fileSize, 'program header table');
  const view = new DataView(table.buffer, table.byteOffset, table.byteLength);
  const segments: FileSegment[] = [];
  for (let i = 0; i < phnum; i++) {
    const at = i * phentsize;
    if (view.getUint32(at, little) !== PT_LOAD) continue;
    const offset = view.getBigUint64(at + 8, little);
    const paddr = view.getBigUint64(at + 24, little);
    const filesz = view.getBigUint64(at + 32, little);
    const inFile = clampToFile(offset, filesz, fileSize);
    if (inFile === 0n) continue;
    if (paddr + inFile > 1n << 64n)
      throw new AbiError(STRUCTURE, { offset: phoff + at }, 'segment wraps past 2^64');
    segments.push({ start: paddr, end: paddr + inFile, fileOffset: Number(offset) });
  }
  segments.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  for (let i = 1; i < segments.length; i++) {
    const previous = segments[i - 1]!;
    const current = segments[i]!;
    if (current.start < previous.end) {
      throw new AbiError(
        STRUCTURE,
        {},
        `PT_LOAD segments overlap at physical 0x${current.start.toString(16)}`,
      );
    }
  }
  return segments;
}

function extendedProgramHeaderCount(
  readAt: (offset: number, length: number) => Uint8Array,
  header: DataView,
  little: boolean,
  fileSize: number,
): number {
  const shoff = toOffset(header.getBigUint64(40, little), 'e_shoff');
  if (shoff === 0)
    throw new AbiError(STRUCTURE, { offset: 56 }, 'e_phnum is PN_XNUM but there is no section header');
  const shdr = readExactly(readAt, shoff, SHDR_SIZE, fileSize, 'section header 0');
  return new DataView(shdr.buffer, shdr.byteOffset, shdr.byteLength).getUint32(44, little);
}

/** Bytes of [offset, offset + size) that are inside the file. */
function clampToFile(offset: bigint, size: bigint, fileSize: number): bigint {
  const end = offset + size;
  const limit = BigInt(fileSize);
  if (offset >= limit) return 0n;
  return (end < limit ? end : limit) - offset;
}

function toOffset(value: bigint, field: string): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER))
    throw new AbiError(STRUCTURE, {}, `${field} 0x${value.toString(16)} is too large`);
  return Number(value);
}

function readExactly(
  readAt: (offset: number, length: number) => Uint8Array,
  offset: number,
  length: number,
  fileSize: number,
  what: string,
): Uint8Array {
  if (offset + length > fileSize) {
    throw new AbiError(
      STRUCTURE,
      { offset },
      `${what} (${length} bytes) runs past the end of the file (${fileSize} bytes)`,
    );
  }
  const bytes = readAt(offset, length);
  if (bytes.byteLength !== length) throw new AbiError(STRUCTURE, { offset }, `short read of ${what}`);
  return bytes;
}
