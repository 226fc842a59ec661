/**
 * The Live Update Orchestrator's handover structures, `luo-v5` (Linux 7.2 and 7.3,
 * include/linux/kho/abi/luo.h).
 *
 * All LUO state hangs off one KHO subtree named "LUO", whose preserved-data points at a
 * 32-byte luo_ser and whose blob-size is 32:
 *
 *   luo_ser {char compatible[8] "luo-v5"; u64 liveupdate_num; u64 sessions_pa; u64 flbs_pa}
 *     sessions_pa -> block chain (kho-block.ts) of 80-byte luo_session_ser
 *                    {char name[64]; u64 files; u64 count}, 51 per block
 *         files   -> block chain of 64-byte luo_file_ser
 *                    {char compatible[48]; u64 data; u64 token}, 63 per block
 *     flbs_pa     -> one page: luo_flb_header_ser {u64 pgcnt; u64 count} and `count`
 *                    64-byte luo_flb_ser {char name[48]; u64 data; u64 count}, at most 63
 *
 * Every structure is packed and little-endian. A session with no files stores files = 0
 * and count = 0; with no sessions, sessions_pa is 0. The FLB page always exists.
 */
import {
  decodeUtf8,
  encodeUtf8,
  readCBytes,
  readCString,
  readU64,
  writeCBytes,
  writeCString,
  writeU64,
} from './bytes.js';
import { AbiError } from './errors.js';
import { checkPageAligned, PAGE_SIZE, type PhysicalMemory, readStruct } from './memory.js';

export const LUO_KHO_ENTRY_NAME = 'LUO';
export const LUO_ABI_COMPATIBLE = 'luo-v5';
/** ALIGN(sizeof("luo-v5"), 8). */
export const LUO_ABI_COMPAT_LEN = 8;
export const LUO_SER_SIZE = LUO_ABI_COMPAT_LEN + 3 * 8;

export const LIVEUPDATE_SESSION_NAME_LENGTH = 64;
export const LUO_SESSION_SER_SIZE = LIVEUPDATE_SESSION_NAME_LENGTH + 2 * 8;

export const LIVEUPDATE_HNDL_COMPAT_LENGTH = 48;
export const LUO_FILE_SER_SIZE = LIVEUPDATE_HNDL_COMPAT_LENGTH + 2 * 8;

export const LIVEUPDATE_FLB_COMPAT_LENGTH = 48;
export const LUO_FLB_HEADER_SER_SIZE = 16;
export const LUO_FLB_SER_SIZE = LIVEUPDATE_FLB_COMPAT_LENGTH + 2 * 8;
/** The kernel preserves one page for FLBs (LUO_FLB_PGCNT). */
export const LUO_FLB_PGCNT = 1;
/** FLB entries that fit the FLB page: (4096 - 16) / 64. */
export const LUO_FLB_MAX = Math.floor(
  (LUO_FLB_PGCNT * PAGE_SIZE - LUO_FLB_HEADER_SER_SIZE) / LUO_FLB_SER_SIZE,
);

export interface LuoSer {
  compatible: string;
  liveupdateNum: bigint;
  sessionsPa: bigint;
  flbsPa: bigint;
}

export interface LuoSessionSer {
  /** As the next kernel's strscpy() copies it: at most 63 bytes, decoded as UTF-8 for display. */
  name: string;
  /**
   * Those bytes exactly, when `name` does not say them (it loses any that are not UTF-8).
   * LUO compares names as bytes: use `nameBytes ?? encodeUtf8(name)`.
   */
  nameBytes?: Uint8Array;
  /** False when all 64 bytes are name, of which the kernel keeps 63. */
  nameTerminated: boolean;
  filesPa: bigint;
  fileCount: bigint;
}

export interface LuoFileSer {
  compatible: string;
  compatibleTerminated: boolean;
  data: bigint;
  token: bigint;
}

export interface LuoFlbSer {
  name: string;
  data: bigint;
  count: bigint;
}

export function encodeLuoSer(ser: LuoSer): Uint8Array {
  const bytes = new Uint8Array(LUO_SER_SIZE);
  writeCString(bytes, 0, LUO_ABI_COMPAT_LEN, ser.compatible, 'luo_ser', 'compatible');
  writeU64(bytes, 8, ser.liveupdateNum, 'luo_ser', 'liveupdate_num');
  writeU64(bytes, 16, ser.sessionsPa, 'luo_ser', 'sessions_pa');
  writeU64(bytes, 24, ser.flbsPa, 'luo_ser', 'flbs_pa');
  return bytes;
}

/** The compatible is the text before the first NUL (all 8 bytes if none), as strncmp sees it. */
export function decodeLuoSer(bytes: Uint8Array): LuoSer {
  checkSize(bytes, LUO_SER_SIZE, 'luo_ser');
  return {
    compatible: readCString(bytes, 0, LUO_ABI_COMPAT_LEN).text,
    liveupdateNum: readU64(bytes, 8),
    sessionsPa: readU64(bytes, 16),
    flbsPa: readU64(bytes, 24),
  };
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && a.every((v, i) => v === b[i]);
}

/** `nameBytes`, when given, is written as is (any bytes but NUL); otherwise `name` as UTF-8. */
export function encodeLuoSessionSer(ser: {
  name: string;
  nameBytes?: Uint8Array;
  filesPa: bigint;
  fileCount: bigint;
}): Uint8Array {
  const bytes = new Uint8Array(LUO_SESSION_SER_SIZE);
  const name = ser.nameBytes ?? encodeUtf8(ser.name);
  if (name.byteLength === 0) throw new AbiError('luo_session_ser', {}, 'session name is empty');
  writeCBytes(bytes, 0, LIVEUPDATE_SESSION_NAME_LENGTH, name, 'luo_session_ser', 'name');
  writeU64(bytes, 64, ser.filesPa, 'luo_session_ser', 'files');
  writeU64(bytes, 72, ser.fileCount, 'luo_session_ser', 'count');
  return bytes;
}

export function decodeLuoSessionSer(bytes: Uint8Array): LuoSessionSer {
  checkSize(bytes, LUO_SESSION_SER_SIZE, 'luo_session_ser');
  const name = readCBytes(bytes, 0, LIVEUPDATE_SESSION_NAME_LENGTH);
  const kept = name.terminated ? name.bytes : readCBytes(bytes, 0, LIVEUPDATE_SESSION_NAME_LENGTH - 1).bytes;
  const text = decodeUtf8(kept);
  return {
    name: text,
    ...(sameBytes(encodeUtf8(text), kept) ? {} : { nameBytes: kept }),
    nameTerminated: name.terminated,
    filesPa: readU64(bytes, 64),
    fileCount: readU64(bytes, 72),
  };
}

export function encodeLuoFileSer(ser: { compatible: string; data: bigint; token: bigint }): Uint8Array {
  const bytes = new Uint8Array(LUO_FILE_SER_SIZE);
  writeCString(bytes, 0, LIVEUPDATE_HNDL_COMPAT_LENGTH, ser.compatible, 'luo_file_ser', 'compatible');
  writeU64(bytes, 48, ser.data, 'luo_file_ser', 'data');
  writeU64(bytes, 56, ser.token, 'luo_file_ser', 'token');
  return bytes;
}

export function decodeLuoFileSer(bytes: Uint8Array): LuoFileSer {
  checkSize(bytes, LUO_FILE_SER_SIZE, 'luo_file_ser');
  const compatible = readCString(bytes, 0, LIVEUPDATE_HNDL_COMPAT_LENGTH);
  return {
    compatible: compatible.text,
    compatibleTerminated: compatible.terminated,
    data: readU64(bytes, 48),
    token: readU64(bytes, 56),
  };
}

/** The whole FLB page: header and entries, zero-filled after them. */
export function encodeLuoFlbPage(flbs: readonly LuoFlbSer[]): Uint8Array {
  if (flbs.length > LUO_FLB_MAX)
    throw new AbiError('luo_flb_header_ser', {}, `${flbs.length} FLBs; at most ${LUO_FLB_MAX} fit`);
  const page = new Uint8Array(LUO_FLB_PGCNT * PAGE_SIZE);
  writeU64(page, 0, BigInt(LUO_FLB_PGCNT), 'luo_flb_header_ser', 'pgcnt');
  writeU64(page, 8, BigInt(flbs.length), 'luo_flb_header_ser', 'count');
  flbs.forEach((flb, i) => {
    const at = LUO_FLB_HEADER_SER_SIZE + i * LUO_FLB_SER_SIZE;
    writeCString(page, at, LIVEUPDATE_FLB_COMPAT_LENGTH, flb.name, 'luo_flb_ser', 'name');
    writeU64(page, at + 48, flb.data, 'luo_flb_ser', 'data');
    writeU64(page, at + 56, flb.count, 'luo_flb_ser', 'count');
  });
  return page;
}

/**
 * The FLB entries at `flbsPa`. The kernel trusts `count`; here it must fit in the
 * `pgcnt` pages the header claims, and pgcnt must be what this kernel writes.
 */
export function readLuoFlbs(memory: PhysicalMemory, flbsPa: bigint): LuoFlbSer[] {
  const structure = 'luo_flb_header_ser';
  checkPageAligned(structure, flbsPa);
  const header = readStruct(memory, structure, flbsPa, LUO_FLB_HEADER_SER_SIZE);
  const pgcnt = readU64(header, 0);
  const count = readU64(header, 8);
  if (pgcnt !== BigInt(LUO_FLB_PGCNT))
    throw new AbiError(structure, { pa: flbsPa }, `pgcnt ${pgcnt} is not ${LUO_FLB_PGCNT}`);
  if (count > BigInt(LUO_FLB_MAX))
    throw new AbiError(structure, { pa: flbsPa }, `count ${count} exceeds ${LUO_FLB_MAX}`);
  const page = readStruct(memory, structure, flbsPa, LUO_FLB_PGCNT * PAGE_SIZE);
  return Array.from({ length: Number(count) }, (_, i) => {
    const at = LUO_FLB_HEADER_SER_SIZE + i * LUO_FLB_SER_SIZE;
    return {
      name: readCString(page, at, LIVEUPDATE_FLB_COMPAT_LENGTH).text,
      data: readU64(page, at + 48),
      count: readU64(page, at + 56),
    };
  });
}

function checkSize(bytes: Uint8Array, size: number, structure: string): void {
  if (bytes.byteLength < size)
    throw new AbiError(structure, { offset: 0 }, `needs ${size} bytes, got ${bytes.byteLength}`);
}
