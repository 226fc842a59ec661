/**
 * The .xz container (the kernel's `.xz` payloads: one stream, LZMA2, with the x86 BCJ
 * filter on x86), written here with lzma.ts: the one maintained WebAssembly xz package
 * on npm is built without BCJ filters and so cannot read a kernel. Blocks are decoded
 * until the index; a CRC32 check is verified (zlib.crc32), other checks are skipped.
 */
import { crc32 } from 'node:zlib';
import { CodedError } from '../../sys/error.js';
import { LzmaDecoder } from './lzma.js';
import { corrupt, Output } from './output.js';

const MAGIC = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];
const FILTER_X86 = 0x04;
const FILTER_LZMA2 = 0x21;
/** Check sizes by check type (xz's format: 0 none, 1 CRC32, 4 CRC64, 10 SHA-256, others by group). */
const CHECK_SIZES = [0, 4, 4, 4, 8, 8, 8, 16, 16, 16, 32, 32, 32, 64, 64, 64];

export function isXz(input: Uint8Array): boolean {
  return MAGIC.every((b, i) => input[i] === b);
}

export function decodeXz(input: Uint8Array, sizeHint = 0): Buffer {
  if (!isXz(input) || input.length < 12 + 12) throw corrupt('xz', 'no stream header');
  const checkType = input[7]! & 0x0f;
  const checkSize = CHECK_SIZES[checkType]!;
  const out = new Output(sizeHint || input.length * 5);
  const decoder = new LzmaDecoder(out);
  let pos = 12;
  for (;;) {
    const headerByte = input[pos];
    if (headerByte === undefined) throw corrupt('xz', 'stream ends before its index');
    if (headerByte === 0) break; // the index: every block has been read
    const headerEnd = pos + (headerByte + 1) * 4;
    const flags = input[pos + 1]!;
    let p = pos + 2;
    const vli = (): number => {
      let value = 0;
      for (let shift = 0; shift < 63; shift += 7) {
        const b = input[p++];
        if (b === undefined) throw corrupt('xz', 'block header ends early');
        value += (b & 0x7f) * 2 ** shift;
        if ((b & 0x80) === 0) return value;
      }
      throw corrupt('xz', 'number too long');
    };
    if (flags & 0x40) vli(); // compressed size
    if (flags & 0x80) vli(); // uncompressed size
    const filters: number[] = [];
    let dictByte = 0;
    for (let i = 0; i <= (flags & 3); i++) {
      const id = vli();
      const propsSize = vli();
      if (id === FILTER_LZMA2) dictByte = input[p]!;
      else if (id === FILTER_X86) {
        if (propsSize !== 0) throw new CodedError('ENOTSUP', 'xz: x86 BCJ filter with a start offset');
      } else {
        throw new CodedError(
          'ENOTSUP',
          `xz: filter 0x${id.toString(16)} is not supported (LZMA2 and x86 BCJ are)`,
        );
      }
      filters.push(id);
      p += propsSize;
    }
    if (filters.at(-1) !== FILTER_LZMA2) throw new CodedError('ENOTSUP', 'xz: the last filter is not LZMA2');
    if (dictByte > 40) throw corrupt('xz', 'LZMA2 dictionary size');
    const blockStart = out.pos;
    pos = decodeLzma2(input, headerEnd, decoder, blockStart);
    if (filters.includes(FILTER_X86)) x86Decode(out.buf.subarray(blockStart, out.pos));
    while (pos % 4 !== 0) pos++;
    if (checkType === 1) {
      const stored = new DataView(input.buffer, input.byteOffset + pos, 4).getUint32(0, true);
      if (crc32(out.buf.subarray(blockStart, out.pos)) !== stored) throw corrupt('xz', 'CRC32 check fails');
    }
    pos += checkSize;
  }
  return out.result();
}

/** LZMA2 chunks from `pos` to their end byte; the position after it. */
function decodeLzma2(input: Uint8Array, pos: number, decoder: LzmaDecoder, blockStart: number): number {
  const out = decoder.out;
  let dictStart = blockStart;
  let needProps = true;
  for (;;) {
    const control = input[pos++];
    if (control === undefined) throw corrupt('xz', 'LZMA2 data ends early');
    if (control === 0) return pos;
    if (control === 1 || control === 2) {
      const size = ((input[pos]! << 8) | input[pos + 1]!) + 1;
      pos += 2;
      if (pos + size > input.length) throw corrupt('xz', 'LZMA2 data ends early');
      if (control === 1) dictStart = out.pos;
      out.reserve(size);
      out.buf.set(input.subarray(pos, pos + size), out.pos);
      out.pos += size;
      pos += size;
      continue;
    }
    if (control < 0x80) throw corrupt('xz', `LZMA2 control byte 0x${control.toString(16)}`);
    const unpacked = ((control & 0x1f) << 16) + ((input[pos]! << 8) | input[pos + 1]!) + 1;
    const packed = ((input[pos + 2]! << 8) | input[pos + 3]!) + 1;
    pos += 4;
    const reset = (control >>> 5) & 3;
    if (reset === 3) dictStart = out.pos;
    if (reset >= 2) {
      decoder.setProperties(input[pos++]!);
      needProps = false;
    } else if (needProps) throw corrupt('xz', 'LZMA2 chunk without properties');
    if (reset >= 1) decoder.resetState();
    const end = pos + packed;
    if (end > input.length) throw corrupt('xz', 'LZMA2 data ends early');
    decoder.startRange(input, pos, end);
    decoder.decode(out.pos + unpacked, dictStart);
    pos = end;
  }
}

const ALLOWED = [true, true, true, false, true, false, false, false];
const BIT_NUMBER = [0, 1, 2, 2, 3, 3, 3, 3];
const msByte = (b: number): boolean => b === 0 || b === 0xff;

/**
 * Undo the x86 BCJ filter in place: it turned the relative targets of CALL (E8) and
 * JMP (E9) into absolute ones so that they compress better. Stream position 0 is the
 * start of `buf` (a kernel's xz stream is one block).
 */
export function x86Decode(buf: Uint8Array): void {
  let prevMask = 0;
  let prevPos = -5;
  const limit = buf.length - 5;
  let i = 0;
  while (i <= limit) {
    let b = buf[i]!;
    if (b !== 0xe8 && b !== 0xe9) {
      i++;
      continue;
    }
    const offset = i - prevPos;
    prevPos = i;
    if (offset > 5) prevMask = 0;
    else for (let k = 0; k < offset; k++) prevMask = (prevMask & 0x77) << 1;
    b = buf[i + 4]!;
    if (msByte(b) && ALLOWED[(prevMask >>> 1) & 7] && prevMask >>> 1 < 0x10) {
      let src = ((b << 24) | (buf[i + 3]! << 16) | (buf[i + 2]! << 8) | buf[i + 1]!) >>> 0;
      let dest: number;
      for (;;) {
        dest = (src - (i + 5)) >>> 0;
        if (prevMask === 0) break;
        const n = BIT_NUMBER[prevMask >>> 1]!;
        b = (dest >>> (24 - n * 8)) & 0xff;
        if (!msByte(b)) break;
        src = (dest ^ (2 ** (32 - n * 8) - 1)) >>> 0;
      }
      buf[i + 4] = ((dest >>> 24) & 1) === 0 ? 0 : 0xff;
      buf[i + 3] = (dest >>> 16) & 0xff;
      buf[i + 2] = (dest >>> 8) & 0xff;
      buf[i + 1] = dest & 0xff;
      i += 5;
      prevMask = 0;
    } else {
      i++;
      prevMask |= 1;
      if (msByte(b)) prevMask |= 0x10;
    }
  }
}
