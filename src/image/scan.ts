/**
 * What a kernel's bytes say about its handover formats, found by reading them rather than
 * from a table of releases:
 *  - the release, from linux_banner ("Linux version 7.3.0-rc7 (...").
 *  - the KHO root's and LUO's compatibles: kexec_handover.c and luo_core.c pass
 *    KHO_FDT_COMPATIBLE and LUO_ABI_COMPATIBLE to fdt/strscpy/pr_err, so each is a
 *    NUL-terminated string of its own ("kho-v4", "luo-v5") in .rodata.
 *  - file handlers: `struct liveupdate_file_handler` holds its compatible inline,
 *    `const char compatible[48]` right after the ops pointer, so a handler is an 8-byte
 *    aligned name, NUL-padded to 48 bytes, after a kernel pointer (zero in an arm64
 *    Image, whose pointers are filled in by relocation at boot). Strings elsewhere are
 *    not laid out that way. (A File-Lifecycle-Bound object, struct liveupdate_flb, has
 *    the same shape and would be listed too; 7.3 registers none outside its test module.)
 *  - `.liveupdate_versions` (an RFC, Dec 2025, not merged): a header (magic "LVUP"
 *    0x4c565550, a format version), then the handlers' 48-byte version strings.
 */
export const HANDLER_COMPAT_LENGTH = 48;
export const LVUP_MAGIC = 0x4c565550;

export interface ScannedFormats {
  release?: string;
  kho: string[];
  luo: string[];
  fileHandlers: string[];
  /** Other NUL-delimited `name-vN` strings (KHO subtrees such as memblock-v1, device-tree names), sorted. */
  other: string[];
  liveupdateVersions?: { version: number; entries: string[] };
}

const NAME_BYTE = new Uint8Array(256);
for (const c of 'abcdefghijklmnopqrstuvwxyz0123456789_-.') NAME_BYTE[c.charCodeAt(0)] = 1;

export function scanKernel(kernel: Buffer): ScannedFormats {
  const found: ScannedFormats = { kho: [], luo: [], fileHandlers: [], other: [] };
  found.release = findRelease(kernel);
  const kho = new Set<string>();
  const luo = new Set<string>();
  const handlers = new Set<string>();
  const other = new Set<string>();
  let at = kernel.indexOf('-v');
  while (at !== -1) {
    let end = at + 2;
    while (end < kernel.length && kernel[end]! >= 0x30 && kernel[end]! <= 0x39) end++;
    if (end > at + 2 && kernel[end] === 0) {
      let start = at;
      while (start > 0 && NAME_BYTE[kernel[start - 1]!] && at - start < HANDLER_COMPAT_LENGTH) start--;
      // A string of its own starts after the NUL ending the one before it (or after the
      // top byte of a handler's ops pointer): "Spectre-v2" must not read as "pectre-v2".
      const before = kernel[start - 1];
      if (start < at && (before === 0 || before === 0xff)) {
        const name = kernel.toString('latin1', start, end);
        if (/^kho-v\d+$/.test(name)) kho.add(name);
        else if (/^luo-v\d+$/.test(name)) luo.add(name);
        else if (isHandlerRecord(kernel, start, end)) handlers.add(name);
        else if (/^[a-z]/.test(name)) other.add(name);
      }
    }
    at = kernel.indexOf('-v', at + 2);
  }
  found.kho = [...kho].sort();
  found.luo = [...luo].sort();
  // Handlers register with LUO: without it, a name of that shape is something else
  // (an of_device_id's compatible in a device-tree kernel, say).
  found.fileHandlers = luo.size > 0 ? [...handlers].sort() : [];
  found.other = [...other, ...(luo.size > 0 ? [] : handlers)].sort();
  const lvup = findLiveupdateVersions(kernel);
  if (lvup) found.liveupdateVersions = lvup;
  return found;
}

/** `struct liveupdate_file_handler`'s shape around a name at [start, end). */
function isHandlerRecord(kernel: Buffer, start: number, end: number): boolean {
  if (start % 8 !== 0 || start < 8 || start + HANDLER_COMPAT_LENGTH > kernel.length) return false;
  for (let i = end; i < start + HANDLER_COMPAT_LENGTH; i++) if (kernel[i] !== 0) return false;
  const ops = kernel.readBigUInt64LE(start - 8);
  return ops === 0n || ops >> 47n === 0x1ffffn;
}

function findRelease(kernel: Buffer): string | undefined {
  let at = kernel.indexOf('Linux version ');
  while (at !== -1) {
    const tail = kernel.toString('latin1', at + 14, at + 14 + 128);
    const match = /^([0-9][\x21-\x7e]*) \(/.exec(tail);
    if (match) return match[1];
    at = kernel.indexOf('Linux version ', at + 1);
  }
  return undefined;
}

/** The RFC's section: the ELF section when there is one, else its header found by magic. */
function findLiveupdateVersions(kernel: Buffer): { version: number; entries: string[] } | undefined {
  const section = elfSection(kernel, '.liveupdate_versions');
  const magic = Buffer.alloc(4);
  magic.writeUInt32LE(LVUP_MAGIC);
  const start = section ? section.offset : kernel.indexOf(magic);
  if (start === -1 || kernel.readUInt32LE(start) !== LVUP_MAGIC || start + 8 > kernel.length)
    return undefined;
  const end = section ? section.offset + section.size : kernel.length;
  const version = kernel.readUInt32LE(start + 4);
  const entries: string[] = [];
  for (let p = start + 8; p + HANDLER_COMPAT_LENGTH <= end; p += HANDLER_COMPAT_LENGTH) {
    const nul = kernel.indexOf(0, p);
    if (nul <= p || nul >= p + HANDLER_COMPAT_LENGTH) break;
    const name = kernel.toString('latin1', p, nul);
    if (!/^[a-z0-9][a-z0-9_.-]*$/.test(name)) break;
    entries.push(name);
  }
  return { version, entries };
}

/** A section of a little-endian ELF64 file, by name. */
export function elfSection(elf: Buffer, name: string): { offset: number; size: number } | undefined {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1) return undefined;
  const shoff = Number(elf.readBigUInt64LE(0x28));
  const shentsize = elf.readUInt16LE(0x3a);
  const shnum = elf.readUInt16LE(0x3c);
  const shstrndx = elf.readUInt16LE(0x3e);
  if (shoff === 0 || shoff + shnum * shentsize > elf.length || shstrndx >= shnum) return undefined;
  const header = (i: number) => shoff + i * shentsize;
  const strtab = Number(elf.readBigUInt64LE(header(shstrndx) + 0x18));
  for (let i = 0; i < shnum; i++) {
    const h = header(i);
    const nameAt = strtab + elf.readUInt32LE(h);
    const nul = elf.indexOf(0, nameAt);
    if (nul !== -1 && elf.toString('latin1', nameAt, nul) === name) {
      return { offset: Number(elf.readBigUInt64LE(h + 0x18)), size: Number(elf.readBigUInt64LE(h + 0x20)) };
    }
  }
  return undefined;
}
