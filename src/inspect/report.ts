/**
 * `luoctl inspect` on a whole handover (an emulator state directory, or a guest's root
 * FDT and memory dump): everything the successor kernel would read, as one report whose
 * JSON form is documented in docs/inspect.md (schema `luokit-inspect/1`).
 *
 * The verdict and problems come from src/abi's decodeHandover, which follows the
 * successor kernel step by step. The rest is read again here, tolerantly and in the
 * luo-v5 layout whatever the compatibles say, so that a handover the kernel would refuse
 * still shows as much of itself as can be read.
 */
import { AbiError } from '../abi/errors.js';
import { decodeFdt } from '../abi/fdt.js';
import { decodeHandover, type HandoverModel } from '../abi/handover.js';
import type { KernelReaction } from '../abi/handover-model.js';
import {
  decodeKexecMetadata,
  decodeMemblockFdt,
  KHO_KEXEC_METADATA_SIZE,
  KHO_METADATA_NODE_NAME,
  type KhoSubtree,
  khoSubtrees,
  MEMBLOCK_KHO_FDT,
} from '../abi/kho.js';
import { entriesPerBlock, KHO_BLOCK_HEADER_SIZE, readBlockChain } from '../abi/kho-block.js';
import {
  decodeLuoFileSer,
  decodeLuoSer,
  decodeLuoSessionSer,
  LUO_FILE_SER_SIZE,
  LUO_SER_SIZE,
  LUO_SESSION_SER_SIZE,
  readLuoFlbs,
} from '../abi/luo.js';
import { decodeMemfdLuoSer, MEMFD_LUO_SER_SIZE, type MemfdState } from '../abi/memfd.js';
import { PAGE_SHIFT, PAGE_SIZE, type PhysicalMemory, type PhysicalRange, readStruct } from '../abi/memory.js';
import type { PreservedMemoryMap } from '../abi/preserved-map.js';
import { folioFlagNames, hex, type JsonU64, REACTION_TEXT, sealNames, u64, worstReaction } from './format.js';

export const INSPECT_SCHEMA = 'luokit-inspect/1';
export const DEFAULT_LISTED_RANGES = 64;

export type MemoryFormat = 'sparse-image' | 'raw' | 'elf-core';

/** Where the handover was read from. */
export interface HandoverSource {
  kind: 'emulator' | 'dump';
  /** The emulator's state directory (kind emulator). */
  stateDir: string | null;
  /** incoming: the running emulated kernel booted from it; outgoing: written, not yet booted. */
  handover: 'incoming' | 'outgoing' | null;
  /** The root FDT file, or null when it was read from memory at fdtPa. */
  fdt: string | null;
  fdtPa: string | null;
  memory: string;
  memoryFormat: MemoryFormat;
  /** Physical address ranges present in the memory file. */
  memoryRanges: { start: string; end: string }[];
}

export interface HandoverReport {
  schema: typeof INSPECT_SCHEMA;
  source: HandoverSource;
  /** The worst problem's reaction, or ok. */
  verdict: 'ok' | KernelReaction;
  /** True when nothing stops a restore (warnings allowed): what --check passes on. */
  ok: boolean;
  kho: KhoReport;
  preserved: PreservedReport | null;
  kexecMetadata: KexecMetadataReport | null;
  memblock: MemblockReport | null;
  luo: LuoReport | null;
  sessions: SessionReport[];
  flbs: FlbReport[];
  problems: ProblemReport[];
  /** What the problems may mean beyond themselves (AFTER_BOOT_NOTE). */
  notes: string[];
}

export interface KhoReport {
  compatible: string[];
  /** The FDT's totalsize, or the file's length when it is not an FDT. */
  fdtBytes: number;
  memoryMap: string | null;
  /** The FDT header's memory reservation map (KHO leaves it empty). */
  reserveMap: { address: string; size: JsonU64 }[];
  subtrees: { name: string; pa: string | null; size: JsonU64 | null; error: string | null }[];
}

export interface PreservedReport {
  blocks: number;
  pages: JsonU64;
  bytes: JsonU64;
  runs: number;
  /** Pages of the radix tree itself (not preserved; the successor walks them at boot). */
  radixPages: number;
  byOrder: {
    order: number;
    blockBytes: JsonU64;
    blocks: number;
    pages: JsonU64;
    bytes: JsonU64;
    runs: number;
  }[];
  /** Runs of blocks, by order then address; at most the number asked for. */
  ranges: { order: number; start: string; end: string; blocks: number }[];
  rangesOmitted: number;
}

export interface KexecMetadataReport {
  pa: string;
  size: JsonU64;
  version: number;
  previousRelease: string;
  kexecCount: number;
}

export interface MemblockReport {
  pa: string;
  size: JsonU64;
  regions: { name: string; start: string; size: JsonU64 }[];
}

export interface LuoReport {
  pa: string;
  compatible: string;
  liveupdateNum: JsonU64;
  sessionsPa: string;
  flbsPa: string;
  sessionBlocks: string[];
}

export interface SessionReport {
  /** Address of this luo_session_ser entry. */
  entryPa: string;
  name: string;
  /** False when all 64 bytes are name (the kernel keeps 63). */
  nameTerminated: boolean;
  filesPa: string;
  fileCount: JsonU64;
  fileBlocks: string[];
  files: FileReport[];
}

export interface FileReport {
  /** Address of this luo_file_ser entry. */
  entryPa: string;
  token: string;
  compatible: string;
  /** luo_file_ser.data: for memfd-v2, the address of its memfd_luo_ser. */
  data: string;
  memfd: MemfdReport | null;
}

export interface MemfdReport {
  size: JsonU64;
  pos: JsonU64;
  seals: number;
  sealNames: string[];
  flags: number;
  nrFolios: JsonU64;
  folioArray: { first: string; totalPages: number; flags: number; order: number };
  /** The folios as RETRIEVE_FD would restore them; null when it would fail. */
  folios: FolioSummary | null;
}

export interface FolioSummary {
  count: number;
  pages: JsonU64;
  bytes: JsonU64;
  byOrder: { order: number; count: number }[];
  byFlags: { flags: number; names: string[]; count: number }[];
  /** Pages below size that no folio holds: they would read back as zeros. */
  missingPages: JsonU64;
}

export interface FlbReport {
  name: string;
  data: string;
  count: JsonU64;
}

export interface ProblemReport {
  reaction: KernelReaction;
  /** REACTION_TEXT: what the successor kernel does. */
  effect: string;
  structure: string;
  pa: string | null;
  offset: number | null;
  reason: string;
  message: string;
  session: string | null;
  token: string | null;
}

export interface InspectOptions {
  /** Runs listed in preserved.ranges; default DEFAULT_LISTED_RANGES, Infinity for all. */
  maxRanges?: number;
}

export function inspectHandover(
  fdtBytes: Uint8Array,
  memory: PhysicalMemory,
  source: HandoverSource,
  options: InspectOptions = {},
): HandoverReport {
  const decoding = decodeHandover(fdtBytes, memory);
  const { layout, model } = decoding;
  const problems = decoding.problems.map(
    (problem): ProblemReport => ({
      reaction: problem.reaction,
      effect: REACTION_TEXT[problem.reaction],
      structure: problem.error.structure,
      pa: problem.error.pa === undefined ? null : hex(problem.error.pa),
      offset: problem.error.offset ?? null,
      reason: problem.error.reason,
      message: problem.error.message,
      session: problem.session ?? null,
      token: problem.token === undefined ? null : problem.token.toString(),
    }),
  );
  const subtrees = layout.subtrees.length > 0 ? layout.subtrees : subtreesOf(fdtBytes);
  const found = (name: string): KhoSubtree | undefined =>
    subtrees.find((s): s is KhoSubtree => s.name === name && !('error' in s));
  const luo = readLuo(memory, layout.luoSerPa, layout.sessionBlocks);
  const verdict = worstReaction(decoding.problems.map((p) => p.reaction)) ?? 'ok';
  const sessions = luo ? readSessions(memory, luo.sessionsPa, model) : [];
  locateProblems(problems, sessions);
  return {
    schema: INSPECT_SCHEMA,
    source,
    verdict,
    ok: verdict === 'ok' || verdict === 'warning',
    kho: {
      compatible: layout.khoCompatible,
      fdtBytes: fdtSize(fdtBytes),
      memoryMap: layout.memoryMapPa === undefined ? null : hex(layout.memoryMapPa),
      reserveMap: reserveMapOf(fdtBytes),
      subtrees: subtrees.map((s) =>
        'error' in s
          ? { name: s.name, pa: null, size: null, error: s.error.message }
          : { name: s.name, pa: hex(s.pa), size: u64(s.size), error: null },
      ),
    },
    preserved: layout.preservedMap
      ? preservedReport(layout.preservedMap, layout.radixPages.length, options.maxRanges)
      : null,
    kexecMetadata: readKexecMetadata(memory, found(KHO_METADATA_NODE_NAME)),
    memblock: readMemblock(memory, found(MEMBLOCK_KHO_FDT)),
    luo: luo?.report ?? null,
    sessions,
    flbs: luo ? readFlbs(memory, luo.flbsPa) : [],
    problems,
    notes: source.kind === 'dump' && looksReadAfterBoot(problems) ? [AFTER_BOOT_NOTE] : [],
  };
}

/**
 * A dump of a kernel that has already booted from the handover no longer holds two of its
 * structures (Linux 7.2): LUO's early init frees luo_ser (luo_early_startup() ends with
 * kho_restore_free()), and the radix tree's pages were never preserved (the outgoing
 * kernel kzalloc()s them; kho_mem_retrieve() walks them during mm init, after which they
 * are free memory). Both then read as whatever reused them. The session and file blocks,
 * memfd records and folios stay until /dev/liveupdate is opened and files are retrieved.
 */
export const AFTER_BOOT_NOTE =
  'if this dump was taken after the next kernel booted from this handover, luo_ser and the radix tree ' +
  'are gone by design: LUO early init frees luo_ser (kho_restore_free) and the radix tree pages become ' +
  "free memory at mm init, so both may hold unrelated data; dump the memory before that kernel's early " +
  'init (QEMU: stop the guest at the banner its early console prints; docs/inspect.md)';

/** luo_ser unreadable, or metadata the outgoing kernel always preserves missing from the map. */
function looksReadAfterBoot(problems: readonly ProblemReport[]): boolean {
  return problems.some(
    (p) =>
      p.structure === 'luo_ser' || (p.structure === 'kho_kexec_metadata' && /not preserved/.test(p.reason)),
  );
}

/** The present ranges of a memory source, as the report lists them. */
export function memoryRangesOf(memory: PhysicalMemory): { start: string; end: string }[] {
  return memory.ranges().map((r: PhysicalRange) => ({ start: hex(r.start), end: hex(r.end) }));
}

function preservedReport(map: PreservedMemoryMap, radixPages: number, maxRanges?: number): PreservedReport {
  const limit = maxRanges ?? DEFAULT_LISTED_RANGES;
  let pages = 0n;
  let runs = 0;
  const byOrder = map.orderSummaries().map((o) => {
    const orderPages = BigInt(o.blocks) << BigInt(o.order);
    pages += orderPages;
    runs += o.runs;
    return {
      order: o.order,
      blockBytes: u64(BigInt(PAGE_SIZE) << BigInt(o.order)),
      blocks: o.blocks,
      pages: u64(orderPages),
      bytes: u64(orderPages << BigInt(PAGE_SHIFT)),
      runs: o.runs,
    };
  });
  const ranges: PreservedReport['ranges'] = [];
  if (limit > 0) {
    map.forEachRun((run) => {
      const end = run.pa + (BigInt(run.blocks) << BigInt(PAGE_SHIFT + run.order));
      ranges.push({ order: run.order, start: hex(run.pa), end: hex(end), blocks: run.blocks });
      return ranges.length < limit;
    });
  }
  return {
    blocks: map.blockCount,
    pages: u64(pages),
    bytes: u64(pages << BigInt(PAGE_SHIFT)),
    runs,
    radixPages,
    byOrder,
    ranges,
    rangesOmitted: runs - ranges.length,
  };
}

function readKexecMetadata(
  memory: PhysicalMemory,
  subtree: KhoSubtree | undefined,
): KexecMetadataReport | null {
  if (!subtree) return null;
  return tolerant(() => {
    const length =
      subtree.size < BigInt(KHO_KEXEC_METADATA_SIZE) ? Number(subtree.size) : KHO_KEXEC_METADATA_SIZE;
    const metadata = decodeKexecMetadata(
      readStruct(memory, 'kho_kexec_metadata', subtree.pa, length),
      subtree.size,
    );
    return { pa: hex(subtree.pa), size: u64(subtree.size), ...metadata };
  });
}

function readMemblock(memory: PhysicalMemory, subtree: KhoSubtree | undefined): MemblockReport | null {
  if (!subtree || subtree.size > BigInt(PAGE_SIZE)) return null;
  return tolerant(() => ({
    pa: hex(subtree.pa),
    size: u64(subtree.size),
    regions: decodeMemblockFdt(readStruct(memory, 'memblock-fdt', subtree.pa, Number(subtree.size))).map(
      (region) => ({ name: region.name, start: hex(region.start), size: u64(region.size) }),
    ),
  }));
}

function readLuo(
  memory: PhysicalMemory,
  luoSerPa: bigint | undefined,
  sessionBlocks: bigint[],
): { report: LuoReport; sessionsPa: bigint; flbsPa: bigint } | undefined {
  if (luoSerPa === undefined) return undefined;
  return (
    tolerant(() => {
      const ser = decodeLuoSer(readStruct(memory, 'luo_ser', luoSerPa, LUO_SER_SIZE));
      return {
        report: {
          pa: hex(luoSerPa),
          compatible: ser.compatible,
          liveupdateNum: u64(ser.liveupdateNum),
          sessionsPa: hex(ser.sessionsPa),
          flbsPa: hex(ser.flbsPa),
          sessionBlocks: sessionBlocks.map(hex),
        },
        sessionsPa: ser.sessionsPa,
        flbsPa: ser.flbsPa,
      };
    }) ?? undefined
  );
}

/** Sessions and files as laid out, with each memfd's record and, where restorable, its folios. */
function readSessions(
  memory: PhysicalMemory,
  sessionsPa: bigint,
  model: HandoverModel | undefined,
): SessionReport[] {
  const chain = tolerant(() =>
    readBlockChain(memory, sessionsPa, LUO_SESSION_SER_SIZE, 'luo session blocks'),
  );
  if (!chain) return [];
  return chain.entries.map((entry, i) => {
    const ser = decodeLuoSessionSer(entry);
    const entryPa = hex(entryAddress(chain.blocks, i, LUO_SESSION_SER_SIZE));
    const modelFiles = model?.sessions[i]?.files;
    const files =
      ser.filesPa === 0n
        ? undefined
        : tolerant(() => readBlockChain(memory, ser.filesPa, LUO_FILE_SER_SIZE, 'luo file blocks'));
    return {
      entryPa,
      name: ser.name,
      nameTerminated: ser.nameTerminated,
      filesPa: hex(ser.filesPa),
      fileCount: u64(ser.fileCount),
      fileBlocks: (files?.blocks ?? []).map(hex),
      files: (files?.entries ?? []).map((fileEntry, j) => {
        const file = decodeLuoFileSer(fileEntry);
        const state = modelFiles?.[j]?.token === file.token ? modelFiles[j]?.memfd : undefined;
        return {
          entryPa: hex(entryAddress(files!.blocks, j, LUO_FILE_SER_SIZE)),
          token: file.token.toString(),
          compatible: file.compatible,
          data: hex(file.data),
          memfd: file.compatible.startsWith('memfd-') ? readMemfdRecord(memory, file.data, state) : null,
        };
      }),
    };
  });
}

function readMemfdRecord(
  memory: PhysicalMemory,
  pa: bigint,
  state: MemfdState | undefined,
): MemfdReport | null {
  if (pa === 0n) return null;
  return tolerant(() => {
    const ser = decodeMemfdLuoSer(readStruct(memory, 'memfd_luo_ser', pa, MEMFD_LUO_SER_SIZE));
    return {
      size: u64(ser.size),
      pos: u64(ser.pos),
      seals: ser.seals,
      sealNames: sealNames(ser.seals),
      flags: ser.flags,
      nrFolios: u64(ser.nrFolios),
      folioArray: {
        first: hex(ser.folios.first),
        totalPages: ser.folios.totalPages,
        flags: ser.folios.flags,
        order: ser.folios.order,
      },
      folios: state ? folioSummary(state) : null,
    };
  });
}

function folioSummary(state: MemfdState): FolioSummary {
  const byOrder = new Map<number, number>();
  const byFlags = new Map<number, number>();
  let pages = 0n;
  let covered = 0n;
  const sizePages = (state.size + BigInt(PAGE_SIZE) - 1n) / BigInt(PAGE_SIZE);
  for (const folio of state.folios) {
    const n = 1n << BigInt(folio.order);
    pages += n;
    const end = folio.index + n < sizePages ? folio.index + n : sizePages;
    if (end > folio.index) covered += end - folio.index;
    byOrder.set(folio.order, (byOrder.get(folio.order) ?? 0) + 1);
    byFlags.set(folio.flags, (byFlags.get(folio.flags) ?? 0) + 1);
  }
  return {
    count: state.folios.length,
    pages: u64(pages),
    bytes: u64(pages << BigInt(PAGE_SHIFT)),
    byOrder: [...byOrder].sort(([a], [b]) => a - b).map(([order, count]) => ({ order, count })),
    byFlags: [...byFlags]
      .sort(([a], [b]) => a - b)
      .map(([flags, count]) => ({ flags, names: folioFlagNames(flags), count })),
    missingPages: u64(sizePages - covered),
  };
}

function readFlbs(memory: PhysicalMemory, flbsPa: bigint): FlbReport[] {
  if (flbsPa === 0n) return [];
  return (
    tolerant(() =>
      readLuoFlbs(memory, flbsPa).map((flb) => ({
        name: flb.name,
        data: hex(flb.data),
        count: u64(flb.count),
      })),
    ) ?? []
  );
}

function subtreesOf(fdtBytes: Uint8Array): ReturnType<typeof khoSubtrees> {
  return tolerant(() => khoSubtrees(decodeFdt(fdtBytes).root)) ?? [];
}

function fdtSize(fdtBytes: Uint8Array): number {
  return tolerant(() => decodeFdt(fdtBytes).totalSize) ?? fdtBytes.byteLength;
}

function reserveMapOf(fdtBytes: Uint8Array): KhoReport['reserveMap'] {
  return (
    tolerant(() =>
      decodeFdt(fdtBytes).reserveMap.map((entry) => ({ address: hex(entry.address), size: u64(entry.size) })),
    ) ?? []
  );
}

/** Where entry `index` of a block chain (kho-block.ts) sits. */
function entryAddress(blocks: readonly bigint[], index: number, entrySize: number): bigint {
  const perBlock = entriesPerBlock(entrySize);
  const block = blocks[Math.floor(index / perBlock)]!;
  return block + BigInt(KHO_BLOCK_HEADER_SIZE + (index % perBlock) * entrySize);
}

/**
 * Gives problems about a session or file entry, which the reader knows only by name and
 * token, the address of the entry they concern.
 */
function locateProblems(problems: ProblemReport[], sessions: readonly SessionReport[]): void {
  for (const problem of problems) {
    if (problem.pa !== null || problem.offset !== null || problem.session === null) continue;
    const session = sessions.find((s) => s.name === problem.session);
    if (!session) continue;
    if (problem.structure === 'luo_session_ser') problem.pa = session.entryPa;
    if (problem.structure === 'luo_file_ser' && problem.token !== null) {
      problem.pa = session.files.find((f) => f.token === problem.token)?.entryPa ?? null;
    }
    if (problem.pa !== null) problem.message = `${problem.structure} at pa ${problem.pa}: ${problem.reason}`;
  }
}

/** The value, or null where the bytes are bad (decodeHandover has already said why). */
function tolerant<T>(read: () => T): T | null {
  try {
    return read();
  } catch (error) {
    if (error instanceof AbiError) return null;
    throw error;
  }
}
