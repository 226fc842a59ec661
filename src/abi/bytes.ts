/**
 * Field access for the kernel's serialized structs: little-endian integers (x86_64 and
 * arm64, the only architectures with KHO, are little-endian) and fixed-size `char[N]`
 * strings. Writers check ranges because DataView setters silently wrap; readers work on
 * struct images whose length the caller has already checked.
 */
import { AbiError } from './errors.js';

const U16_MAX = 0xffff;
const U32_MAX = 0xffff_ffff;
export const U64_MAX = (1n << 64n) - 1n;

const utf8 = new TextDecoder('utf-8');
const utf8Encoder = new TextEncoder();

function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export function readU16(bytes: Uint8Array, offset: number): number {
  return viewOf(bytes).getUint16(offset, true);
}

export function readU32(bytes: Uint8Array, offset: number): number {
  return viewOf(bytes).getUint32(offset, true);
}

export function readU64(bytes: Uint8Array, offset: number): bigint {
  return viewOf(bytes).getBigUint64(offset, true);
}

export function writeU16(
  bytes: Uint8Array,
  offset: number,
  value: number,
  structure: string,
  field: string,
): void {
  viewOf(bytes).setUint16(offset, checkUnsigned(value, U16_MAX, structure, field), true);
}

export function writeU32(
  bytes: Uint8Array,
  offset: number,
  value: number,
  structure: string,
  field: string,
): void {
  viewOf(bytes).setUint32(offset, checkUnsigned(value, U32_MAX, structure, field), true);
}

export function writeU64(
  bytes: Uint8Array,
  offset: number,
  value: bigint,
  structure: string,
  field: string,
): void {
  if (typeof value !== 'bigint' || value < 0n || value > U64_MAX) {
    throw new AbiError(structure, {}, `${field} must be an unsigned 64-bit bigint, got ${String(value)}`);
  }
  viewOf(bytes).setBigUint64(offset, value, true);
}

/** A `char[size]` field: the text before the first NUL, and whether there was a NUL at all. */
export function readCString(
  bytes: Uint8Array,
  offset: number,
  size: number,
): { text: string; terminated: boolean } {
  const { bytes: raw, terminated } = readCBytes(bytes, offset, size);
  return { text: utf8.decode(raw), terminated };
}

/** A `char[size]` field's bytes before the first NUL (all of them if none), copied. */
export function readCBytes(
  bytes: Uint8Array,
  offset: number,
  size: number,
): { bytes: Uint8Array; terminated: boolean } {
  const field = bytes.subarray(offset, offset + size);
  const nul = field.indexOf(0);
  return { bytes: (nul === -1 ? field : field.subarray(0, nul)).slice(), terminated: nul !== -1 };
}

/** A string that stands for exactly these bytes (one char per byte), to compare or key by. */
export function bytesKey(bytes: Uint8Array): string {
  return String.fromCharCode(...bytes);
}

/** Writes raw bytes (no NUL among them) into a zeroed `char[size]` field, leaving room for the NUL. */
export function writeCBytes(
  bytes: Uint8Array,
  offset: number,
  size: number,
  raw: Uint8Array,
  structure: string,
  field: string,
): void {
  if (raw.includes(0)) throw new AbiError(structure, {}, `${field} contains a NUL byte`);
  if (raw.byteLength > size - 1) {
    throw new AbiError(
      structure,
      {},
      `${field} is ${raw.byteLength} bytes; char[${size}] holds ${size - 1} and a NUL`,
    );
  }
  bytes.set(raw, offset);
}

/**
 * Writes `text` into a zeroed `char[size]` field as the kernel's strscpy() leaves it:
 * NUL-terminated, so at most size - 1 bytes of text.
 */
export function writeCString(
  bytes: Uint8Array,
  offset: number,
  size: number,
  text: string,
  structure: string,
  field: string,
): void {
  writeCBytes(bytes, offset, size, utf8Encoder.encode(text), structure, field);
}

export function encodeUtf8(text: string): Uint8Array {
  return utf8Encoder.encode(text);
}

export function decodeUtf8(bytes: Uint8Array): string {
  return utf8.decode(bytes);
}

function checkUnsigned(value: number, max: number, structure: string, field: string): number {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new AbiError(structure, {}, `${field} must be an integer in 0..${max}, got ${value}`);
  }
  return value;
}
