/**
 * How `luoctl inspect` writes values, in its JSON (docs/inspect.md) and for people.
 *
 * JSON: physical addresses are hex strings ("0x1000000"); tokens are decimal strings
 * (64-bit identifiers); other u64 quantities (sizes, positions, counts) are numbers, or
 * decimal strings in the one case a number would be inexact (above 2^53 - 1, which only
 * a corrupt handover holds).
 */
import type { KernelReaction } from '../abi/handover-model.js';

/** A u64 in JSON: a number when exact, else its decimal string. */
export type JsonU64 = number | string;

export function hex(value: bigint | number): string {
  return `0x${value.toString(16)}`;
}

export function u64(value: bigint | number): JsonU64 {
  const big = BigInt(value);
  return big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big.toString();
}

const UNITS = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];

/** `1536` -> `1.5 KiB`; exact byte counts below 1 KiB. */
export function formatBytes(value: bigint | number): string {
  const bytes = BigInt(value);
  if (bytes < 1024n) return `${bytes} B`;
  let unit = -1;
  let scaled = bytes;
  while (scaled >= 1024n && unit < UNITS.length - 1) {
    scaled /= 1024n;
    unit++;
  }
  const divisor = 1024n ** BigInt(unit + 1);
  const text = (Number(bytes) / Number(divisor)).toFixed(bytes % divisor === 0n ? 0 : 1);
  return `${text} ${UNITS[unit]}`;
}

/** memfd seal bits as include/uapi/linux/fcntl.h names them (F_SEAL_ prefix dropped). */
const SEALS: readonly (readonly [number, string])[] = [
  [0x1, 'SEAL'],
  [0x2, 'SHRINK'],
  [0x4, 'GROW'],
  [0x8, 'WRITE'],
  [0x10, 'FUTURE_WRITE'],
  [0x20, 'EXEC'],
];

/** Seal names, unknown bits as one hex value. */
export function sealNames(seals: number): string[] {
  const names = SEALS.filter(([bit]) => (seals & bit) !== 0).map(([, name]) => name);
  const rest = seals & ~SEALS.reduce((all, [bit]) => all | bit, 0);
  if (rest !== 0) names.push(hex(rest >>> 0));
  return names;
}

/** memfd folio flags (MEMFD_LUO_FOLIO_*), unknown bits as one hex value. */
export function folioFlagNames(flags: number): string[] {
  const names: string[] = [];
  if (flags & 1) names.push('DIRTY');
  if (flags & 2) names.push('UPTODATE');
  const rest = flags & ~3;
  if (rest !== 0) names.push(hex(rest));
  return names;
}

/** Worst first: how a problem's reaction ranks. */
export const REACTIONS: readonly KernelReaction[] = [
  'cold-boot',
  'panic',
  'device-eio',
  'retrieve-fails',
  'warning',
];

/** What the successor kernel does, in words. */
export const REACTION_TEXT: Readonly<Record<KernelReaction, string>> = {
  'cold-boot':
    'cold boot: kho_populate() rejects the handover, KHO revival is disabled and every preserved byte is lost',
  panic: 'panic: LUO early init fails (luo_restore_fail)',
  'device-eio':
    'EIO: session deserialization fails at the first open of /dev/liveupdate, and every open returns EIO',
  'retrieve-fails': 'retrieve fails: RETRIEVE_FD of this file (or the FLB) fails; the rest is restored',
  warning: 'warning: the kernel carries on',
};

/** The short label a problem line starts with. */
export const REACTION_LABEL: Readonly<Record<KernelReaction, string>> = {
  'cold-boot': 'COLD-BOOT',
  panic: 'PANIC',
  'device-eio': 'EIO',
  'retrieve-fails': 'RETRIEVE-FAILS',
  warning: 'warning',
};

export function worstReaction(reactions: Iterable<KernelReaction>): KernelReaction | undefined {
  let worst: number | undefined;
  for (const reaction of reactions) {
    const rank = REACTIONS.indexOf(reaction);
    if (worst === undefined || rank < worst) worst = rank;
  }
  return worst === undefined ? undefined : REACTIONS[worst];
}
