/**
 * LZ4's legacy frame (`lz4 -l`, the only one the kernel's build makes): magic 0x184C2102,
 * then blocks of at most 8 MiB, each a LE32 compressed size and the block. The kernel's
 * build appends the uncompressed size as a 4-byte trailer, which ends the frame. The
 * block format is small enough to decode here; npm's lz4 packages read the modern frame.
 */
import { corrupt, Output } from './output.js';

export const LZ4_LEGACY_MAGIC = 0x184c2102;

export function decodeLz4Legacy(input: Uint8Array, sizeHint = 0): Buffer {
  const view = new DataView(input.buffer, input.byteOffset, input.byteLength);
  if (input.length < 4 || view.getUint32(0, true) !== LZ4_LEGACY_MAGIC)
    throw corrupt('LZ4', 'no legacy magic');
  const out = new Output(sizeHint || input.length * 3);
  let pos = 4;
  while (pos + 4 <= input.length) {
    const size = view.getUint32(pos, true);
    pos += 4;
    if (size === LZ4_LEGACY_MAGIC) continue; // a concatenated frame
    if (pos + size > input.length) {
      if (input.length - pos === 0) break; // the build's size trailer
      throw corrupt('LZ4', 'block past the end');
    }
    decodeBlock(input, pos, pos + size, out);
    pos += size;
  }
  return out.result();
}

function decodeBlock(input: Uint8Array, pos: number, end: number, out: Output): void {
  while (pos < end) {
    const token = input[pos++]!;
    let literals = token >>> 4;
    if (literals === 15) {
      let b: number;
      do {
        b = input[pos++]!;
        literals += b;
      } while (b === 255 && pos < end);
    }
    if (pos + literals > end) throw corrupt('LZ4', 'literals past the block');
    out.reserve(literals);
    out.buf.set(input.subarray(pos, pos + literals), out.pos);
    out.pos += literals;
    pos += literals;
    if (pos >= end) return; // the last sequence has literals only
    const offset = input[pos]! | (input[pos + 1]! << 8);
    pos += 2;
    let length = (token & 15) + 4;
    if ((token & 15) === 15) {
      let b: number;
      do {
        b = input[pos++]!;
        length += b;
      } while (b === 255 && pos < end);
    }
    if (offset === 0 || offset > out.pos) throw corrupt('LZ4', 'match offset');
    out.reserve(length);
    const buf = out.buf;
    let from = out.pos - offset;
    let to = out.pos;
    const stop = to + length;
    while (to < stop) buf[to++] = buf[from++]!;
    out.pos = stop;
  }
}
