/**
 * `luoctl inspect` on a live host: what KHO shows in debugfs (Linux 7.2,
 * kernel/liveupdate/kexec_handover_debugfs.c), read without physical memory.
 *
 *   kho/out/scratch_phys, scratch_len   one hex address / size per line, per scratch area
 *   kho/out/fdt                         the root FDT this kernel will hand over; 7.2 creates
 *                                       it only after a cold boot (kho_init() returns before
 *                                       adding it when the kernel itself came from KHO)
 *   kho/out/sub_fdts/<name>             each registered subtree's blob (blob-size bytes):
 *                                       LUO (luo_ser), kexec-metadata, memblock (an FDT)
 *   kho/in/fdt                          the root FDT this kernel booted from (after a KHO boot)
 *   kho/in/sub_fdts/<name>              the incoming blobs; the incoming LUO blob's page was
 *                                       freed by LUO's early init (kho_restore_free) before
 *                                       debugfs exposed it, so it may read as reused memory
 *
 * Everything those blobs point to (the radix tree of preserved pages, session and file
 * records, memfd folios) lives in physical memory, which debugfs does not expose: the
 * report lists those pointers as not followed.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AbiError } from '../abi/errors.js';
import { decodeFdt, FDT_MAGIC, readFdtStringList } from '../abi/fdt.js';
import type { KernelReaction } from '../abi/handover-model.js';
import {
  decodeKexecMetadata,
  decodeKhoRoot,
  decodeMemblockFdt,
  KHO_METADATA_NODE_NAME,
  khoSubtrees,
  MEMBLOCK_KHO_FDT,
} from '../abi/kho.js';
import { decodeLuoSer, LUO_ABI_COMPATIBLE, LUO_KHO_ENTRY_NAME, LUO_SER_SIZE } from '../abi/luo.js';
import { Errno } from '../sys/errno.js';
import { SysError } from '../sys/error.js';
import { hex, type JsonU64, REACTION_TEXT, u64, worstReaction } from './format.js';
import { INSPECT_SCHEMA, type ProblemReport } from './report.js';

export const DEFAULT_DEBUGFS = '/sys/kernel/debug';
const MAX_BLOB = 1 << 20;

export interface RootFdtView {
  bytes: number;
  compatible: string[];
  memoryMap: string | null;
  subtrees: { name: string; pa: string | null; size: JsonU64 | null; error: string | null }[];
  /** Why the root is not a valid KHO root FDT, or null. */
  error: string | null;
}

export interface BlobView {
  name: string;
  bytes: number;
  /** From the root FDT's subnode, when the root FDT is there to say. */
  pa: string | null;
  kind: 'luo' | 'kexec-metadata' | 'memblock' | 'unknown';
  luo: { compatible: string; liveupdateNum: JsonU64; sessionsPa: string; flbsPa: string } | null;
  kexecMetadata: { version: number; previousRelease: string; kexecCount: number } | null;
  memblock: { regions: { name: string; start: string; size: JsonU64 }[] } | null;
  /** Why the blob could not be decoded, or null. */
  error: string | null;
}

export interface DebugfsSide {
  fdt: RootFdtView | null;
  subtrees: BlobView[];
}

export interface DebugfsReport {
  schema: typeof INSPECT_SCHEMA;
  source: { kind: 'debugfs'; debugfs: string };
  verdict: 'ok' | KernelReaction;
  /** True when nothing stops a restore (warnings allowed): what --check passes on. */
  ok: boolean;
  out: (DebugfsSide & { scratch: { start: string; size: string }[] }) | null;
  in: DebugfsSide | null;
  /** Pointers into physical memory that debugfs cannot follow, each with what lives there. */
  notFollowed: string[];
  notes: string[];
  problems: ProblemReport[];
}

/** Reads `<debugfs>/kho`; throws a SysError saying why when there is none. */
export function inspectDebugfs(debugfs: string = DEFAULT_DEBUGFS): DebugfsReport {
  const root = path.join(path.resolve(debugfs), 'kho');
  checkKhoDir(path.resolve(debugfs), root);
  const problems: ProblemReport[] = [];
  const notFollowed: string[] = [];
  const notes: string[] = [];

  const outDir = path.join(root, 'out');
  const inDir = path.join(root, 'in');
  let out: DebugfsReport['out'] = null;
  if (isDir(outDir)) {
    const side = readSide(outDir, 'out', problems, notFollowed);
    out = { ...side, scratch: readScratch(outDir) };
    if (!side.fdt) {
      notes.push(
        'kho/out/fdt is absent: Linux 7.2 exposes the outgoing root FDT only after a cold boot; the outgoing subtrees are in kho/out/sub_fdts',
      );
    }
  } else {
    notes.push('kho/out is absent: KHO could not set up its outgoing state (see the kernel log)');
  }
  const incoming = isDir(inDir) ? readSide(inDir, 'in', problems, notFollowed) : null;
  if (!incoming) notes.push('kho/in is absent: this kernel booted cold, not from a KHO handover');
  if (incoming?.subtrees.some((blob) => blob.name === LUO_KHO_ENTRY_NAME)) {
    notes.push(
      'kho/in/sub_fdts/LUO: LUO frees the incoming luo_ser page during early boot, before debugfs exposes it, so it may show reused memory',
    );
  }
  const verdict = worstReaction(problems.map((p) => p.reaction)) ?? 'ok';
  return {
    schema: INSPECT_SCHEMA,
    source: { kind: 'debugfs', debugfs: root },
    verdict,
    ok: verdict === 'ok' || verdict === 'warning',
    out,
    in: incoming,
    notFollowed,
    notes,
    problems,
  };
}

function checkKhoDir(debugfs: string, root: string): void {
  try {
    if (fs.statSync(root).isDirectory()) {
      fs.readdirSync(root);
      return;
    }
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EACCES' || code === 'EPERM') {
      throw new SysError(
        'inspect',
        Errno.EACCES,
        `cannot read ${root}: permission denied (debugfs is root-only)`,
      );
    }
    if (code !== 'ENOENT' && code !== 'ENOTDIR') throw error;
  }
  const mounted = isDir(debugfs) && fs.readdirSync(debugfs).length > 0;
  const why = mounted
    ? 'this kernel has no KHO debugfs (it needs CONFIG_KEXEC_HANDOVER_DEBUGFS and KHO enabled: kho=on)'
    : `debugfs is not mounted at ${debugfs} (mount -t debugfs none ${debugfs}), or this kernel has no KHO`;
  throw new SysError(
    'inspect',
    Errno.ENOENT,
    `no KHO debugfs: ${root} does not exist; ${why}. To inspect a handover without it, use --state DIR (emulator) or --fdt FILE --memory DUMP`,
  );
}

function readSide(
  dir: string,
  side: 'in' | 'out',
  problems: ProblemReport[],
  notFollowed: string[],
): DebugfsSide {
  const fdtPath = path.join(dir, 'fdt');
  const fdt = fs.existsSync(fdtPath) ? rootFdtView(readBlob(fdtPath)) : null;
  if (fdt?.error) {
    // The running kernel booted from kho/in/fdt, so a fault there is only worth a warning.
    problems.push(
      problem(side === 'out' ? 'cold-boot' : 'warning', 'kho-fdt', null, `kho/${side}/fdt: ${fdt.error}`),
    );
  }
  if (fdt?.memoryMap) {
    notFollowed.push(
      `kho/${side}: preserved-memory-map at ${fdt.memoryMap}: the radix tree of preserved pages is in physical memory`,
    );
  }
  const subDir = path.join(dir, 'sub_fdts');
  const names = isDir(subDir) ? fs.readdirSync(subDir).sort() : [];
  const subtrees = names.map((name) => {
    const blob = blobView(name, readBlob(path.join(subDir, name)));
    const fromRoot = fdt?.subtrees.find((s) => s.name === name);
    blob.pa = fromRoot?.pa ?? null;
    checkBlob(blob, side, problems, notFollowed);
    return blob;
  });
  return { fdt, subtrees };
}

function checkBlob(
  blob: BlobView,
  side: 'in' | 'out',
  problems: ProblemReport[],
  notFollowed: string[],
): void {
  const where = `kho/${side}/sub_fdts/${blob.name}`;
  if (blob.luo) {
    if (blob.luo.sessionsPa !== '0x0') {
      notFollowed.push(
        `${where}: sessions at ${blob.luo.sessionsPa}: session and file records (and memfd folios) are in physical memory`,
      );
    } else if (side === 'out') {
      notFollowed.push(
        `${where}: sessions_pa is 0: LUO writes it when the kexec reboot serializes the sessions`,
      );
    }
    if (blob.luo.flbsPa !== '0x0')
      notFollowed.push(`${where}: FLBs at ${blob.luo.flbsPa} are in physical memory`);
  }
  if (side !== 'out') return;
  if (blob.error) {
    const reaction: KernelReaction = blob.kind === 'luo' ? 'panic' : 'warning';
    problems.push(problem(reaction, blob.kind, null, `${where}: ${blob.error}`));
  } else if (blob.luo && blob.luo.compatible !== LUO_ABI_COMPATIBLE) {
    problems.push(
      problem(
        'panic',
        'luo_ser',
        null,
        `${where}: compatible '${blob.luo.compatible}' is not '${LUO_ABI_COMPATIBLE}'`,
      ),
    );
  }
}

function rootFdtView(bytes: Uint8Array): RootFdtView {
  const view: RootFdtView = {
    bytes: bytes.byteLength,
    compatible: [],
    memoryMap: null,
    subtrees: [],
    error: null,
  };
  try {
    const fdt = decodeFdt(bytes);
    const compatible = fdt.root.props.get('compatible');
    view.compatible = compatible ? readFdtStringList(compatible, 'compatible') : [];
    view.subtrees = khoSubtrees(fdt.root).map((s) =>
      'error' in s
        ? { name: s.name, pa: null, size: null, error: s.error.message }
        : { name: s.name, pa: hex(s.pa), size: u64(s.size), error: null },
    );
    view.memoryMap = hex(decodeKhoRoot(bytes).memoryMapPa);
  } catch (error) {
    if (!(error instanceof AbiError)) throw error;
    view.error = error.message;
  }
  return view;
}

function blobView(name: string, bytes: Uint8Array): BlobView {
  const kind: BlobView['kind'] =
    name === LUO_KHO_ENTRY_NAME
      ? 'luo'
      : name === KHO_METADATA_NODE_NAME
        ? 'kexec-metadata'
        : name === MEMBLOCK_KHO_FDT
          ? 'memblock'
          : 'unknown';
  const view: BlobView = {
    name,
    bytes: bytes.byteLength,
    pa: null,
    kind,
    luo: null,
    kexecMetadata: null,
    memblock: null,
    error: null,
  };
  try {
    if (kind === 'luo') {
      if (bytes.byteLength < LUO_SER_SIZE) {
        throw new AbiError(
          'luo_ser',
          {},
          `blob of ${bytes.byteLength} bytes is smaller than ${LUO_SER_SIZE}`,
        );
      }
      const ser = decodeLuoSer(bytes);
      view.luo = {
        compatible: ser.compatible,
        liveupdateNum: u64(ser.liveupdateNum),
        sessionsPa: hex(ser.sessionsPa),
        flbsPa: hex(ser.flbsPa),
      };
    } else if (kind === 'kexec-metadata') {
      const metadata = decodeKexecMetadata(bytes, BigInt(bytes.byteLength));
      view.kexecMetadata = {
        version: metadata.version,
        previousRelease: metadata.previousRelease,
        kexecCount: metadata.kexecCount,
      };
    } else if (kind === 'memblock') {
      view.memblock = {
        regions: decodeMemblockFdt(bytes).map((r) => ({
          name: r.name,
          start: hex(r.start),
          size: u64(r.size),
        })),
      };
    } else if (
      bytes.byteLength >= 4 &&
      new DataView(bytes.buffer, bytes.byteOffset).getUint32(0) === FDT_MAGIC
    ) {
      decodeFdt(bytes);
    }
  } catch (error) {
    if (!(error instanceof AbiError)) throw error;
    view.error = error.message;
  }
  return view;
}

function readScratch(outDir: string): { start: string; size: string }[] {
  const lines = (file: string): string[] => {
    try {
      return fs.readFileSync(path.join(outDir, file), 'utf8').split('\n').filter(Boolean);
    } catch {
      return [];
    }
  };
  const starts = lines('scratch_phys');
  const sizes = lines('scratch_len');
  return starts.map((start, i) => ({ start: start.trim(), size: (sizes[i] ?? '?').trim() }));
}

function readBlob(file: string): Uint8Array {
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const chunks: Buffer[] = [];
      let total = 0;
      for (;;) {
        const chunk = Buffer.alloc(64 * 1024);
        const n = fs.readSync(fd, chunk, 0, chunk.byteLength, null);
        if (n === 0) break;
        chunks.push(chunk.subarray(0, n));
        total += n;
        if (total > MAX_BLOB)
          throw new SysError('inspect', Errno.EFBIG, `${file} is larger than ${MAX_BLOB} bytes`);
      }
      return new Uint8Array(Buffer.concat(chunks));
    } finally {
      fs.closeSync(fd);
    }
  } catch (error) {
    if (error instanceof SysError) throw error;
    const e = error as NodeJS.ErrnoException;
    throw new SysError(
      'inspect',
      e.code === 'EACCES' ? Errno.EACCES : Errno.EIO,
      `cannot read ${file}: ${e.message}`,
    );
  }
}

function isDir(dir: string): boolean {
  try {
    return fs.statSync(dir).isDirectory();
  } catch {
    return false;
  }
}

function problem(
  reaction: KernelReaction,
  structure: string,
  pa: bigint | null,
  reason: string,
): ProblemReport {
  return {
    reaction,
    effect: REACTION_TEXT[reaction],
    structure,
    pa: pa === null ? null : hex(pa),
    offset: null,
    reason,
    message: `${structure}: ${reason}`,
    session: null,
    token: null,
  };
}
