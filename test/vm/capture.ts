/**
 * The capture part of the real-kernel bench (docs/vm.md): what the guest preserves before
 * a real kexec, and the comparison of that with what `luoctl inspect --json --check` reads
 * from the handover captured in the next boot (debugfs `kho/in` plus a QEMU memory dump).
 *
 * Shared by the guest (test/vm/guest-capture.ts preserves CAPTURE_SESSIONS and writes what
 * it preserved as a CaptureExpectation) and the host (test/vm/run.ts compares it with the
 * inspect report: compareCapture). Pure logic, unit-tested in test/vm/capture.test.ts.
 */
import type { HandoverReport } from '../../src/inspect/report.js';

/** What the guest writes in the output share before the kexec. */
export const EXPECTED_FILE = 'capture-expected.json';
/** Where the guest copies debugfs `kho/in` (fdt, sub_fdts/NAME). */
export const KHO_IN_DIR = 'kho-in';
/** The host creates it once the dump is taken (its content: `ok` or the reason it failed). */
export const DUMP_DONE_FILE = 'dump-taken';
export const DUMP_FILE = 'guest-memory.elf';

const PAGE = 4096;

/** F_SEAL_* (uapi/linux/fcntl.h). */
const SEAL = { SEAL: 0x1, SHRINK: 0x2, GROW: 0x4, WRITE: 0x8, FUTURE_WRITE: 0x10 } as const;

export interface CaptureFileSpec {
  /** As a decimal string: tokens are u64. */
  token: string;
  size: number;
  pos: number;
  seals: number;
  /** dense: every byte written; sparse: a few bytes, the rest holes (the kernel fills them). */
  content: 'dense' | 'sparse' | 'empty';
}

export interface CaptureSessionSpec {
  name: string;
  files: CaptureFileSpec[];
}

/**
 * The sessions the guest preserves: several sessions, one with none; memfds of size 0,
 * page multiples and not; seals none to all four classic ones; positions at 0, inside and at
 * the end; dense and sparse content; a token above 2^63.
 */
export const CAPTURE_SESSIONS: readonly CaptureSessionSpec[] = [
  {
    name: 'capture-alpha',
    files: [
      {
        token: '5500389665952121672',
        size: 3 * PAGE + 123,
        pos: 777,
        seals: SEAL.SHRINK | SEAL.GROW,
        content: 'dense',
      },
      { token: '7', size: 0, pos: 0, seals: 0, content: 'empty' },
      {
        token: '18446744073709551557',
        size: 64 * PAGE,
        pos: 64 * PAGE,
        seals: SEAL.SEAL | SEAL.SHRINK | SEAL.GROW | SEAL.WRITE,
        content: 'dense',
      },
    ],
  },
  {
    name: 'capture-beta',
    files: [
      { token: '42', size: 1024 * 1024 + 1, pos: 100 * PAGE + 5, seals: SEAL.GROW, content: 'sparse' },
      { token: '43', size: 10_000, pos: 10_000, seals: SEAL.FUTURE_WRITE, content: 'dense' },
    ],
  },
  { name: 'capture-empty', files: [] },
];

/** What the guest preserved, as it wrote it before the kexec. */
export interface CaptureExpectation {
  schema: 'luokit-capture/1';
  /** The kernel that preserved (kexec-metadata's previous release in the next boot). */
  release: string;
  sessions: { name: string; files: ExpectedFile[] }[];
}

export interface ExpectedFile {
  token: string;
  size: number;
  pos: number;
  /** F_GET_SEALS after sealing, as the kernel records them. */
  seals: number;
  /** Pages the memfd's folios cover: memfd_luo fills holes, so every page below size. */
  pages: number;
  sha256: string;
}

export function pagesOf(size: number): number {
  return Math.ceil(size / PAGE);
}

/**
 * A file's content: the writes that make it (offset, bytes) and the whole image (holes as
 * zeros), from a generator seeded by the token, so both boots agree without storing it.
 */
export function contentOf(file: CaptureFileSpec): { writes: [number, Uint8Array][]; image: Uint8Array } {
  const image = new Uint8Array(file.size);
  let seed = Number(BigInt(file.token) % 0x7fffffffn) | 1;
  const next = (): number => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return seed & 0xff;
  };
  const writes: [number, Uint8Array][] = [];
  if (file.content === 'dense') {
    for (let i = 0; i < image.length; i++) image[i] = next();
    if (image.length > 0) writes.push([0, image.slice()]);
  } else if (file.content === 'sparse') {
    // Three bytes: the first, one in the middle, the last (which sets the size).
    for (const offset of [0, Math.floor(file.size / 2), file.size - 1]) {
      const byte = next() | 1;
      image[offset] = byte;
      writes.push([offset, Uint8Array.of(byte)]);
    }
  }
  return { writes, image };
}

/**
 * Every way the inspect report differs from what the guest preserved; empty when it
 * reports exactly the same sessions (in order), tokens, sizes, positions, seals and folios,
 * with nothing that stops a restore. `previousRelease`: checked against kexec-metadata.
 */
export function compareCapture(expected: CaptureExpectation, report: HandoverReport): string[] {
  const problems: string[] = [];
  if (!report.ok || report.verdict !== 'ok') {
    problems.push(`verdict ${report.verdict} (ok ${report.ok})`);
  }
  for (const p of report.problems) {
    if (p.reaction !== 'warning') problems.push(`problem [${p.reaction}] ${p.message}`);
  }
  if (report.luo === null) problems.push('no LUO header in the report');
  else if (report.luo.compatible !== 'luo-v5') problems.push(`LUO compatible ${report.luo.compatible}`);
  if (report.kexecMetadata === null) problems.push('no kexec-metadata in the report');
  else if (report.kexecMetadata.previousRelease !== expected.release) {
    problems.push(
      `kexec-metadata previous release '${report.kexecMetadata.previousRelease}', preserved on '${expected.release}'`,
    );
  }
  const gotNames = report.sessions.map((s) => s.name);
  const wantNames = expected.sessions.map((s) => s.name);
  if (JSON.stringify(gotNames) !== JSON.stringify(wantNames)) {
    problems.push(`sessions ${JSON.stringify(gotNames)}, preserved ${JSON.stringify(wantNames)}`);
  }
  for (const want of expected.sessions) {
    const got = report.sessions.find((s) => s.name === want.name);
    if (got === undefined) continue;
    const where = `session ${want.name}`;
    if (Number(got.fileCount) !== want.files.length || got.files.length !== want.files.length) {
      problems.push(
        `${where}: ${got.files.length} files (fileCount ${got.fileCount}), preserved ${want.files.length}`,
      );
    }
    const gotTokens = got.files.map((f) => f.token);
    const wantTokens = want.files.map((f) => f.token);
    if (JSON.stringify(gotTokens) !== JSON.stringify(wantTokens)) {
      problems.push(`${where}: tokens ${gotTokens.join(',')}, preserved ${wantTokens.join(',')}`);
    }
    for (const file of want.files) {
      const match = got.files.find((f) => f.token === file.token);
      if (match === undefined) continue;
      problems.push(...compareFile(`${where} token ${file.token}`, file, match));
    }
  }
  return problems;
}

function compareFile(
  where: string,
  want: ExpectedFile,
  got: HandoverReport['sessions'][number]['files'][number],
): string[] {
  const problems: string[] = [];
  const differs = (what: string, value: unknown, expected: unknown): void => {
    if (value !== expected)
      problems.push(`${where}: ${what} ${String(value)}, preserved ${String(expected)}`);
  };
  differs('handler', got.compatible, 'memfd-v2');
  const memfd = got.memfd;
  if (memfd === null) {
    problems.push(`${where}: no memfd record in the report`);
    return problems;
  }
  differs('size', Number(memfd.size), want.size);
  differs('position', Number(memfd.pos), want.pos);
  differs('seals', memfd.seals, want.seals);
  differs('nrFolios', Number(memfd.nrFolios), want.pages);
  const folios = memfd.folios;
  if (folios === null) {
    problems.push(`${where}: the folios would not restore`);
    return problems;
  }
  // 7.2's test kernels have no THP: every folio is one page, and memfd_luo fills holes.
  differs('folio count', folios.count, want.pages);
  differs('folio pages', Number(folios.pages), want.pages);
  differs('missing pages', Number(folios.missingPages), 0);
  const flagged = folios.byFlags.find((f) => f.names.join('|') === 'DIRTY|UPTODATE')?.count ?? 0;
  differs('folios flagged DIRTY|UPTODATE', flagged, want.pages);
  return problems;
}

/**
 * What debugfs `kho/in/sub_fdts/LUO` showed at boot 1's /init, against the luo_ser the dump
 * holds: LUO's early init frees that page (kho_restore_free() in luo_early_startup()) before
 * debugfs exists, so the blob is whatever reused the page by then. For the run's record.
 */
export function describeDebugfsLuo(blob: Uint8Array, handedOver: HandoverReport['luo']): string {
  if (handedOver === null) return 'no luo_ser in the dump to compare with';
  if (blob.length < 32) return `${blob.length} bytes, not a luo_ser`;
  const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  const nul = blob.subarray(0, 8).indexOf(0);
  const compatible = Buffer.from(blob.subarray(0, nul < 0 ? 8 : nul)).toString('latin1');
  const sessionsPa = `0x${view.getBigUint64(16, true).toString(16)}`;
  const same =
    compatible === handedOver.compatible &&
    String(view.getBigUint64(8, true)) === String(handedOver.liveupdateNum) &&
    sessionsPa === handedOver.sessionsPa;
  if (same) return `still the handed-over luo_ser (${compatible}, sessions at ${sessionsPa})`;
  return `not the handed-over luo_ser any more: compatible ${JSON.stringify(compatible)}, sessions_pa ${sessionsPa} (the dump's: ${handedOver.compatible}, ${handedOver.sessionsPa}); LUO early init freed that page`;
}
