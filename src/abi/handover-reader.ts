/**
 * Reads a handover the way the successor kernel does, in the same order, trusting no
 * byte of it, and records every problem with the kernel's reaction (handover-model.ts):
 *
 * 1. kho_populate(), kho_mem_retrieve(): the root FDT and the preserved-memory map.
 *    Failure is a cold boot, and nothing further is read.
 * 2. kho_init(): kexec-metadata; memblock's reserve-mem subtree. Failures are ignored.
 * 3. luo_early_startup(): the LUO blob, luo_ser, the session block chain. Failure panics.
 * 4. luo_session_deserialize() at the first /dev/liveupdate open: sessions and their
 *    file chains, each file's handler. Failure makes every open fail with EIO.
 * 5. RETRIEVE_FD: each memfd record. Failure fails that file only.
 *
 * Along the way every structure page is checked against the preserved-memory map: the
 * kernel does not check, but a page that is not preserved may be reused before it is read.
 */
import { bytesKey, encodeUtf8 } from './bytes.js';
import { AbiError, hexPa } from './errors.js';
import type {
  FileModel,
  FlbModel,
  HandoverLayout,
  HandoverModel,
  HandoverProblem,
  KernelReaction,
  SessionModel,
} from './handover-model.js';
import {
  decodeKexecMetadata,
  decodeKhoRoot,
  decodeMemblockFdt,
  KHO_KEXEC_METADATA_SIZE,
  KHO_METADATA_NODE_NAME,
  type KhoRoot,
  khoRootCompatibles,
  khoSubtree,
  khoSubtrees,
  MEMBLOCK_KHO_FDT,
  type ReserveMem,
} from './kho.js';
import { readBlockChain } from './kho-block.js';
import { type PreservedRange, preservePagesRanges } from './kho-radix.js';
import { walkRadixTreeRuns } from './kho-radix-walk.js';
import {
  decodeLuoFileSer,
  decodeLuoSer,
  decodeLuoSessionSer,
  LUO_ABI_COMPATIBLE,
  LUO_FILE_SER_SIZE,
  LUO_KHO_ENTRY_NAME,
  LUO_SER_SIZE,
  LUO_SESSION_SER_SIZE,
  type LuoSer,
  readLuoFlbs,
} from './luo.js';
import { MEMFD_LUO_FH_COMPATIBLE, readMemfd } from './memfd.js';
import { checkPageAligned, PAGE_SIZE, type PhysicalMemory, readStruct } from './memory.js';
import { PreservedMemoryMap } from './preserved-map.js';

type ProblemContext = Pick<HandoverProblem, 'session' | 'sessionIndex' | 'token'>;

/** Above this many preserved blocks, layout.preserved stays empty (layout.preservedMap has them all). */
export const LAYOUT_MAX_BLOCKS = 1 << 20;

export class HandoverReader {
  readonly problems: HandoverProblem[] = [];
  readonly layout: HandoverLayout = {
    khoCompatible: [],
    radixPages: [],
    preserved: [],
    subtrees: [],
    sessionBlocks: [],
  };
  private preserved = new PreservedMemoryMap([]);

  constructor(
    private readonly fdtBytes: Uint8Array,
    private readonly memory: PhysicalMemory,
    private readonly fileHandlers: readonly string[],
  ) {}

  /** The handover as the successor restores it; undefined if it boots cold or panics. */
  read(): HandoverModel | undefined {
    const root = this.readKhoRoot();
    if (!root) return undefined;
    const metadata = this.readMetadata(root);
    const reserveMem = this.readReserveMem(root);
    const luo = this.readLuoSer(root);
    if (luo === 'panic') return undefined;
    if (luo === 'absent') return { liveupdateNum: 0n, ...metadata, sessions: [], flbs: [], reserveMem };
    const sessionEntries = this.attempt('panic', () =>
      readBlockChain(this.memory, luo.sessionsPa, LUO_SESSION_SER_SIZE, 'luo session blocks'),
    );
    if (!sessionEntries) return undefined;
    this.layout.sessionBlocks = sessionEntries.blocks;
    for (const block of sessionEntries.blocks)
      this.checkPreserved('luo session blocks', { pa: block, order: 0 });
    const flbs = this.readFlbs(luo.flbsPa);
    const sessions = this.readSessions(sessionEntries.entries);
    return { liveupdateNum: luo.liveupdateNum, ...metadata, sessions, flbs, reserveMem };
  }

  private readKhoRoot(): KhoRoot | undefined {
    const root = this.attempt('cold-boot', () => decodeKhoRoot(this.fdtBytes));
    if (!root) {
      this.layout.khoCompatible = compatiblesOrNone(this.fdtBytes);
      return undefined;
    }
    this.layout.khoCompatible = root.compatible;
    this.layout.memoryMapPa = root.memoryMapPa;
    this.layout.subtrees = khoSubtrees(root.fdt.root);
    const tree = this.attempt('cold-boot', () => {
      const collector = PreservedMemoryMap.collect();
      const nodePages = walkRadixTreeRuns(this.memory, root.memoryMapPa, collector.visit);
      return { map: collector.finish(), nodePages };
    });
    if (!tree) return undefined;
    this.preserved = tree.map;
    this.layout.preservedMap = tree.map;
    this.layout.preserved = tree.map.blockCount <= LAYOUT_MAX_BLOCKS ? [...tree.map.ranges] : [];
    this.layout.radixPages = tree.nodePages;
    const overlaps = this.preserved.overlaps();
    if (overlaps.length > 0) {
      const [outer, inner] = overlaps[0]!;
      const reason = `${overlaps.length} run(s) of preserved blocks overlap others; the first lies in the order-${outer.order} block at ${hexPa(outer.pa)}`;
      this.report('warning', new AbiError('kho-radix-leaf', { pa: inner.pa }, reason));
    }
    return root;
  }

  /** kho_in_kexec_metadata(): a bad blob is ignored, and the count starts again as from a cold boot. */
  private readMetadata(root: KhoRoot): { previousRelease: string; kexecCount: number } {
    const metadata = this.attempt('warning', () => {
      const subtree = khoSubtree(root.fdt.root, KHO_METADATA_NODE_NAME);
      if (!subtree) return undefined;
      const length =
        subtree.size < BigInt(KHO_KEXEC_METADATA_SIZE) ? Number(subtree.size) : KHO_KEXEC_METADATA_SIZE;
      const bytes = readStruct(this.memory, 'kho_kexec_metadata', subtree.pa, length);
      const decoded = decodeKexecMetadata(bytes, subtree.size);
      this.checkPreserved('kho_kexec_metadata', { pa: subtree.pa, order: 0 });
      return decoded;
    });
    return { previousRelease: metadata?.previousRelease ?? '', kexecCount: metadata?.kexecCount ?? 0 };
  }

  /** reserve_mem_kho_revive(): a bad memblock subtree only means regions are not revived. */
  private readReserveMem(root: KhoRoot): ReserveMem[] {
    const regions = this.attempt('warning', () => {
      const subtree = khoSubtree(root.fdt.root, MEMBLOCK_KHO_FDT);
      if (!subtree) return [];
      if (subtree.size > BigInt(PAGE_SIZE)) {
        throw new AbiError(
          'memblock-fdt',
          { pa: subtree.pa },
          `blob-size ${subtree.size} is more than its page`,
        );
      }
      const found = decodeMemblockFdt(
        readStruct(this.memory, 'memblock-fdt', subtree.pa, Number(subtree.size)),
      );
      this.checkPreserved('memblock-fdt', { pa: subtree.pa, order: 0 });
      for (const region of found) {
        if (region.start % BigInt(PAGE_SIZE) !== 0n || region.size % BigInt(PAGE_SIZE) !== 0n) {
          throw new AbiError(
            'memblock-fdt',
            { pa: region.start },
            `region '${region.name}' is not page aligned`,
          );
        }
        for (const range of preservePagesRanges(region.start, region.size / BigInt(PAGE_SIZE))) {
          this.checkPreserved(`reserve-mem '${region.name}'`, range);
        }
      }
      return found;
    });
    return regions ?? [];
  }

  /** luo_early_startup(): no LUO subtree is a fresh start; anything wrong with it panics. */
  private readLuoSer(root: KhoRoot): LuoSer | 'absent' | 'panic' {
    const before = this.problems.length;
    const subtree = this.attempt('panic', () => khoSubtree(root.fdt.root, LUO_KHO_ENTRY_NAME));
    if (subtree === undefined) return this.problems.length > before ? 'panic' : 'absent';
    const ser = this.attempt('panic', () => {
      if (subtree.size < BigInt(LUO_SER_SIZE)) {
        throw new AbiError(
          'luo_ser',
          { pa: subtree.pa },
          `blob-size ${subtree.size} is smaller than ${LUO_SER_SIZE}`,
        );
      }
      checkPageAligned('luo_ser', subtree.pa);
      const decoded = decodeLuoSer(readStruct(this.memory, 'luo_ser', subtree.pa, LUO_SER_SIZE));
      this.layout.luoSerPa = subtree.pa;
      this.layout.luoCompatible = decoded.compatible;
      if (decoded.compatible !== LUO_ABI_COMPATIBLE) {
        throw new AbiError(
          'luo_ser',
          { pa: subtree.pa },
          `compatible '${decoded.compatible}' is not '${LUO_ABI_COMPATIBLE}'`,
        );
      }
      return decoded;
    });
    if (!ser) return 'panic';
    this.checkPreserved('luo_ser', { pa: subtree.pa, order: 0 });
    return ser;
  }

  /** luo_flb_setup_incoming() only records the address; FLBs are read when retrieved. */
  private readFlbs(flbsPa: bigint): FlbModel[] {
    if (flbsPa === 0n) return [];
    this.layout.flbsPa = flbsPa;
    this.checkPreserved('luo_flb_header_ser', { pa: flbsPa, order: 0 });
    return this.attempt('retrieve-fails', () => readLuoFlbs(this.memory, flbsPa)) ?? [];
  }

  /** luo_session_deserialize(), at the first open of /dev/liveupdate. */
  private readSessions(entries: Uint8Array[]): SessionModel[] {
    const names = new Set<string>();
    return entries.map((entry, sessionIndex) => {
      const ser = decodeLuoSessionSer(entry);
      const context = { session: ser.name, sessionIndex };
      // LUO compares names as bytes: two names that decode alike are still different.
      const key = bytesKey(ser.nameBytes ?? encodeUtf8(ser.name));
      if (!ser.nameTerminated) {
        const reason = `name has no NUL; the kernel keeps '${ser.name}'`;
        this.report('warning', new AbiError('luo_session_ser', {}, reason), context);
      }
      if (names.has(key)) {
        const reason = `duplicate session name '${ser.name}' (EEXIST)`;
        this.report('device-eio', new AbiError('luo_session_ser', {}, reason), context);
      }
      names.add(key);
      return {
        name: ser.name,
        ...(ser.nameBytes ? { nameBytes: ser.nameBytes } : {}),
        files: this.readFiles(ser.filesPa, ser.fileCount, context),
      };
    });
  }

  /** luo_file_deserialize() for one session. */
  private readFiles(filesPa: bigint, fileCount: bigint, context: ProblemContext): FileModel[] {
    if (filesPa === 0n) {
      if (fileCount !== 0n) {
        const reason = `no file blocks but count ${fileCount}; the kernel warns and restores none`;
        this.report('warning', new AbiError('luo_session_ser', {}, reason), context);
      }
      return [];
    }
    const chain = this.attempt(
      'device-eio',
      () => readBlockChain(this.memory, filesPa, LUO_FILE_SER_SIZE, 'luo file blocks'),
      context,
    );
    if (!chain) return [];
    for (const block of chain.blocks)
      this.checkPreserved('luo file blocks', { pa: block, order: 0 }, context);
    if (BigInt(chain.entries.length) !== fileCount) {
      const reason = `count ${fileCount} but the blocks hold ${chain.entries.length} files`;
      this.report('device-eio', new AbiError('luo_session_ser', { pa: filesPa }, reason), context);
    }
    const tokens = new Set<bigint>();
    return chain.entries.map((entry) => {
      const ser = decodeLuoFileSer(entry);
      const fileContext = { ...context, token: ser.token };
      if (tokens.has(ser.token)) {
        const reason = `token ${ser.token} appears twice; only the first can be retrieved`;
        this.report('warning', new AbiError('luo_file_ser', {}, reason), fileContext);
      }
      tokens.add(ser.token);
      if (!this.fileHandlers.includes(ser.compatible)) {
        const reason = `no handler for compatible '${ser.compatible}' (ENOENT)`;
        this.report('device-eio', new AbiError('luo_file_ser', {}, reason), fileContext);
      }
      const raw = { token: ser.token, compatible: ser.compatible, data: ser.data };
      if (ser.compatible !== MEMFD_LUO_FH_COMPATIBLE) return raw;
      return this.readMemfdFile(raw, fileContext);
    });
  }

  /** memfd_luo_retrieve(): a bad record fails this file's retrieval and nothing else. */
  private readMemfdFile(file: FileModel & { data: bigint }, context: ProblemContext): FileModel {
    const record = this.attempt(
      'retrieve-fails',
      () => readMemfd(this.memory, file.data, this.preserved),
      context,
    );
    if (!record) return file;
    for (const range of record.metadata) this.checkPreserved('memfd metadata', range, context);
    if (record.state.flags) {
      const reason = `flags 0x${record.state.flags.toString(16)} are undefined and ignored`;
      this.report('warning', new AbiError('memfd_luo_ser', { pa: file.data }, reason), context);
    }
    if (record.skippedEntries > 0) {
      const reason = `${record.skippedEntries} folio entries have pfn 0 and are skipped`;
      this.report('warning', new AbiError('memfd_luo_ser', { pa: file.data }, reason), context);
    }
    return { token: file.token, compatible: file.compatible, memfd: record.state };
  }

  private checkPreserved(structure: string, range: PreservedRange, context: ProblemContext = {}): void {
    const order = this.preserved.orderAt(range.pa);
    if (order === range.order) return;
    const state =
      order === undefined ? 'is not preserved' : `is preserved as order ${order}, not ${range.order}`;
    const reason = `${state}: the next kernel may reuse it before reading it`;
    this.report('warning', new AbiError(structure, { pa: range.pa }, reason), context);
  }

  private attempt<T>(reaction: KernelReaction, work: () => T, context: ProblemContext = {}): T | undefined {
    try {
      return work();
    } catch (error) {
      if (!(error instanceof AbiError)) throw error;
      this.report(reaction, error, context);
      return undefined;
    }
  }

  private report(reaction: KernelReaction, error: AbiError, context: ProblemContext = {}): void {
    this.problems.push({ reaction, error, ...context });
  }
}

function compatiblesOrNone(fdtBytes: Uint8Array): string[] {
  try {
    return khoRootCompatibles(fdtBytes);
  } catch (error) {
    if (error instanceof AbiError) return [];
    throw error;
  }
}
