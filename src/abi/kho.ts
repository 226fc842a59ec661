/**
 * The KHO root: the one-page FDT a kernel hands to its kexec successor (`kho-v4`,
 * include/linux/kho/abi/kexec_handover.h), and the small subtrees KHO itself and
 * memblock register in it.
 *
 *   / { compatible = "kho-v4"; preserved-memory-map = <root of the radix tree>;
 *       <name> { preserved-data = <blob address>; blob-size = <blob bytes>; }; ... }
 *
 * The three u64 properties are stored in CPU byte order, not the FDT's big-endian:
 * the kernel passes `&phys` straight to fdt_setprop() and reads them back with a plain
 * load. KHO exists on little-endian x86_64 and arm64 only, so they are little-endian here.
 * libfdt's fdt_add_subnode() inserts each new subnode before the existing ones, so the
 * blob lists subtrees newest first: memblock, LUO, kexec-metadata.
 *
 * Subtrees defined in kexec_handover.c and mm/memblock.c:
 * - `kexec-metadata`: a packed {u32 version = 1; char previous_release[65]; u32 kexec_count}
 *   (73 bytes), the releasing kernel's `uname -r` and the kexec count since cold boot;
 *   a successor ignores it (with a warning) when it is short or of another version.
 * - `memblock`: an FDT `compatible = "memblock-v1"` with one child per `reserve_mem=`
 *   region, `compatible = "reserve-mem-v1"; start; size` (u64s in CPU order again).
 */
import { readCString, readU32, writeCString, writeU32 } from './bytes.js';
import { AbiError } from './errors.js';
import {
  type DecodedFdt,
  decodeFdt,
  encodeFdt,
  FDT_MAGIC,
  type FdtNode,
  fdtNode,
  fdtString,
  findFdtChild,
  readFdtStringList,
} from './fdt.js';
import { PAGE_SIZE, type PhysicalMemory } from './memory.js';

export const KHO_FDT_COMPATIBLE = 'kho-v4';
export const KHO_FDT_MEMORY_MAP_PROP_NAME = 'preserved-memory-map';
export const KHO_SUB_TREE_PROP_NAME = 'preserved-data';
export const KHO_SUB_TREE_SIZE_PROP_NAME = 'blob-size';
/** The root FDT lives in one preserved page and must fit it. */
export const KHO_FDT_MAX_SIZE = PAGE_SIZE;

export const KHO_METADATA_NODE_NAME = 'kexec-metadata';
export const KHO_KEXEC_METADATA_VERSION = 1;
/** __NEW_UTS_LEN: `uname -r` without its NUL. */
export const NEW_UTS_LEN = 64;
export const KHO_KEXEC_METADATA_SIZE = 4 + NEW_UTS_LEN + 1 + 4;

export const MEMBLOCK_KHO_FDT = 'memblock';
export const MEMBLOCK_KHO_NODE_COMPATIBLE = 'memblock-v1';
export const RESERVE_MEM_KHO_NODE_COMPATIBLE = 'reserve-mem-v1';

/** A registered blob: a subnode of the root. */
export interface KhoSubtree {
  name: string;
  pa: bigint;
  size: bigint;
}

export interface KhoRoot {
  compatible: string[];
  memoryMapPa: bigint;
  fdt: DecodedFdt;
}

export interface KexecMetadata {
  version: number;
  previousRelease: string;
  kexecCount: number;
}

export interface ReserveMem {
  name: string;
  start: bigint;
  size: bigint;
}

/** A u64 property value as KHO stores it: CPU (little-endian) byte order. */
export function khoU64(value: bigint): Uint8Array {
  if (typeof value !== 'bigint' || value < 0n || value >= 1n << 64n) {
    throw new AbiError('kho-fdt', {}, `${String(value)} is not a u64`);
  }
  const bytes = new Uint8Array(8);
  new DataView(bytes.buffer).setBigUint64(0, value, true);
  return bytes;
}

export function readKhoU64(value: Uint8Array | undefined, name: string, structure: string): bigint {
  if (!value) throw new AbiError(structure, {}, `property '${name}' is missing`);
  if (value.byteLength !== 8)
    throw new AbiError(structure, {}, `property '${name}' is ${value.byteLength} bytes, not 8`);
  return new DataView(value.buffer, value.byteOffset, 8).getBigUint64(0, true);
}

/**
 * The root FDT for a handover. `subtrees` are in registration order (the order
 * kho_add_subtree() was called); the blob holds them newest first, as libfdt leaves them.
 */
export function encodeKhoRoot(root: {
  memoryMapPa: bigint;
  subtrees: KhoSubtree[];
  compatible?: string;
}): Uint8Array {
  const children = [...root.subtrees].reverse().map((subtree) =>
    fdtNode(subtree.name, {
      [KHO_SUB_TREE_PROP_NAME]: khoU64(subtree.pa),
      [KHO_SUB_TREE_SIZE_PROP_NAME]: khoU64(subtree.size),
    }),
  );
  const fdt = encodeFdt(
    fdtNode(
      '',
      {
        compatible: fdtString(root.compatible ?? KHO_FDT_COMPATIBLE),
        [KHO_FDT_MEMORY_MAP_PROP_NAME]: khoU64(root.memoryMapPa),
      },
      children,
    ),
  );
  if (fdt.byteLength > KHO_FDT_MAX_SIZE) {
    throw new AbiError(
      'kho-fdt',
      {},
      `${fdt.byteLength} bytes do not fit the ${KHO_FDT_MAX_SIZE}-byte FDT page`,
    );
  }
  return fdt;
}

/** The root's compatible strings (empty if it has none), for version checks that must not fail. */
export function khoRootCompatibles(bytes: Uint8Array): string[] {
  const compatible = decodeFdt(bytes).root.props.get('compatible');
  return compatible ? readFdtStringList(compatible, 'compatible') : [];
}

/**
 * Decodes the root FDT as kho_populate() accepts it: a valid FDT whose root is
 * compatible with `kho-v4` and has a non-zero preserved-memory-map. Anything else makes
 * the next kernel disable KHO revival and boot as from cold.
 */
export function decodeKhoRoot(bytes: Uint8Array): KhoRoot {
  const fdt = decodeFdt(bytes);
  const compatibleValue = fdt.root.props.get('compatible');
  const compatible = compatibleValue ? readFdtStringList(compatibleValue, 'compatible') : [];
  if (!compatible.includes(KHO_FDT_COMPATIBLE)) {
    const found = compatible.length > 0 ? compatible.map((c) => `'${c}'`).join(', ') : 'none';
    throw new AbiError('kho-fdt', { offset: 0 }, `root compatible is ${found}, not '${KHO_FDT_COMPATIBLE}'`);
  }
  const memoryMapPa = readKhoU64(
    fdt.root.props.get(KHO_FDT_MEMORY_MAP_PROP_NAME),
    KHO_FDT_MEMORY_MAP_PROP_NAME,
    'kho-fdt',
  );
  if (memoryMapPa === 0n)
    throw new AbiError('kho-fdt', { offset: 0 }, `${KHO_FDT_MEMORY_MAP_PROP_NAME} is 0`);
  return { compatible, memoryMapPa, fdt };
}

/**
 * The subtree `name` of the root FDT node `root`, as kho_retrieve_subtree() finds it, or
 * undefined when there is no such subnode; a missing or malformed property is an AbiError.
 */
export function khoSubtree(root: FdtNode, name: string): KhoSubtree | undefined {
  const node = findFdtChild(root, name);
  return node ? subtreeOf(node) : undefined;
}

/** Every subnode of the root with its blob, or what is wrong with it. */
export function khoSubtrees(root: FdtNode): (KhoSubtree | { name: string; error: AbiError })[] {
  return root.children.map((node) => {
    try {
      return subtreeOf(node);
    } catch (error) {
      if (error instanceof AbiError) return { name: node.name, error };
      throw error;
    }
  });
}

export function encodeKexecMetadata(metadata: KexecMetadata): Uint8Array {
  const bytes = new Uint8Array(KHO_KEXEC_METADATA_SIZE);
  writeU32(bytes, 0, metadata.version, 'kho_kexec_metadata', 'version');
  writeCString(bytes, 4, NEW_UTS_LEN + 1, metadata.previousRelease, 'kho_kexec_metadata', 'previous_release');
  writeU32(bytes, 4 + NEW_UTS_LEN + 1, metadata.kexecCount, 'kho_kexec_metadata', 'kexec_count');
  return bytes;
}

/**
 * Decodes a kexec-metadata blob of `blobSize` bytes as kho_in_kexec_metadata() reads it;
 * where the kernel would ignore the blob this throws, saying why.
 */
export function decodeKexecMetadata(bytes: Uint8Array, blobSize: bigint): KexecMetadata {
  const structure = 'kho_kexec_metadata';
  if (blobSize < 4n || bytes.byteLength < 4)
    throw new AbiError(structure, { offset: 0 }, `blob of ${blobSize} bytes has no version`);
  const version = readU32(bytes, 0);
  if (version !== KHO_KEXEC_METADATA_VERSION)
    throw new AbiError(structure, { offset: 0 }, `version ${version} is not 1`);
  if (blobSize < BigInt(KHO_KEXEC_METADATA_SIZE) || bytes.byteLength < KHO_KEXEC_METADATA_SIZE) {
    throw new AbiError(
      structure,
      { offset: 0 },
      `blob of ${blobSize} bytes is shorter than ${KHO_KEXEC_METADATA_SIZE}`,
    );
  }
  // strscpy() into char[65] keeps at most 64 bytes when the field has no NUL.
  const release = readCString(bytes, 4, NEW_UTS_LEN);
  return { version, previousRelease: release.text, kexecCount: readU32(bytes, 4 + NEW_UTS_LEN + 1) };
}

/** The memblock subtree's FDT for `regions`, as prepare_kho_fdt() builds it. */
export function encodeMemblockFdt(regions: readonly ReserveMem[]): Uint8Array {
  return encodeFdt(
    fdtNode(
      '',
      { compatible: fdtString(MEMBLOCK_KHO_NODE_COMPATIBLE) },
      regions.map((region) =>
        fdtNode(region.name, {
          compatible: fdtString(RESERVE_MEM_KHO_NODE_COMPATIBLE),
          start: khoU64(region.start),
          size: khoU64(region.size),
        }),
      ),
    ),
  );
}

/** The reserve-mem regions of a memblock subtree, refusing what reserve_mem_kho_revive() refuses. */
export function decodeMemblockFdt(bytes: Uint8Array): ReserveMem[] {
  const structure = 'memblock-fdt';
  const { root } = decodeFdt(bytes);
  requireCompatible(root, MEMBLOCK_KHO_NODE_COMPATIBLE, structure);
  return root.children.map((node) => {
    requireCompatible(node, RESERVE_MEM_KHO_NODE_COMPATIBLE, structure);
    return {
      name: node.name,
      start: readKhoU64(node.props.get('start'), `${node.name}/start`, structure),
      size: readKhoU64(node.props.get('size'), `${node.name}/size`, structure),
    };
  });
}

/**
 * Every page in `memory` that holds a KHO root FDT, for dumps where nothing says where it
 * is (x86 passes it in setup_data, arm64 in /chosen). A running 7.2 kernel has two: the
 * one it booted with (still preserved) and the one it keeps up to date for its successor.
 */
export function scanForKhoRoots(memory: PhysicalMemory): { pa: bigint; compatible: string[] }[] {
  const found: { pa: bigint; compatible: string[] }[] = [];
  const page = BigInt(PAGE_SIZE);
  const window = 256n * page;
  for (const range of memory.ranges()) {
    for (let at = range.start + ((page - (range.start % page)) % page); at < range.end; at += window) {
      const length = Number((range.end - at < window ? range.end - at : window) / page) * PAGE_SIZE;
      const bytes = memory.read(at, length);
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      for (let offset = 0; offset < length; offset += PAGE_SIZE) {
        if (view.getUint32(offset) !== FDT_MAGIC) continue;
        try {
          const compatible = khoRootCompatibles(bytes.subarray(offset, offset + KHO_FDT_MAX_SIZE));
          if (compatible.some((c) => c.startsWith('kho-v')))
            found.push({ pa: at + BigInt(offset), compatible });
        } catch (error) {
          if (!(error instanceof AbiError)) throw error;
        }
      }
    }
  }
  return found;
}

function subtreeOf(node: FdtNode): KhoSubtree {
  const structure = `kho-fdt subnode '${node.name}'`;
  return {
    name: node.name,
    pa: readKhoU64(node.props.get(KHO_SUB_TREE_PROP_NAME), KHO_SUB_TREE_PROP_NAME, structure),
    size: readKhoU64(node.props.get(KHO_SUB_TREE_SIZE_PROP_NAME), KHO_SUB_TREE_SIZE_PROP_NAME, structure),
  };
}

function requireCompatible(node: FdtNode, compatible: string, structure: string): void {
  const value = node.props.get('compatible');
  const list = value ? readFdtStringList(value, 'compatible') : [];
  if (!list.includes(compatible)) {
    const name = node.name || '/';
    const found = list.length > 0 ? list.map((c) => `'${c}'`).join(', ') : 'none';
    throw new AbiError(structure, {}, `node '${name}' is not compatible with '${compatible}' (has ${found})`);
  }
}
