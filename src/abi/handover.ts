/**
 * A whole Linux 7.2 live-update handover, in and out: the entry points luokit's emulated
 * kernel and `luoctl inspect` use.
 *
 * writeHandover lays a model out as the kernel would: the root FDT page, the
 * kexec-metadata and LUO blobs, session and file block chains, memfd records with their
 * folio arrays, and last the radix tree marking every preserved block (metadata pages
 * included; the tree's own pages are not preserved, as in the kernel).
 *
 * decodeHandover follows the successor kernel through a handover (handover-reader.ts)
 * and reports each problem with the kernel's reaction; readHandover is its strict form
 * (anything worse than a warning throws), checkHandover its list form for
 * `luoctl inspect --check`. handoverBootOutcome answers the version question alone:
 * what would booting kernel X on this handover do.
 */
import { bytesKey, encodeUtf8 } from './bytes.js';
import { AbiError } from './errors.js';
import { decodeFdt } from './fdt.js';
import type { HandoverDecoding, HandoverModel, HandoverProblem, SessionModel } from './handover-model.js';
import { HandoverReader } from './handover-reader.js';
import {
  encodeKexecMetadata,
  encodeKhoRoot,
  encodeMemblockFdt,
  KHO_KEXEC_METADATA_SIZE,
  KHO_KEXEC_METADATA_VERSION,
  KHO_METADATA_NODE_NAME,
  type KhoSubtree,
  khoRootCompatibles,
  khoSubtree,
  MEMBLOCK_KHO_FDT,
  type ReserveMem,
} from './kho.js';
import { readBlockChain, writeBlockChain } from './kho-block.js';
import { encodeRadixTree, type PreservedRange, preservePagesRanges } from './kho-radix.js';
import {
  decodeLuoFileSer,
  decodeLuoSer,
  decodeLuoSessionSer,
  encodeLuoFileSer,
  encodeLuoFlbPage,
  encodeLuoSer,
  encodeLuoSessionSer,
  LUO_ABI_COMPATIBLE,
  LUO_FILE_SER_SIZE,
  LUO_KHO_ENTRY_NAME,
  LUO_SER_SIZE,
  LUO_SESSION_SER_SIZE,
} from './luo.js';
import { MEMFD_LUO_FH_COMPATIBLE, writeMemfd } from './memfd.js';
import { PAGE_SIZE, type PhysicalMemory, type PhysicalMemoryWriter, readStruct } from './memory.js';
import { type BootOutcome, bootOutcome, type HandoverCompatibles, type KernelAbi } from './versions.js';

export type {
  FileModel,
  FlbModel,
  HandoverDecoding,
  HandoverLayout,
  HandoverModel,
  HandoverProblem,
  KernelReaction,
  SessionModel,
} from './handover-model.js';

export interface WriteHandoverOptions {
  /**
   * Compatible strings to write instead of 7.2's, so an emulated older or newer kernel
   * can hand over (the layout stays 7.2's; version checks look only at the strings).
   */
  khoCompatible?: string;
  luoCompatible?: string;
}

export interface WrittenHandover {
  /** The root FDT: `kho.dtb` for the emulator. */
  fdt: Uint8Array;
  /** The preserved page holding the same FDT, as the kernel passes it (setup_data on x86). */
  fdtPa: bigint;
  memoryMapPa: bigint;
  /** Every preserved block, as the radix tree records it. */
  preserved: PreservedRange[];
}

export interface DecodeHandoverOptions {
  /** File handlers the successor has; 7.2's by default. */
  fileHandlers?: readonly string[];
}

const DEFAULT_FILE_HANDLERS = [MEMFD_LUO_FH_COMPATIBLE];

/**
 * Lays `model` out in memory through `writer` and returns the root FDT. Folio contents
 * must already be at their addresses (memfd.ts writeMemfdContents does that).
 */
export function writeHandover(
  writer: PhysicalMemoryWriter,
  model: HandoverModel,
  options: WriteHandoverOptions = {},
): WrittenHandover {
  const preserved: PreservedRange[] = [];
  const allocPreserved = (): bigint => {
    const pa = writer.allocPages(1);
    preserved.push({ pa, order: 0 });
    return pa;
  };

  // What the kernel allocates at boot: the FDT page, kexec-metadata, luo_ser, the FLB page.
  const fdtPa = allocPreserved();
  const metadataPa = allocPreserved();
  const metadata = encodeKexecMetadata({
    version: KHO_KEXEC_METADATA_VERSION,
    previousRelease: model.previousRelease,
    kexecCount: model.kexecCount,
  });
  writer.write(metadataPa, metadata);
  const luoSerPa = allocPreserved();
  const flbsPa = allocPreserved();
  writer.write(flbsPa, encodeLuoFlbPage(model.flbs ?? []));

  // What liveupdate_reboot() fills in.
  const sessionsPa = writeSessions(writer, model.sessions, preserved);
  const luoSer = encodeLuoSer({
    compatible: options.luoCompatible ?? LUO_ABI_COMPATIBLE,
    liveupdateNum: model.liveupdateNum,
    sessionsPa,
    flbsPa,
  });
  writer.write(luoSerPa, luoSer);

  const subtrees: KhoSubtree[] = [
    { name: KHO_METADATA_NODE_NAME, pa: metadataPa, size: BigInt(KHO_KEXEC_METADATA_SIZE) },
    { name: LUO_KHO_ENTRY_NAME, pa: luoSerPa, size: BigInt(LUO_SER_SIZE) },
  ];
  if (model.reserveMem && model.reserveMem.length > 0) {
    subtrees.push(writeMemblock(writer, model.reserveMem, preserved));
  }

  const memoryMapPa = encodeRadixTree(writer, preserved);
  const fdt = encodeKhoRoot({ memoryMapPa, subtrees, compatible: options.khoCompatible });
  writer.write(fdtPa, fdt);
  return { fdt, fdtPa, memoryMapPa, preserved };
}

/** Follows the successor kernel through a handover; see handover-reader.ts. */
export function decodeHandover(
  fdtBytes: Uint8Array,
  memory: PhysicalMemory,
  options: DecodeHandoverOptions = {},
): HandoverDecoding {
  const reader = new HandoverReader(fdtBytes, memory, options.fileHandlers ?? DEFAULT_FILE_HANDLERS);
  const model = reader.read();
  return { ...(model && { model }), problems: reader.problems, layout: reader.layout };
}

/** The model, or the first problem that stops the successor from restoring it. */
export function readHandover(
  fdtBytes: Uint8Array,
  memory: PhysicalMemory,
  options: DecodeHandoverOptions = {},
): HandoverModel {
  const decoding = decodeHandover(fdtBytes, memory, options);
  const blocking = decoding.problems.find((problem) => problem.reaction !== 'warning');
  if (blocking) throw blocking.error;
  return decoding.model!;
}

/** Every problem in a handover, tagged with the kernel's reaction (`luoctl inspect --check`). */
export function checkHandover(
  fdtBytes: Uint8Array,
  memory: PhysicalMemory,
  options: DecodeHandoverOptions = {},
): HandoverProblem[] {
  return decodeHandover(fdtBytes, memory, options).problems;
}

/**
 * The compatible strings of a handover, as far as they can be read, for versions.ts
 * bootOutcome(). Sessions and files are read in the luo-v5 layout whatever luo_ser's
 * compatible says (an emulated older kernel writes that layout under its own labels);
 * a layer that cannot be read contributes nothing.
 */
export function handoverCompatibles(fdtBytes: Uint8Array, memory: PhysicalMemory): HandoverCompatibles {
  const found: HandoverCompatibles = { kho: [], fileHandlers: [] };
  try {
    const { root } = decodeFdt(fdtBytes);
    found.kho = khoRootCompatibles(fdtBytes);
    const subtree = khoSubtree(root, LUO_KHO_ENTRY_NAME);
    if (!subtree) return found;
    const ser = decodeLuoSer(readStruct(memory, 'luo_ser', subtree.pa, LUO_SER_SIZE));
    found.luo = ser.compatible;
    for (const entry of readBlockChain(memory, ser.sessionsPa, LUO_SESSION_SER_SIZE, 'luo session blocks')
      .entries) {
      const session = decodeLuoSessionSer(entry);
      for (const file of readBlockChain(memory, session.filesPa, LUO_FILE_SER_SIZE, 'luo file blocks')
        .entries) {
        found.fileHandlers.push(decodeLuoFileSer(file).compatible);
      }
    }
  } catch (error) {
    if (!(error instanceof AbiError)) throw error;
  }
  return found;
}

/** bootOutcome() for a handover in memory: what booting `target` on it would do, and why. */
export function handoverBootOutcome(
  fdtBytes: Uint8Array,
  memory: PhysicalMemory,
  target: string | KernelAbi,
): { outcome: BootOutcome; compatibles: HandoverCompatibles } {
  const compatibles = handoverCompatibles(fdtBytes, memory);
  return { outcome: bootOutcome(compatibles, target), compatibles };
}

/** The session block chain and everything below it; returns its head (0 with no sessions). */
function writeSessions(
  writer: PhysicalMemoryWriter,
  sessions: SessionModel[],
  preserved: PreservedRange[],
): bigint {
  const names = new Set<string>();
  const entries = sessions.map((session) => {
    const key = bytesKey(session.nameBytes ?? encodeUtf8(session.name));
    if (names.has(key)) throw new AbiError('luo_session_ser', {}, `duplicate session '${session.name}'`);
    names.add(key);
    const files = writeBlockChain(
      writer,
      writeFiles(writer, session, preserved),
      LUO_FILE_SER_SIZE,
      'luo file blocks',
    );
    preserved.push(...files.preserved);
    return encodeLuoSessionSer({
      name: session.name,
      ...(session.nameBytes ? { nameBytes: session.nameBytes } : {}),
      filesPa: files.headPa,
      fileCount: BigInt(session.files.length),
    });
  });
  const chain = writeBlockChain(writer, entries, LUO_SESSION_SER_SIZE, 'luo session blocks');
  preserved.push(...chain.preserved);
  return chain.headPa;
}

/** One session's luo_file_ser entries, writing each memfd's record on the way. */
function writeFiles(
  writer: PhysicalMemoryWriter,
  session: SessionModel,
  preserved: PreservedRange[],
): Uint8Array[] {
  const tokens = new Set<bigint>();
  return session.files.map((file) => {
    const where = `file ${file.token} of session '${session.name}'`;
    if (tokens.has(file.token)) throw new AbiError('luo_file_ser', {}, `duplicate token: ${where}`);
    tokens.add(file.token);
    let data = file.data ?? 0n;
    if (file.memfd) {
      const record = writeMemfd(writer, file.memfd);
      preserved.push(...record.preserved);
      data = record.pa;
    } else if (file.compatible === MEMFD_LUO_FH_COMPATIBLE) {
      throw new AbiError('luo_file_ser', {}, `no memfd state for ${where}`);
    }
    return encodeLuoFileSer({ compatible: file.compatible, data, token: file.token });
  });
}

/** prepare_kho_fdt(): the memblock FDT in a preserved page, and the regions themselves preserved. */
function writeMemblock(
  writer: PhysicalMemoryWriter,
  regions: ReserveMem[],
  preserved: PreservedRange[],
): KhoSubtree {
  const blob = encodeMemblockFdt(regions);
  if (blob.byteLength > PAGE_SIZE)
    throw new AbiError('memblock-fdt', {}, `${blob.byteLength} bytes do not fit a page`);
  const pa = writer.allocPages(1);
  preserved.push({ pa, order: 0 });
  writer.write(pa, blob);
  for (const region of regions) {
    if (region.size % BigInt(PAGE_SIZE) !== 0n) {
      throw new AbiError(
        'memblock-fdt',
        { pa: region.start },
        `region '${region.name}' is not a whole number of pages`,
      );
    }
    preserved.push(...preservePagesRanges(region.start, region.size / BigInt(PAGE_SIZE)));
  }
  return { name: MEMBLOCK_KHO_FDT, pa, size: BigInt(blob.byteLength) };
}
