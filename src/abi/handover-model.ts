/**
 * A live-update handover as luokit works with it: the sessions and files one kernel
 * hands to the next, without the addresses and blocks that carry them in memory, plus
 * what a reader found along the way (problems, tagged with how the successor kernel
 * would react, and the layout for `luoctl inspect`).
 */
import type { AbiError } from './errors.js';
import type { KhoSubtree, ReserveMem } from './kho.js';
import type { PreservedRange } from './kho-radix.js';
import type { LuoFlbSer } from './luo.js';
import type { MemfdState } from './memfd.js';
import type { PreservedMemoryMap } from './preserved-map.js';

export interface HandoverModel {
  /** luo_ser.liveupdate_num as written: the outgoing kernel's count of live updates. */
  liveupdateNum: bigint;
  /** kexec-metadata: the outgoing kernel's release (`uname -r`). */
  previousRelease: string;
  /** kexec-metadata: kexecs since the last cold boot, this one included. */
  kexecCount: number;
  /** In creation order. */
  sessions: SessionModel[];
  flbs?: FlbModel[];
  /** memblock `reserve_mem=` regions handed over. */
  reserveMem?: ReserveMem[];
}

export interface SessionModel {
  /** For display: the name's bytes decoded as UTF-8. */
  name: string;
  /**
   * The name's bytes as the kernel holds them (any bytes but NUL, at most 63) when `name`
   * does not say them exactly (they are not UTF-8). Absent: `name` encoded as UTF-8.
   */
  nameBytes?: Uint8Array;
  /** In preservation order. */
  files: FileModel[];
}

export interface FileModel {
  token: bigint;
  /** The handler's compatible, e.g. `memfd-v2`. */
  compatible: string;
  /** The memfd record, for memfd-v2 files. */
  memfd?: MemfdState;
  /** The opaque handle of a file of another handler. */
  data?: bigint;
}

export type FlbModel = LuoFlbSer;

/**
 * What the successor kernel does about a problem:
 * - cold-boot: kho_populate() rejects the root FDT or memory map and the kernel boots as
 *   from cold, every preserved byte silently lost;
 * - panic: LUO's early init (the LUO blob, luo_ser, the session block chain) fails;
 * - device-eio: session deserialization at the first /dev/liveupdate open fails (a bad
 *   file chain, a file count mismatch, an unknown handler, a duplicate session name) and
 *   every open returns EIO from then on;
 * - retrieve-fails: one file's RETRIEVE_FD fails (a bad memfd record), or an FLB's
 *   retrieval does;
 * - warning: the kernel carries on (ignored kexec-metadata, a metadata page that is not
 *   preserved and may be overwritten before it is read, a truncated name).
 */
export type KernelReaction = 'cold-boot' | 'panic' | 'device-eio' | 'retrieve-fails' | 'warning';

export interface HandoverProblem {
  reaction: KernelReaction;
  error: AbiError;
  /** The session it concerns, if any (its display name). */
  session?: string;
  /** That session's position in the handover's session list (names need not be valid UTF-8). */
  sessionIndex?: number;
  /** The file it concerns, if any. */
  token?: bigint;
}

/** Where things are: for `luoctl inspect`, and for rebuilding a page allocator. */
export interface HandoverLayout {
  khoCompatible: string[];
  memoryMapPa?: bigint;
  /** The radix tree's own pages. */
  radixPages: bigint[];
  /**
   * Every preserved block, in radix-tree key order; empty when there are more than
   * LAYOUT_MAX_BLOCKS (2^20) of them, which preservedMap holds as runs.
   */
  preserved: PreservedRange[];
  /** The preserved-memory map as the successor sees it (absent when it could not be read). */
  preservedMap?: PreservedMemoryMap;
  subtrees: (KhoSubtree | { name: string; error: AbiError })[];
  luoSerPa?: bigint;
  luoCompatible?: string;
  sessionBlocks: bigint[];
  flbsPa?: bigint;
}

export interface HandoverDecoding {
  /** Absent when the successor would boot cold or panic. */
  model?: HandoverModel;
  problems: HandoverProblem[];
  layout: HandoverLayout;
}
