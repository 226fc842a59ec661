/**
 * From whatever a user hands to kexec to the kernel's own bytes (an ELF vmlinux or a raw
 * arm64 Image), unwrapping as the boot path would:
 *  - x86 bzImage: the setup header ("HdrS" at 0x202) says where the compressed vmlinux is
 *    (setup_sects, payload_offset, payload_length: boot protocol 2.08+);
 *  - EFI zboot (arm64, riscv, loongarch): "zimg" at offset 4, payload offset and size at
 *    8 and 12, the compression's name at 24;
 *  - a compressed file (Image.gz, vmlinux.xz...): by its magic;
 *  - an ELF vmlinux or an arm64 Image ("ARM\x64" at 0x38): the kernel itself.
 */
import { CodedError } from '../sys/error.js';
import { type Compression, compressionOf, decompress } from './decompress/index.js';

export type ImageKind = 'bzImage' | 'zboot' | 'elf' | 'arm64-image' | 'compressed';

export interface Unwrapped {
  /** The outer container, then each layer inside it: e.g. ['bzImage', 'elf']. */
  layers: ImageKind[];
  /** Every compression met on the way, outermost first. */
  compression: Compression[];
  /** The kernel's bytes. */
  kernel: Buffer;
  /** 'x86' from a bzImage or an x86-64 ELF; 'arm64' from an arm64 Image or an aarch64 ELF. */
  arch?: string;
}

const MAX_DEPTH = 4;

export function notAKernel(what: string): CodedError {
  return new CodedError(
    'ENOEXEC',
    `${what} is not a kernel image (no bzImage, EFI zboot, ELF or arm64 Image header, nor a compressed one)`,
  );
}

export async function unwrap(data: Buffer, name = 'the file'): Promise<Unwrapped> {
  const result: Unwrapped = { layers: [], compression: [], kernel: data };
  let current = data;
  for (let depth = 0; depth < MAX_DEPTH; depth++) {
    if (isElf(current)) {
      result.layers.push('elf');
      result.kernel = current;
      const machine = current.readUInt16LE(18);
      if (machine === 62) result.arch = 'x86';
      else if (machine === 183) result.arch = 'arm64';
      return result;
    }
    if (current.length >= 0x40 && current.toString('latin1', 0x38, 0x3c) === 'ARMd') {
      result.layers.push('arm64-image');
      result.arch = 'arm64';
      result.kernel = current;
      return result;
    }
    let payload: Buffer | undefined;
    if (current.length >= 0x250 && current.toString('latin1', 0x202, 0x206) === 'HdrS') {
      result.layers.push('bzImage');
      result.arch = 'x86';
      payload = bzImagePayload(current);
    } else if (
      current.length >= 0x40 &&
      current.toString('latin1', 0, 2) === 'MZ' &&
      current.toString('latin1', 4, 8) === 'zimg'
    ) {
      result.layers.push('zboot');
      const offset = current.readUInt32LE(8);
      const size = current.readUInt32LE(12);
      if (offset + size > current.length)
        throw new CodedError('EBADMSG', `${name}: the EFI zboot payload runs past the end of the file`);
      payload = current.subarray(offset, offset + size);
    } else if (compressionOf(current)) {
      result.layers.push('compressed');
      payload = current;
    } else {
      throw depth === 0
        ? notAKernel(name)
        : new CodedError(
            'ENOEXEC',
            `${name}: the ${result.layers.at(-1)} holds no kernel this reader knows (${result.layers.join(' > ')})`,
          );
    }
    const kind = compressionOf(payload);
    if (!kind) {
      if (isElf(payload) || payload.toString('latin1', 0x38, 0x3c) === 'ARMd') {
        current = payload;
        continue;
      }
      throw new CodedError(
        'ENOTSUP',
        `${name}: the ${result.layers.at(-1)} payload's compression is unknown (first bytes ${payload.subarray(0, 4).toString('hex')})`,
      );
    }
    result.compression.push(kind);
    current = await decompress(kind, payload);
  }
  throw new CodedError('ELOOP', `${name}: more than ${MAX_DEPTH} layers of containers`);
}

function isElf(data: Buffer): boolean {
  return data.length >= 64 && data.readUInt32BE(0) === 0x7f454c46;
}

/** The compressed vmlinux inside a bzImage. */
function bzImagePayload(image: Buffer): Buffer {
  const protocol = image.readUInt16LE(0x206);
  if (protocol < 0x208)
    throw new CodedError(
      'ENOTSUP',
      `boot protocol ${protocol.toString(16)} predates payload_offset (2.08): too old a kernel`,
    );
  const setupSects = image[0x1f1] || 4;
  const start = (setupSects + 1) * 512 + image.readUInt32LE(0x248);
  const length = image.readUInt32LE(0x24c);
  if (start + length > image.length)
    throw new CodedError('EBADMSG', 'the bzImage payload runs past the end of the file (truncated image?)');
  return image.subarray(start, start + length);
}
