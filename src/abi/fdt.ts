/**
 * Flattened Device Tree (DTB) version 17, the container KHO uses for its root handover
 * page and for some subtrees (memblock's reserve-mem list).
 *
 * A blob is a 40-byte big-endian header, a memory reservation map of {address, size}
 * pairs ended by {0, 0}, a structure block of 32-bit tokens (BEGIN_NODE name, PROP
 * {len, nameoff} value, END_NODE, NOP, END) and a strings block holding property names.
 * Integers in the format itself are big-endian, and so are the values of conventional
 * properties (`<u32>` cells); but a property value is only bytes, and KHO stores its
 * addresses and sizes in CPU order (see kho.ts), so the value helpers here cover FDT
 * conventions only.
 *
 * decodeFdt trusts nothing: every offset, length and string is checked against the
 * blob, nesting is bounded, and every failure is an AbiError with the byte offset.
 */
import { decodeUtf8, encodeUtf8 } from './bytes.js';
import { AbiError } from './errors.js';

export const FDT_MAGIC = 0xd00dfeed;
const FDT_BEGIN_NODE = 0x1;
const FDT_END_NODE = 0x2;
const FDT_PROP = 0x3;
const FDT_NOP = 0x4;
const FDT_END = 0x9;
const HEADER_SIZE = 40;
const VERSION = 17;
const LAST_COMPATIBLE_VERSION = 16;
const RESERVATION_SIZE = 16;
/** Deeper than any real tree; keeps decoding and any recursive consumer bounded. */
export const FDT_MAX_DEPTH = 64;
const STRUCTURE = 'fdt';

export interface FdtNode {
  name: string;
  /** In blob order. Values are raw bytes; use the helpers below to read them. */
  props: Map<string, Uint8Array>;
  children: FdtNode[];
}

export interface FdtReservation {
  address: bigint;
  size: bigint;
}

export interface DecodedFdt {
  root: FdtNode;
  reserveMap: FdtReservation[];
  bootCpuid: number;
  version: number;
  /** Bytes the header says the blob occupies (the input may be a longer page). */
  totalSize: number;
}

export interface EncodeFdtOptions {
  reserveMap?: FdtReservation[];
  bootCpuid?: number;
}

export function fdtNode(
  name: string,
  props: Record<string, Uint8Array> = {},
  children: FdtNode[] = [],
): FdtNode {
  return { name, props: new Map(Object.entries(props)), children };
}

/**
 * The first child matching `name` as libfdt's fdt_subnode_offset() does: exactly, or as
 * `name@unit-address` when `name` has no unit address of its own.
 */
export function findFdtChild(node: FdtNode, name: string): FdtNode | undefined {
  return node.children.find(
    (child) => child.name === name || (!name.includes('@') && child.name.startsWith(`${name}@`)),
  );
}

export function encodeFdt(root: FdtNode, options: EncodeFdtOptions = {}): Uint8Array {
  const reserveMap = options.reserveMap ?? [];
  const bootCpuid = options.bootCpuid ?? 0;
  if (!Number.isInteger(bootCpuid) || bootCpuid < 0 || bootCpuid > 0xffff_ffff) {
    throw new AbiError(STRUCTURE, {}, `boot cpuid ${bootCpuid} is not a u32`);
  }
  const strings = new StringTable();
  const struct = new ByteSink();
  writeNode(struct, strings, root, 0);
  struct.u32(FDT_END);

  const offReserve = HEADER_SIZE;
  const offStruct = offReserve + (reserveMap.length + 1) * RESERVATION_SIZE;
  const offStrings = offStruct + struct.length;
  const totalSize = offStrings + strings.bytes.length;
  const out = new Uint8Array(totalSize);
  const view = new DataView(out.buffer);
  view.setUint32(0, FDT_MAGIC);
  view.setUint32(4, totalSize);
  view.setUint32(8, offStruct);
  view.setUint32(12, offStrings);
  view.setUint32(16, offReserve);
  view.setUint32(20, VERSION);
  view.setUint32(24, LAST_COMPATIBLE_VERSION);
  view.setUint32(28, bootCpuid);
  view.setUint32(32, strings.bytes.length);
  view.setUint32(36, struct.length);
  reserveMap.forEach((entry, i) => {
    checkU64(entry.address, 'reservation address');
    checkU64(entry.size, 'reservation size');
    if (entry.address === 0n && entry.size === 0n) {
      throw new AbiError(STRUCTURE, {}, 'a {0, 0} reservation would end the map early');
    }
    view.setBigUint64(offReserve + i * RESERVATION_SIZE, entry.address);
    view.setBigUint64(offReserve + i * RESERVATION_SIZE + 8, entry.size);
  });
  out.set(struct.bytes(), offStruct);
  out.set(strings.bytes, offStrings);
  return out;
}

export function decodeFdt(bytes: Uint8Array): DecodedFdt {
  if (bytes.byteLength < HEADER_SIZE)
    fail(0, `${bytes.byteLength} bytes is shorter than the ${HEADER_SIZE}-byte header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = view.getUint32(0);
  if (magic !== FDT_MAGIC) fail(0, `bad magic 0x${magic.toString(16)}`);
  const totalSize = view.getUint32(4);
  const offStruct = view.getUint32(8);
  const offStrings = view.getUint32(12);
  const offReserve = view.getUint32(16);
  const version = view.getUint32(20);
  const lastCompatibleVersion = view.getUint32(24);
  const bootCpuid = view.getUint32(28);
  const sizeStrings = view.getUint32(32);
  const sizeStruct = view.getUint32(36);

  if (version < VERSION) fail(20, `version ${version} is older than 17 (no size_dt_struct)`);
  if (lastCompatibleVersion > VERSION)
    fail(24, `last compatible version ${lastCompatibleVersion} is newer than 17`);
  if (totalSize < HEADER_SIZE || totalSize > bytes.byteLength) {
    fail(4, `totalsize ${totalSize} does not fit the ${bytes.byteLength} bytes given`);
  }
  checkBlock('memory reservation map', offReserve, 0, 8, totalSize, 16);
  checkBlock('structure block', offStruct, sizeStruct, 4, totalSize, 8);
  checkBlock('strings block', offStrings, sizeStrings, 1, totalSize, 12);

  const blob = bytes.subarray(0, totalSize);
  return {
    root: parseStructure(blob, offStruct, sizeStruct, offStrings, sizeStrings),
    reserveMap: parseReserveMap(view, offReserve, totalSize),
    bootCpuid,
    version,
    totalSize,
  };
}

/** `<u32>`: one big-endian cell. */
export function fdtU32(value: number): Uint8Array {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
    throw new AbiError('fdt-property', {}, `${value} is not a u32`);
  }
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value);
  return out;
}

/** `<u64>`: two big-endian cells, high first. */
export function fdtU64(value: bigint): Uint8Array {
  checkU64(value, 'value');
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, value);
  return out;
}

export function fdtString(text: string): Uint8Array {
  return fdtStringList([text]);
}

/** NUL-terminated strings back to back, as `compatible = "a", "b"` is stored. */
export function fdtStringList(list: readonly string[]): Uint8Array {
  const parts = list.map((text) => {
    const encoded = encodeUtf8(text);
    if (encoded.includes(0))
      throw new AbiError('fdt-property', {}, `string ${JSON.stringify(text)} contains a NUL`);
    return encoded;
  });
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength + 1, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.byteLength + 1;
  }
  return out;
}

export function readFdtU32(value: Uint8Array, name: string): number {
  checkLength(value, 4, name);
  return new DataView(value.buffer, value.byteOffset, 4).getUint32(0);
}

export function readFdtU64(value: Uint8Array, name: string): bigint {
  checkLength(value, 8, name);
  return new DataView(value.buffer, value.byteOffset, 8).getBigUint64(0);
}

export function readFdtString(value: Uint8Array, name: string): string {
  const list = readFdtStringList(value, name);
  if (list.length !== 1)
    throw new AbiError(`fdt property '${name}'`, {}, `holds ${list.length} strings, not one`);
  return list[0]!;
}

export function readFdtStringList(value: Uint8Array, name: string): string[] {
  if (value.byteLength === 0 || value[value.byteLength - 1] !== 0) {
    throw new AbiError(`fdt property '${name}'`, {}, 'is not NUL-terminated text');
  }
  const list: string[] = [];
  let start = 0;
  for (let i = 0; i < value.byteLength; i++) {
    if (value[i] === 0) {
      list.push(decodeUtf8(value.subarray(start, i)));
      start = i + 1;
    }
  }
  return list;
}

function writeNode(struct: ByteSink, strings: StringTable, node: FdtNode, depth: number): void {
  if (depth >= FDT_MAX_DEPTH) throw new AbiError(STRUCTURE, {}, `nodes nested deeper than ${FDT_MAX_DEPTH}`);
  const name = encodeUtf8(node.name);
  if (name.includes(0))
    throw new AbiError(STRUCTURE, {}, `node name ${JSON.stringify(node.name)} contains a NUL`);
  if (depth > 0 && name.byteLength === 0)
    throw new AbiError(STRUCTURE, {}, 'only the root node may have an empty name');
  struct.u32(FDT_BEGIN_NODE);
  struct.bytes4(name, true);
  for (const [propName, value] of node.props) {
    struct.u32(FDT_PROP);
    struct.u32(value.byteLength);
    struct.u32(strings.offsetOf(propName));
    struct.bytes4(value, false);
  }
  for (const child of node.children) writeNode(struct, strings, child, depth + 1);
  struct.u32(FDT_END_NODE);
}

function parseStructure(
  blob: Uint8Array,
  offStruct: number,
  sizeStruct: number,
  offStrings: number,
  sizeStrings: number,
): FdtNode {
  const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  const end = offStruct + sizeStruct;
  const stack: FdtNode[] = [];
  /** Per open node: a child was seen, so a later property would be invisible to libfdt. */
  const sawChild: boolean[] = [];
  let root: FdtNode | undefined;
  let pos = offStruct;
  for (;;) {
    if (pos + 4 > end) fail(pos, 'structure block ends without FDT_END');
    const token = view.getUint32(pos);
    const at = pos;
    pos += 4;
    switch (token) {
      case FDT_BEGIN_NODE: {
        const nameEnd = blob.indexOf(0, pos);
        if (nameEnd === -1 || nameEnd >= end) fail(pos, 'node name runs past the structure block');
        const node: FdtNode = {
          name: decodeUtf8(blob.subarray(pos, nameEnd)),
          props: new Map(),
          children: [],
        };
        pos = align4(nameEnd + 1);
        const parent = stack.at(-1);
        if (parent) {
          parent.children.push(node);
          sawChild[sawChild.length - 1] = true;
        } else if (root) {
          fail(at, 'a second root node');
        } else {
          root = node;
        }
        if (stack.length >= FDT_MAX_DEPTH) fail(at, `nodes nested deeper than ${FDT_MAX_DEPTH}`);
        stack.push(node);
        sawChild.push(false);
        break;
      }
      case FDT_END_NODE:
        if (!stack.pop()) fail(at, 'FDT_END_NODE with no open node');
        sawChild.pop();
        break;
      case FDT_PROP: {
        const node = stack.at(-1);
        if (!node) fail(at, 'property outside any node');
        if (sawChild.at(-1)) fail(at, `property after a subnode of '${node.name}'`);
        if (pos + 8 > end) fail(at, 'property header runs past the structure block');
        const length = view.getUint32(pos);
        const nameOffset = view.getUint32(pos + 4);
        pos += 8;
        if (length > end - pos) fail(at, `property value of ${length} bytes runs past the structure block`);
        const name = stringAt(blob, offStrings, sizeStrings, nameOffset, at);
        if (node.props.has(name)) fail(at, `duplicate property '${name}' in node '${node.name}'`);
        node.props.set(name, new Uint8Array(blob.subarray(pos, pos + length)));
        pos = align4(pos + length);
        break;
      }
      case FDT_NOP:
        break;
      case FDT_END:
        if (stack.length > 0) fail(at, `FDT_END with ${stack.length} node(s) still open`);
        if (!root) fail(at, 'no root node');
        return root;
      default:
        fail(at, `unknown token 0x${token.toString(16)}`);
    }
  }
}

function parseReserveMap(view: DataView, offReserve: number, totalSize: number): FdtReservation[] {
  const entries: FdtReservation[] = [];
  for (let pos = offReserve; ; pos += RESERVATION_SIZE) {
    if (pos + RESERVATION_SIZE > totalSize) fail(pos, 'memory reservation map has no {0, 0} terminator');
    const address = view.getBigUint64(pos);
    const size = view.getBigUint64(pos + 8);
    if (address === 0n && size === 0n) return entries;
    entries.push({ address, size });
  }
}

function stringAt(
  blob: Uint8Array,
  offStrings: number,
  sizeStrings: number,
  nameOffset: number,
  at: number,
): string {
  if (nameOffset >= sizeStrings) fail(at, `property name offset ${nameOffset} is outside the strings block`);
  const start = offStrings + nameOffset;
  const stop = blob.indexOf(0, start);
  if (stop === -1 || stop >= offStrings + sizeStrings) fail(at, 'property name runs past the strings block');
  if (stop === start) fail(at, 'empty property name');
  return decodeUtf8(blob.subarray(start, stop));
}

function checkBlock(
  what: string,
  offset: number,
  size: number,
  align: number,
  totalSize: number,
  field: number,
): void {
  if (offset < HEADER_SIZE || offset % align !== 0) fail(field, `${what} offset ${offset} is misplaced`);
  if (offset + size > totalSize)
    fail(field, `${what} [${offset}, ${offset + size}) runs past totalsize ${totalSize}`);
}

function checkLength(value: Uint8Array, length: number, name: string): void {
  if (value.byteLength !== length) {
    throw new AbiError(`fdt property '${name}'`, {}, `is ${value.byteLength} bytes, expected ${length}`);
  }
}

function checkU64(value: bigint, what: string): void {
  if (typeof value !== 'bigint' || value < 0n || value >= 1n << 64n) {
    throw new AbiError(STRUCTURE, {}, `${what} ${String(value)} is not a u64`);
  }
}

function align4(n: number): number {
  return (n + 3) & ~3;
}

function fail(offset: number, reason: string): never {
  throw new AbiError(STRUCTURE, { offset }, reason);
}

/** Property names, each stored once, in order of first use. */
class StringTable {
  private readonly offsets = new Map<string, number>();
  private readonly sink = new ByteSink();

  offsetOf(name: string): number {
    const known = this.offsets.get(name);
    if (known !== undefined) return known;
    const encoded = encodeUtf8(name);
    if (encoded.byteLength === 0 || encoded.includes(0)) {
      throw new AbiError(STRUCTURE, {}, `bad property name ${JSON.stringify(name)}`);
    }
    const offset = this.sink.length;
    this.sink.bytes4(encoded, true, false);
    this.offsets.set(name, offset);
    return offset;
  }

  get bytes(): Uint8Array {
    return this.sink.bytes();
  }
}

/** A growable big-endian byte buffer for the structure and strings blocks. */
class ByteSink {
  private buffer = new Uint8Array(256);
  length = 0;

  u32(value: number): void {
    this.reserve(4);
    new DataView(this.buffer.buffer).setUint32(this.length, value);
    this.length += 4;
  }

  /** Appends `data`, then a NUL if `terminate`, then zero padding to 4 bytes if `pad`. */
  bytes4(data: Uint8Array, terminate: boolean, pad = true): void {
    const raw = data.byteLength + (terminate ? 1 : 0);
    const total = pad ? align4(raw) : raw;
    this.reserve(total);
    this.buffer.set(data, this.length);
    this.buffer.fill(0, this.length + data.byteLength, this.length + total);
    this.length += total;
  }

  bytes(): Uint8Array {
    return this.buffer.slice(0, this.length);
  }

  private reserve(n: number): void {
    if (this.length + n <= this.buffer.byteLength) return;
    const grown = new Uint8Array(Math.max(this.buffer.byteLength * 2, this.length + n));
    grown.set(this.buffer.subarray(0, this.length));
    this.buffer = grown;
  }
}
