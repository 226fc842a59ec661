/**
 * Where `luoctl inspect` reads a handover from, with every way of failing turned into
 * one clear sentence (SysError with an errno name): a missing or unreadable path, a
 * directory that is no emulator state, a dump that is empty, truncated or not what it
 * claims to be.
 *
 * - An emulator state directory: `kho.dtb` (written by an emulated kexec, not yet booted)
 *   or `kho-in.dtb` (the handover the running emulated kernel booted from), and
 *   `memory.img`, where byte pa is physical address pa.
 * - A guest dump: a raw physical memory dump (byte 0 at --memory-base) or a QEMU
 *   `dump-guest-memory` ELF core (recognised by its magic), with the root FDT from a
 *   file, from an address in the dump, or found by scanning the dump.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AbiError } from '../abi/errors.js';
import { scanForKhoRoots } from '../abi/kho.js';
import { PAGE_SIZE, type PhysicalMemory } from '../abi/memory.js';
import { FileSegmentMemory, SparseFileMemory } from '../abi/memory-files.js';
import { Errno, errnoNumber } from '../sys/errno.js';
import { SysError } from '../sys/error.js';
import { hex } from './format.js';
import { type HandoverSource, type MemoryFormat, memoryRangesOf } from './report.js';

/** An opened handover: the root FDT's bytes and the memory it points into. */
export interface OpenedHandover {
  fdt: Uint8Array;
  memory: PhysicalMemory;
  source: HandoverSource;
  close(): void;
}

/** What the emulator keeps in its state directory (docs/emulator.md, src/kernel/emu/server/kexec.ts). */
export const STATE_OUTGOING_FDT = 'kho.dtb';
export const STATE_INCOMING_FDT = 'kho-in.dtb';
export const STATE_MEMORY_IMAGE = 'memory.img';

/** Larger than any FDT KHO writes (one page) by far; bounds what a wrong path makes us read. */
const MAX_FDT_FILE = 1 << 20;
const ENOTDIR = errnoNumber('ENOTDIR')!;
/** The bytes are not what they should be: a truncated dump, garbage, a wrong file. */
const EBADMSG = errnoNumber('EBADMSG')!;
const ELF_MAGIC = [0x7f, 0x45, 0x4c, 0x46];
const KDUMP_SIGNATURE = 'KDUMP   ';

export function openStateDir(dir: string): OpenedHandover {
  const abs = path.resolve(dir);
  const stat = statOrThrow(abs, 'emulator state directory');
  if (!stat.isDirectory()) throw new SysError('inspect', ENOTDIR, `${abs} is not a directory`);
  const outgoing = path.join(abs, STATE_OUTGOING_FDT);
  const incoming = path.join(abs, STATE_INCOMING_FDT);
  const fdtPath = fs.existsSync(outgoing) ? outgoing : fs.existsSync(incoming) ? incoming : undefined;
  const imagePath = path.join(abs, STATE_MEMORY_IMAGE);
  if (!fdtPath) {
    const why = fs.existsSync(imagePath)
      ? 'the emulated kernel has not booted from a handover since it last started cold'
      : `it has no ${STATE_MEMORY_IMAGE} either: is it an emulator state directory?`;
    throw new SysError(
      'inspect',
      Errno.ENOENT,
      `no handover in ${abs}: neither ${STATE_OUTGOING_FDT} nor ${STATE_INCOMING_FDT} exists (${why})`,
    );
  }
  const fdt = readFdtFile(fdtPath);
  statOrThrow(imagePath, 'emulator memory image');
  const memory = guard(`the memory image ${imagePath}`, () => SparseFileMemory.open(imagePath));
  return {
    fdt,
    memory,
    source: {
      kind: 'emulator',
      stateDir: abs,
      handover: fdtPath === outgoing ? 'outgoing' : 'incoming',
      fdt: fdtPath,
      fdtPa: null,
      memory: imagePath,
      memoryFormat: 'sparse-image',
      memoryRanges: memoryRangesOf(memory),
    },
    close: () => memory.close(),
  };
}

export interface DumpOptions {
  memory: string;
  /** The root FDT as a file. */
  fdt?: string;
  /** The root FDT's physical address in the dump. */
  fdtPa?: bigint;
  /** Physical address of byte 0 of a raw dump. */
  memoryBase?: bigint;
}

export function openDump(options: DumpOptions): OpenedHandover {
  const memoryPath = path.resolve(options.memory);
  const stat = statOrThrow(memoryPath, 'memory dump');
  if (!stat.isFile())
    throw new SysError('inspect', Errno.EINVAL, `the memory dump ${memoryPath} is not a regular file`);
  if (stat.size === 0) throw new SysError('inspect', Errno.EINVAL, `the memory dump ${memoryPath} is empty`);
  const format = dumpFormat(memoryPath);
  if (format === 'elf-core' && options.memoryBase !== undefined) {
    throw new SysError(
      'inspect',
      Errno.EINVAL,
      `${memoryPath} is an ELF core, whose program headers give the physical addresses: --memory-base is for raw dumps`,
    );
  }
  const memory = guard(`the memory dump ${memoryPath}`, () =>
    format === 'elf-core'
      ? FileSegmentMemory.openElfCore(memoryPath)
      : FileSegmentMemory.openRawDump(memoryPath, options.memoryBase ?? 0n),
  );
  try {
    const { fdt, fdtPa } = options.fdt
      ? { fdt: readFdtFile(path.resolve(options.fdt)), fdtPa: undefined }
      : fdtFromMemory(memory, memoryPath, options.fdtPa);
    return {
      fdt,
      memory,
      source: {
        kind: 'dump',
        stateDir: null,
        handover: null,
        fdt: options.fdt ? path.resolve(options.fdt) : null,
        fdtPa: fdtPa === undefined ? null : hex(fdtPa),
        memory: memoryPath,
        memoryFormat: format,
        memoryRanges: memoryRangesOf(memory),
      },
      close: () => memory.close(),
    };
  } catch (error) {
    memory.close();
    throw error;
  }
}

/** The root FDT page at `fdtPa`, or the one KHO root found by scanning the dump. */
function fdtFromMemory(
  memory: FileSegmentMemory,
  memoryPath: string,
  fdtPa: bigint | undefined,
): { fdt: Uint8Array; fdtPa: bigint } {
  if (fdtPa !== undefined) {
    const bytes = guard(`the root FDT at ${hex(fdtPa)} in ${memoryPath}`, () => readUpToPage(memory, fdtPa));
    return { fdt: bytes, fdtPa };
  }
  const roots = guard(`scanning ${memoryPath} for KHO root FDTs`, () => scanForKhoRoots(memory));
  if (roots.length === 0) {
    throw new SysError(
      'inspect',
      Errno.ENOENT,
      `no KHO root FDT found in ${memoryPath}: pass the root FDT with --fdt FILE, or its address with --fdt-pa ADDR`,
    );
  }
  if (roots.length > 1) {
    const list = roots.map((root) => `${hex(root.pa)} (${root.compatible.join(', ')})`).join(', ');
    throw new SysError(
      'inspect',
      Errno.EINVAL,
      `${roots.length} KHO root FDTs in ${memoryPath}: ${list}; a running kernel holds the one it booted from and the one it will hand over: choose with --fdt-pa ADDR`,
    );
  }
  const root = roots[0]!;
  return { fdt: readUpToPage(memory, root.pa), fdtPa: root.pa };
}

/** One page at `pa`, or what is present of it. */
function readUpToPage(memory: PhysicalMemory, pa: bigint): Uint8Array {
  const range = memory.ranges().find((r) => r.start <= pa && pa < r.end);
  if (!range) throw new AbiError('kho-fdt', { pa }, 'address not present in the dump');
  const available = range.end - pa;
  return memory.read(pa, available < BigInt(PAGE_SIZE) ? Number(available) : PAGE_SIZE);
}

function dumpFormat(memoryPath: string): MemoryFormat {
  const head = new Uint8Array(8);
  const fd = fs.openSync(memoryPath, 'r');
  try {
    fs.readSync(fd, head, 0, head.byteLength, 0);
  } finally {
    fs.closeSync(fd);
  }
  if (ELF_MAGIC.every((b, i) => head[i] === b)) return 'elf-core';
  // elf-core.ts refuses kdump-compressed files with a message saying how to dump instead.
  if (new TextDecoder('latin1').decode(head) === KDUMP_SIGNATURE) return 'elf-core';
  return 'raw';
}

function readFdtFile(file: string): Uint8Array {
  const stat = statOrThrow(file, 'root FDT');
  if (!stat.isFile())
    throw new SysError('inspect', Errno.EINVAL, `the root FDT ${file} is not a regular file`);
  if (stat.size === 0) throw new SysError('inspect', Errno.EINVAL, `the root FDT ${file} is empty`);
  if (stat.size > MAX_FDT_FILE) {
    throw new SysError(
      'inspect',
      Errno.EINVAL,
      `the root FDT ${file} is ${stat.size} bytes; a KHO root FDT is one page (is it the memory dump?)`,
    );
  }
  try {
    return new Uint8Array(fs.readFileSync(file));
  } catch (error) {
    throw fileError(error, `cannot read the root FDT ${file}`);
  }
}

function statOrThrow(file: string, what: string): fs.Stats {
  try {
    return fs.statSync(file);
  } catch (error) {
    throw fileError(error, `cannot open the ${what} ${file}`);
  }
}

/** Runs `open`, turning a file-system or format error into one sentence about `what`. */
function guard<T>(what: string, open: () => T): T {
  try {
    return open();
  } catch (error) {
    if (error instanceof AbiError) throw new SysError('inspect', EBADMSG, `${what}: ${error.message}`);
    throw fileError(error, what);
  }
}

function fileError(error: unknown, context: string): Error {
  const e = error as NodeJS.ErrnoException;
  if (typeof e?.code !== 'string') return error as Error;
  const reason = (e.message ?? '').replace(/^[A-Z0-9]+: /, '').replace(/, \w+ '.*'$/, '');
  return new SysError('inspect', errnoNumber(e.code) ?? Errno.EIO, `${context}: ${reason}`);
}
