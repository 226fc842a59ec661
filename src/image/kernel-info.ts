/**
 * `kernel-info`'s answer for one image: its release, whether LUO is built in, and the
 * handover formats it writes and reads, read from the image (scan.ts) and cross-checked
 * against what luokit knows of that release (abi/versions.ts).
 */
import { statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { KNOWN_COMPATIBLES, kernelAbi } from '../abi/versions.js';
import { errnoText } from '../sys/errno.js';
import { CodedError, fromNodeError, SysError } from '../sys/error.js';
import type { Compression } from './decompress/index.js';
import { type ImageKind, notAKernel, unwrap } from './layout.js';
import { scanKernel } from './scan.js';

export interface KernelFormats {
  /** The KHO root's compatible, absent without KHO. */
  kho?: string;
  /** LUO's compatible, absent without LUO. */
  luo?: string;
  /** Every file handler's compatible. */
  files: string[];
}

export interface KernelInfo {
  image: string;
  release: string;
  arch?: string;
  container: ImageKind[];
  compression: Compression[];
  /** LUO is built in (its compatible is in the image). */
  liveupdate: boolean;
  /** KHO is built in. */
  kho: boolean;
  formats: KernelFormats;
  /**
   * KHO subtree compatibles found (memblock-v1...). Other `name-vN` strings are too common
   * (device-tree names) to tell apart, so only the ones luokit knows are listed.
   */
  kho_subtrees: string[];
  /** The RFC's `.liveupdate_versions` section, when the image has one. */
  liveupdate_versions?: { version: number; entries: string[] };
  /** What luokit's table of known releases says, and whether the image agrees. */
  cross_check: { known: boolean; agrees?: boolean; expected?: { kho: string; luo: string; files: string[] } };
  /** Anything odd, in sentences (two KHO compatibles, say). */
  warnings: string[];
}

export async function readKernelInfo(image: string): Promise<KernelInfo> {
  let data: Buffer;
  try {
    data = await readFile(image);
  } catch (err) {
    throw unreadable(image, err);
  }
  if (data.length < 512) throw notAKernel(image);
  const unwrapped = await unwrap(data, image);
  const scanned = scanKernel(unwrapped.kernel);
  if (!scanned.release) {
    throw new CodedError(
      'ENOEXEC',
      `${image}: no "Linux version" banner inside (${unwrapped.layers.join(' > ')}): not a Linux kernel`,
    );
  }
  const warnings: string[] = [];
  for (const [kind, list] of [
    ['KHO', scanned.kho],
    ['LUO', scanned.luo],
  ] as const) {
    if (list.length > 1)
      warnings.push(`more than one ${kind} compatible in the image (${list.join(', ')}); taking the highest`);
  }
  const highest = (list: string[]) => [...list].sort((a, b) => versionOf(a) - versionOf(b)).at(-1);
  const formats: KernelFormats = { files: scanned.fileHandlers };
  const kho = highest(scanned.kho);
  const luo = highest(scanned.luo);
  if (kho) formats.kho = kho;
  if (luo) formats.luo = luo;
  const abi = kernelAbi(scanned.release);
  const crossCheck: KernelInfo['cross_check'] = { known: abi !== undefined };
  if (abi) {
    crossCheck.expected = { kho: abi.kho, luo: abi.luo, files: [...abi.fileHandlers] };
    // A kernel built without KHO or LUO speaks nothing: the table describes what it would speak.
    crossCheck.agrees =
      (!formats.kho || formats.kho === abi.kho) &&
      (!formats.luo || formats.luo === abi.luo) &&
      formats.files.every((f) => abi.fileHandlers.includes(f));
    if (!crossCheck.agrees)
      warnings.push(
        `the image's formats differ from what luokit knows of ${abi.kernel} (${abi.kho}, ${abi.luo}, ${abi.fileHandlers.join(' ')}): the image is right`,
      );
  }
  const info: KernelInfo = {
    image,
    release: scanned.release,
    ...(unwrapped.arch && { arch: unwrapped.arch }),
    container: unwrapped.layers,
    compression: unwrapped.compression,
    liveupdate: formats.luo !== undefined,
    kho: formats.kho !== undefined,
    formats,
    kho_subtrees: formats.kho
      ? scanned.other.filter((name) =>
          KNOWN_COMPATIBLES.some((c) => c.kind === 'kho-subtree' && c.compatible === name),
        )
      : [],
    cross_check: crossCheck,
    warnings,
  };
  if (scanned.liveupdateVersions) info.liveupdate_versions = scanned.liveupdateVersions;
  return info;
}

/** The image cannot be read: the errno, and which file. */
function unreadable(image: string, err: unknown): SysError {
  const e = fromNodeError('open', err);
  return new SysError(
    'open',
    e.errno,
    `cannot read the kernel image ${image}: ${e.code} (${errnoText(e.errno)})`,
  );
}

function versionOf(compatible: string): number {
  return Number(/-v(\d+)$/.exec(compatible)?.[1] ?? 0);
}

/** Memo of readKernelInfo by file identity: ino, size and times, so a rewritten image is read again. */
const memo = new Map<string, { key: string; info: Promise<KernelInfo> }>();
const MEMO_ENTRIES = 8;

/**
 * readKernelInfo, remembered per image file while it is unchanged (same inode, size, mtime
 * and ctime). luod judges the same image more than once (a LOAD refused, then forced; a
 * LOAD again after an aborted update), and under QEMU TCG one reading costs seconds
 * (docs/kernel-info.md, "What the gate costs"); a changed file is read again.
 */
export function readKernelInfoCached(image: string): Promise<KernelInfo> {
  let key: string;
  try {
    const st = statSync(image, { bigint: true });
    key = `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
  } catch (err) {
    return Promise.reject(unreadable(image, err));
  }
  const hit = memo.get(image);
  if (hit?.key === key) return hit.info;
  const info = readKernelInfo(image);
  memo.delete(image);
  memo.set(image, { key, info });
  if (memo.size > MEMO_ENTRIES) memo.delete(memo.keys().next().value!);
  // A failed reading is not remembered: the next LOAD tries again.
  info.catch(() => {
    if (memo.get(image)?.info === info) memo.delete(image);
  });
  return info;
}
