/**
 * The "memfd-v2" file handler, as mm/memfd_luo.c behaves in Linux 7.2.
 *
 * preserve:  only shmem files with no links (memfds, unlinked tmpfs and
 *            O_TMPFILE files); seals beyond SEAL|SHRINK|GROW|WRITE|
 *            FUTURE_WRITE|EXEC give EOPNOTSUPP; more than UINT_MAX pages
 *            EFBIG. Seals and size are captured now; writes inside the size
 *            stay visible (the kernel pins the pages, we keep a reference).
 *            A shared writable mapping stands in for the pin: like pinned
 *            pages, it makes a later F_SEAL_WRITE fail with EBUSY. Every
 *            page below the size gets an up-to-date folio (holes too), as
 *            memfd_pin_folios does.
 * freeze:    the file position is captured (it may have moved since
 *            preserve). The kernel freezes the size at preserve; a process
 *            not using the preload shim could still have resized the file,
 *            so a changed size fails the freeze with EPERM (documented
 *            difference, docs/emulator.md).
 * retrieve:  a new memfd with the preserved size, content, position and
 *            seals (added last, so the content can be written first).
 */
import { Errno } from '../../../sys/errno.js';
import { SysError } from '../../../sys/error.js';
import type { OwnedFd } from '../../../sys/fd.js';
import { fstat, ftruncate, lseek, SEEK_CUR } from '../../../sys/file.js';
import { addSeals, getSeals, MFD_ALLOW_SEALING, memfdCreate } from '../../../sys/memfd.js';
import { filesystemType, Mapping, PROT_READ, populateFile, TMPFS_MAGIC } from '../../../sys/mm.js';
import { KernelError } from './errors.js';

export const MEMFD_COMPATIBLE = 'memfd-v2';

/** F_SEAL_SEAL | SHRINK | GROW | WRITE | FUTURE_WRITE | EXEC */
export const MEMFD_LUO_ALL_SEALS = 0x3f;

const PAGE_SIZE = 4096;
const F_SEAL_WRITE = 0x8;
const UINT_MAX = 0xffffffff;

/** What the handler records at preserve and updates at freeze: memfd_luo_ser's fields. */
export interface MemfdRecord {
  pos: number;
  size: number;
  seals: number;
}

/** An outgoing preserved memfd, as the handler holds it. */
export interface PreservedMemfd {
  readonly file: OwnedFd;
  readonly record: MemfdRecord;
  mapping: Mapping | null;
  /** The pipe holding the first page (files sealed with F_SEAL_FUTURE_WRITE). */
  pipe: OwnedFd | null;
}

/** Identity for "the same file is already preserved" (the kernel keys memfds by inode). */
export function fileKey(file: OwnedFd): string {
  const st = fstat(file);
  return `${st.dev}:${st.ino}`;
}

export function canPreserve(file: OwnedFd): boolean {
  try {
    return filesystemType(file) === TMPFS_MAGIC && fstat(file).nlink === 0 && fstat(file).isFile;
  } catch {
    return false;
  }
}

export function preserve(file: OwnedFd): PreservedMemfd {
  const seals = getSeals(file);
  if (seals & ~MEMFD_LUO_ALL_SEALS) throw new KernelError(Errno.EOPNOTSUPP);
  const size = fstat(file).size;
  if (Math.ceil(size / PAGE_SIZE) > UINT_MAX) throw new KernelError(Errno.EFBIG);
  const record = { pos: lseek(file, 0, SEEK_CUR), size, seals };
  // The kernel pins a folio for every page below the size, allocating holes and marking
  // fallocated pages up to date: from now on SEEK_HOLE/SEEK_DATA see no hole there.
  populateFile(file, size);
  const pin = pinPages(file, size, seals);
  return { file, record, mapping: pin.mapping, pipe: pin.pipe };
}

/**
 * Stand in for the kernel's pin of every page. A shared writable mapping makes a later
 * F_SEAL_WRITE fail with EBUSY (mapping_deny_writable) wherever it can be made. A file
 * sealed with F_SEAL_FUTURE_WRITE refuses writable mappings; there the first page is held
 * by reference in a pipe instead, so F_SEAL_WRITE fails with EBUSY in memfd_wait_for_pins,
 * as on the kernel (FUTURE_WRITE also refuses hole punching, so that page stays in the
 * file). A file already sealed with F_SEAL_WRITE needs no pin.
 */
function pinPages(file: OwnedFd, size: number, seals: number): Pin {
  if (size === 0) return { mapping: null, pipe: null };
  try {
    return { mapping: new Mapping(file, size), pipe: null };
  } catch (err) {
    if (!(err instanceof SysError && (err.code === 'EPERM' || err.code === 'EACCES'))) throw err;
  }
  if (seals & F_SEAL_WRITE) return { mapping: null, pipe: null };
  const mapping = new Mapping(file, size, PROT_READ);
  try {
    return { mapping: null, pipe: mapping.pinIntoPipe(PAGE_SIZE) };
  } finally {
    mapping.unmap();
  }
}

interface Pin {
  mapping: Mapping | null;
  pipe: OwnedFd | null;
}

export function freeze(memfd: PreservedMemfd): void {
  if (fstat(memfd.file).size !== memfd.record.size) throw new KernelError(Errno.EPERM);
  memfd.record.pos = lseek(memfd.file, 0, SEEK_CUR);
}

export function unpreserve(memfd: PreservedMemfd): void {
  memfd.mapping?.unmap();
  memfd.mapping = null;
  memfd.pipe?.close();
  memfd.pipe = null;
  memfd.file.close();
}

/** Is the size of this (preserved) file frozen? Used to refuse resizes through the shim. */
export function sizeFrozen(memfd: PreservedMemfd | undefined): boolean {
  return memfd !== undefined;
}

/**
 * Make the retrieved file: `fill(file)` writes the content (from emulated
 * physical memory) into a memfd already sized to `record.size`.
 */
export function retrieve(record: MemfdRecord, fill: (file: OwnedFd) => void): OwnedFd {
  if (record.seals & ~MEMFD_LUO_ALL_SEALS) throw new KernelError(Errno.EOPNOTSUPP);
  const file = memfdCreate('', MFD_ALLOW_SEALING);
  try {
    ftruncate(file, record.size);
    fill(file);
    // Every preserved folio comes back (no hole below the size), as in the kernel.
    populateFile(file, record.size);
    lseek(file, record.pos);
    if (record.seals) addSeals(file, record.seals);
    return file;
  } catch (err) {
    file.close();
    throw err;
  }
}
