/**
 * The one error type of the handover codecs.
 *
 * Handover bytes come from another kernel, a memory dump or a fuzzer, so every decoder
 * treats them as hostile: whatever is wrong with them (a pointer outside memory, a cycle,
 * a count beyond its block, a bad magic) surfaces as an AbiError naming the structure,
 * where it sits (a physical address, or an offset inside a blob such as an FDT) and why.
 * Encoders use it too for model values the kernel could never have written.
 */
export class AbiError extends Error {
  /** The structure being read or written, e.g. `luo_ser`, `fdt`, `kho-radix-node`. */
  readonly structure: string;
  /** Physical address of the structure (or of the offending part of it), when it lives in memory. */
  readonly pa: bigint | undefined;
  /** Byte offset inside a blob (an FDT, a struct image), when it has no physical address. */
  readonly offset: number | undefined;
  /** What is wrong, in words. */
  readonly reason: string;

  constructor(structure: string, where: { pa?: bigint; offset?: number }, reason: string) {
    super(`${structure}${describeWhere(where)}: ${reason}`);
    this.name = 'AbiError';
    this.structure = structure;
    this.pa = where.pa;
    this.offset = where.offset;
    this.reason = reason;
  }
}

/** `0x1000000`: how physical addresses appear in messages. */
export function hexPa(pa: bigint): string {
  return `0x${pa.toString(16)}`;
}

function describeWhere(where: { pa?: bigint; offset?: number }): string {
  if (where.pa !== undefined) return ` at pa ${hexPa(where.pa)}`;
  if (where.offset !== undefined) return ` at offset ${where.offset}`;
  return '';
}
