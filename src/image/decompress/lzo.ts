/**
 * lzop files holding LZO1X data (the kernel's `.lzo` payloads, made with `lzop -9`).
 * The lzop header is skipped field by field; each block is stored or LZO1X-compressed.
 * LZO1X decoding follows the kernel's own description of the bitstream
 * (Documentation/staging/lzo.rst); npm's lzo packages are native bindings.
 */
import { corrupt, Output } from './output.js';

export const LZOP_MAGIC = Buffer.from([0x89, 0x4c, 0x5a, 0x4f, 0x00, 0x0d, 0x0a, 0x1a, 0x0a]);
const F_ADLER32_D = 0x1;
const F_ADLER32_C = 0x2;
const F_H_FILTER = 0x800;
const F_CRC32_D = 0x100;
const F_CRC32_C = 0x200;

export function decodeLzop(input: Uint8Array, sizeHint = 0): Buffer {
  const view = new DataView(input.buffer, input.byteOffset, input.byteLength);
  if (!LZOP_MAGIC.equals(input.subarray(0, 9))) throw corrupt('lzop', 'no magic');
  let pos = 9;
  const version = view.getUint16(pos);
  pos += 4; // version, library version
  if (version >= 0x0940) pos += 2; // version needed to extract
  pos += 1; // method
  if (version >= 0x0940) pos += 1; // level
  const flags = view.getUint32(pos);
  pos += 4;
  if (flags & F_H_FILTER) pos += 4;
  pos += 8; // mode, mtime low
  if (version >= 0x0940) pos += 4; // mtime high
  pos += 1 + input[pos]!; // name
  pos += 4; // header checksum
  const out = new Output(sizeHint || input.length * 3);
  for (;;) {
    if (pos + 4 > input.length) throw corrupt('lzop', 'ends before its end marker');
    const dstLen = view.getUint32(pos);
    pos += 4;
    if (dstLen === 0) break;
    const srcLen = view.getUint32(pos);
    pos += 4;
    if (flags & F_ADLER32_D) pos += 4;
    if (flags & F_CRC32_D) pos += 4;
    if (srcLen < dstLen && flags & F_ADLER32_C) pos += 4;
    if (srcLen < dstLen && flags & F_CRC32_C) pos += 4;
    if (pos + srcLen > input.length) throw corrupt('lzop', 'block past the end');
    const start = out.pos;
    out.reserve(dstLen);
    if (srcLen === dstLen) {
      out.buf.set(input.subarray(pos, pos + srcLen), out.pos);
      out.pos += srcLen;
    } else {
      decodeLzo1x(input, pos, pos + srcLen, out);
    }
    if (out.pos - start !== dstLen) throw corrupt('lzop', 'block size');
    pos += srcLen;
  }
  return out.result();
}

/** One LZO1X block (bitstream version 0) from input[pos, end) appended to `out`. */
export function decodeLzo1x(input: Uint8Array, pos: number, end: number, out: Output): void {
  const byte = (): number => {
    if (pos >= end) throw corrupt('LZO', 'input ends early');
    return input[pos++]!;
  };
  const literals = (n: number): void => {
    if (pos + n > end) throw corrupt('LZO', 'literals past the end');
    out.reserve(n);
    out.buf.set(input.subarray(pos, pos + n), out.pos);
    out.pos += n;
    pos += n;
  };
  const copy = (distance: number, length: number): void => {
    if (distance > out.pos - blockStart) throw corrupt('LZO', 'distance past the start');
    out.reserve(length);
    const buf = out.buf;
    let from = out.pos - distance;
    let to = out.pos;
    const stop = to + length;
    while (to < stop) buf[to++] = buf[from++]!;
    out.pos = stop;
  };
  /** A length continued by zero bytes (255 each) and a final non-zero byte. */
  const longLength = (base: number): number => {
    let length = base;
    let b = byte();
    while (b === 0) {
      length += 255;
      b = byte();
    }
    return length + b;
  };
  const blockStart = out.pos;
  let state = 0;
  let first = input[pos]!;
  if (first === 17) {
    throw corrupt('LZO', 'bitstream version 1 (LZO-RLE) is not a kernel image payload');
  }
  if (first > 17) {
    pos++;
    const n = first - 17;
    literals(n);
    state = Math.min(n, 4);
  }
  for (;;) {
    const op = byte();
    let distance: number;
    let length: number;
    if (op < 16) {
      if (state === 0) {
        const n = op === 0 ? longLength(15) + 3 : op + 3;
        literals(n);
        state = 4;
        continue;
      }
      const h = byte();
      if (state === 4) {
        distance = (h << 2) + ((op >>> 2) & 3) + 2049;
        length = 3;
      } else {
        distance = (h << 2) + ((op >>> 2) & 3) + 1;
        length = 2;
      }
      first = op;
    } else if (op < 32) {
      length = (op & 7) === 0 ? longLength(7) + 2 : (op & 7) + 2;
      const le = byte() | (byte() << 8);
      distance = 16384 + ((op & 8) << 11) + (le >>> 2);
      first = le;
      if (distance === 16384) return; // end of stream
    } else if (op < 64) {
      length = (op & 31) === 0 ? longLength(31) + 2 : (op & 31) + 2;
      const le = byte() | (byte() << 8);
      distance = (le >>> 2) + 1;
      first = le;
    } else if (op < 128) {
      length = 3 + ((op >>> 5) & 1);
      distance = (byte() << 3) + ((op >>> 2) & 7) + 1;
      first = op;
    } else {
      length = 5 + ((op >>> 5) & 3);
      distance = (byte() << 3) + ((op >>> 2) & 7) + 1;
      first = op;
    }
    copy(distance, length);
    state = first & 3;
    if (state > 0) literals(state);
  }
}
