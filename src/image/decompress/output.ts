/**
 * A growing output buffer for the decoders written here: kernel payloads carry their
 * size (the build appends it), but a user's compressed vmlinux may not, so the buffer
 * starts at the hint and doubles when a stream runs past it.
 */
import { CodedError } from '../../sys/error.js';

/** Past this the input is not a kernel: no vmlinux comes near 1 GiB. */
export const MAX_OUTPUT = 1 << 30;

export class Output {
  buf: Uint8Array;
  pos = 0;

  constructor(hint: number) {
    this.buf = new Uint8Array(Math.max(4096, Math.min(hint, MAX_OUTPUT)));
  }

  /** Make room for `n` more bytes. */
  reserve(n: number): void {
    const need = this.pos + n;
    if (need <= this.buf.length) return;
    if (need > MAX_OUTPUT) throw new CodedError('EFBIG', `decompressed data grows past ${MAX_OUTPUT} bytes`);
    let size = this.buf.length * 2;
    while (size < need) size *= 2;
    const grown = new Uint8Array(Math.min(size, MAX_OUTPUT));
    grown.set(this.buf.subarray(0, this.pos));
    this.buf = grown;
  }

  result(): Buffer {
    return Buffer.from(this.buf.buffer, this.buf.byteOffset, this.pos);
  }
}

export function corrupt(format: string, what: string): CodedError {
  return new CodedError('EBADMSG', `${format} data is corrupt: ${what}`);
}
