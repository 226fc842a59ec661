/**
 * Every compression a kernel image's payload can have, told by its magic and decoded in
 * process (no external tool: `luoctl kernel-info` must work on a bare host):
 *  - gzip: Node's zlib;
 *  - zstd and bzip2: the reference C libraries compiled to WebAssembly (@foxglove/wasm-zstd,
 *    @foxglove/wasm-bz2), as fast as zlib on the same machine, where pure-JS zstd is 15x slower;
 *  - xz, lzma, lz4 (legacy frame) and lzo (lzop): small decoders written here (see each file
 *    for why no package fits).
 */
import { createRequire } from 'node:module';
import * as zlib from 'node:zlib';
import { CodedError } from '../../sys/error.js';
import { decodeLz4Legacy, LZ4_LEGACY_MAGIC } from './lz4.js';
import { decodeLzmaAlone } from './lzma.js';
import { decodeLzop, LZOP_MAGIC } from './lzo.js';
import { MAX_OUTPUT } from './output.js';
import { decodeXz, isXz } from './xz.js';

export type Compression = 'gzip' | 'bzip2' | 'lzma' | 'xz' | 'lzo' | 'lz4' | 'zstd';
export const COMPRESSIONS: readonly Compression[] = ['gzip', 'bzip2', 'lzma', 'xz', 'lzo', 'lz4', 'zstd'];

/** The compression of `data` by its magic, or undefined. */
export function compressionOf(data: Uint8Array): Compression | undefined {
  const b = (i: number) => data[i];
  if (b(0) === 0x1f && (b(1) === 0x8b || b(1) === 0x9e)) return 'gzip';
  if (b(0) === 0x42 && b(1) === 0x5a && b(2) === 0x68) return 'bzip2';
  if (b(0) === 0x5d && b(1) === 0x00 && b(2) === 0x00) return 'lzma';
  if (isXz(data)) return 'xz';
  if (LZOP_MAGIC.equals(data.subarray(0, 9))) return 'lzo';
  if (data.length >= 4 && Buffer.from(data.buffer, data.byteOffset, 4).readUInt32LE(0) === LZ4_LEGACY_MAGIC)
    return 'lz4';
  if (b(0) === 0x28 && b(1) === 0xb5 && b(2) === 0x2f && b(3) === 0xfd) return 'zstd';
  return undefined;
}

/**
 * The size the kernel's build appends to every payload but gzip's (a LE32 trailer), when
 * it is plausible for this input; 0 when not.
 */
export function sizeTrailer(data: Uint8Array): number {
  if (data.length < 8) return 0;
  const size = Buffer.from(data.buffer, data.byteOffset + data.length - 4, 4).readUInt32LE(0);
  return size >= data.length && size <= data.length * 64 ? size : 0;
}

const require = createRequire(import.meta.url);
/** Names in variables: a bundler (test/vm's esbuild) must leave these to Node, with their .wasm files. */
const ZSTD_PACKAGE = '@foxglove/wasm-zstd';
const BZIP2_PACKAGE = '@foxglove/wasm-bz2';
interface ZstdModule {
  isLoaded: Promise<boolean>;
  decompress(buffer: Uint8Array, size: number): Buffer;
}
interface Bzip2Module {
  decompress(src: Uint8Array, destSize: number, options?: { small?: boolean }): Uint8Array;
}
let zstd: Promise<ZstdModule> | undefined;
let bzip2: Promise<Bzip2Module> | undefined;

/** Loaded on first use: the WebAssembly modules cost nothing to a command that never needs them. */
function loadZstd(): Promise<ZstdModule> {
  zstd ??= (async () => {
    const module = require(ZSTD_PACKAGE) as ZstdModule;
    await module.isLoaded;
    return module;
  })();
  return zstd;
}
function loadBzip2(): Promise<Bzip2Module> {
  bzip2 ??= (require(BZIP2_PACKAGE) as { init(): Promise<Bzip2Module> }).init();
  return bzip2;
}

/**
 * A one-shot WebAssembly decoder needs the output size up front: the trailer's (over the
 * input without the trailer), else growing guesses until the output fits.
 */
function withSize(data: Uint8Array, decode: (input: Uint8Array, size: number) => Uint8Array): Buffer {
  const trailer = sizeTrailer(data);
  if (trailer > 0) {
    try {
      const out = decode(data.subarray(0, data.length - 4), trailer);
      if (out.length === trailer) return Buffer.from(out.buffer, out.byteOffset, out.length);
    } catch {
      // Not the build's trailer after all: the guesses below.
    }
  }
  let lastError: unknown;
  for (let size = data.length * 8; size <= MAX_OUTPUT; size *= 4) {
    try {
      const out = decode(data, size);
      if (out.length < size) return Buffer.from(out.buffer, out.byteOffset, out.length);
    } catch (err) {
      lastError = err;
    }
  }
  throw lastError ?? new CodedError('EFBIG', 'decompressed data too large');
}

/** Decompress `data` (whose compression is `kind`). Corrupt data throws EBADMSG. */
export async function decompress(kind: Compression, data: Uint8Array): Promise<Buffer> {
  try {
    switch (kind) {
      case 'gzip':
        // A payload may be followed by padding: decode what is there, as the kernel does.
        return zlib.gunzipSync(data, { finishFlush: zlib.constants.Z_SYNC_FLUSH });
      case 'zstd': {
        const module = await loadZstd();
        return withSize(data, (input, size) => module.decompress(input, size));
      }
      case 'bzip2': {
        const module = await loadBzip2();
        return withSize(data, (input, size) => module.decompress(input, size));
      }
      case 'lzma':
        return decodeLzmaAlone(data, sizeTrailer(data));
      case 'xz':
        return decodeXz(data, sizeTrailer(data));
      case 'lzo':
        return decodeLzop(data, sizeTrailer(data));
      case 'lz4':
        return decodeLz4Legacy(data, sizeTrailer(data));
    }
  } catch (err) {
    if (err instanceof CodedError) throw err;
    throw new CodedError('EBADMSG', `${kind} data is corrupt: ${(err as Error).message}`);
  }
}
