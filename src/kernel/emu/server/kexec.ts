/**
 * The emulated reboot path: liveupdate_reboot() on the way down, KHO and
 * LUO restore on the way up, with Linux 7.2's handover bytes in between.
 *
 * Down: freeze every outgoing session (a refusal returns the kernel's errno
 * and leaves everything running); copy each preserved memfd's pages into
 * freshly allocated "physical memory" (`memory.img`, byte pa = address pa);
 * write the KHO root FDT, the LUO block chains, the memfd records and folio
 * lists through `src/abi`; replace the previous image atomically.
 *
 * Up: the next kernel reads `kho.dtb` and `memory.img` and nothing else. A
 * KHO format it does not speak means a cold boot (the data is silently
 * gone, as on real hardware); a LUO format it does not speak is a panic; an
 * unknown file handler makes every open of the device fail with EIO.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { decodeHandover, handoverBootOutcome, writeHandover } from '../../../abi/handover.js';
import type { MemfdFolio } from '../../../abi/memfd.js';
import { PhysicalMemoryWriter } from '../../../abi/memory.js';
import { SparseFileMemory } from '../../../abi/memory-files.js';
import { Errno } from '../../../sys/errno.js';
import type { OwnedFd } from '../../../sys/fd.js';
import { O_RDONLY, open } from '../../../sys/file.js';
import { copyRange } from '../../../sys/mm.js';
import type { StatePaths } from '../paths.js';
import { KernelError } from './errors.js';
import type { OutgoingFile } from './luo.js';
import { type IncomingSessionRecord, Luo } from './luo.js';
import type { BootReport, KernelIdentity, RebootHooks } from './server.js';
import { KERNEL_FORMATS, WRITABLE_VERSIONS } from './versions.js';

const PAGE = 4096;
/** Folios of 2 MiB where the file allows, as shmem with THP would have; 4 KiB otherwise. */
const HUGE_ORDER = 9;
/** Folio flags the kernel records for pinned, up-to-date pages (DIRTY | UPTODATE). */
const FOLIO_FLAGS = 0x3;

/**
 * Copy a preserved memfd's pages into freshly allocated physical memory, as
 * folios. The pages are allocated as one contiguous run (2 MiB aligned), so
 * the bytes move in one in-kernel copy; the folio list describes the run in
 * 2 MiB folios where the file allows (as shmem with THP), 4 KiB at the tail.
 */
function writeFolios(
  writer: PhysicalMemoryWriter,
  image: SparseFileMemory,
  file: OutgoingFile,
): MemfdFolio[] {
  const { size } = file.memfd.record;
  const pages = Math.ceil(size / PAGE);
  if (pages === 0) return [];
  const base = writer.allocPages(pages, HUGE_ORDER);
  copyRange(file.memfd.file, 0, image.fd, Number(base), size);
  const folios: MemfdFolio[] = [];
  for (let index = 0; index < pages; ) {
    const order = pages - index >= 1 << HUGE_ORDER ? HUGE_ORDER : 0;
    folios.push({ index: BigInt(index), pa: base + BigInt(index * PAGE), order, flags: FOLIO_FLAGS });
    index += 1 << order;
  }
  return folios;
}

/** Folios that sit back to back in both the file and physical memory, merged into runs to copy at once. */
function contiguousRuns(
  folios: readonly MemfdFolio[],
  size: bigint,
): { offset: number; pa: bigint; bytes: number }[] {
  const runs: { offset: number; pa: bigint; bytes: number }[] = [];
  for (const folio of [...folios].sort((a, b) => (a.index < b.index ? -1 : 1))) {
    const offset = folio.index * BigInt(PAGE);
    if (offset >= size) continue;
    const bytes = Math.min((1 << folio.order) * PAGE, Number(size - offset));
    const last = runs.at(-1);
    if (last && BigInt(last.offset + last.bytes) === offset && last.pa + BigInt(last.bytes) === folio.pa) {
      last.bytes += bytes;
    } else {
      runs.push({ offset: Number(offset), pa: folio.pa, bytes });
    }
  }
  return runs;
}

/** The handover this emulated kernel booted from: `kho-in.dtb`, pointing into `memory.img`. */
export function incomingFdt(paths: StatePaths): string {
  return path.join(paths.dir, 'kho-in.dtb');
}

export function handoverHooks(paths: StatePaths, log: Logger): RebootHooks {
  /** The previous boot's memory image, kept open until the next kexec so unretrieved files can still be read. */
  let incomingImage: OwnedFd | null = null;

  return {
    serialize(luo: Luo, identity: KernelIdentity, nextVersion: string): void {
      if (!WRITABLE_VERSIONS.has(identity.version)) {
        throw new KernelError(
          Errno.EOPNOTSUPP,
          `the emulator writes handovers as Linux 7.2/7.3 only; this emulated kernel is ${identity.version}`,
        );
      }
      luo.freezeAll();
      const tmpImage = `${paths.memoryImage}.next`;
      const tmpFdt = `${paths.handoverFdt}.next`;
      fs.rmSync(tmpImage, { force: true });
      const image = SparseFileMemory.open(tmpImage, { writable: true });
      try {
        const writer = new PhysicalMemoryWriter(image);
        const sessions = luo.outgoing.map((session) => ({
          // The name's bytes go into luo_session_ser exactly as the caller gave them.
          name: Buffer.from(session.name, 'latin1').toString('utf8'),
          nameBytes: Buffer.from(session.name, 'latin1'),
          files: session.files.map((file) => {
            const { size, pos, seals } = file.memfd.record;
            const folios = writeFolios(writer, image, file);
            return {
              token: file.token,
              compatible: file.compatible,
              memfd: { pos: BigInt(pos), size: BigInt(size), seals, folios },
            };
          }),
        }));
        const { fdt } = writeHandover(writer, {
          liveupdateNum: BigInt(identity.liveupdateNum + 1),
          previousRelease: `${identity.version}.0-luokit-emu`,
          kexecCount: identity.bootId,
          sessions,
        });
        image.close();
        fs.writeFileSync(tmpFdt, fdt);
        // The incoming handover's copy points into the image about to be replaced.
        fs.rmSync(incomingFdt(paths), { force: true });
        fs.renameSync(tmpImage, paths.memoryImage);
        fs.renameSync(tmpFdt, paths.handoverFdt);
      } catch (err) {
        image.close();
        fs.rmSync(tmpImage, { force: true });
        fs.rmSync(tmpFdt, { force: true });
        if (err instanceof KernelError) throw err;
        log.error({ err, next: nextVersion }, 'writing the handover failed');
        throw new KernelError(Errno.EIO, `writing the handover failed: ${(err as Error).message}`);
      }
    },

    boot(version: string, previous: KernelIdentity | null) {
      incomingImage?.close();
      incomingImage = null;
      const identity: KernelIdentity = { version, bootId: (previous?.bootId ?? 0) + 1, liveupdateNum: 0 };
      const start = (report: BootReport, luo = new Luo()) => ({ luo, identity, report });
      if (!fs.existsSync(paths.handoverFdt) || !fs.existsSync(paths.memoryImage)) {
        fs.rmSync(incomingFdt(paths), { force: true });
        return start({ outcome: 'cold', detail: 'no handover: a cold boot', sessions: 0 });
      }
      const fdt = fs.readFileSync(paths.handoverFdt);
      // The handover is consumed by this boot, whatever comes of it; it stays readable as
      // kho-in.dtb (with memory.img) for `luoctl inspect --state`, as kho/in/fdt does in debugfs.
      fs.renameSync(paths.handoverFdt, incomingFdt(paths));
      const image = open(paths.memoryImage, O_RDONLY);
      const memory = SparseFileMemory.fromFd(image.fd);
      const formats = KERNEL_FORMATS[version]!;
      const verdict = handoverBootOutcome(fdt, memory, version);
      if (verdict.outcome === 'kho-mismatch') {
        image.close();
        const found = verdict.compatibles.kho.join(', ') || 'no KHO compatible';
        return start({
          outcome: 'handover-ignored',
          detail: `KHO handover is ${found}, this kernel speaks ${formats.kho}: KHO revival disabled, preserved memory lost`,
          sessions: 0,
        });
      }
      if (verdict.outcome === 'luo-mismatch') {
        image.close();
        log.fatal({ found: verdict.compatibles.luo }, 'LUO ABI mismatch: kernel panic');
        return start({
          outcome: 'panic',
          detail: `LUO handover is ${verdict.compatibles.luo}, this kernel speaks ${formats.luo}: the kernel panics`,
          sessions: 0,
        });
      }
      const decoding = decodeHandover(fdt, memory);
      for (const problem of decoding.problems.filter((p) => p.reaction === 'warning')) {
        log.warn({ problem: problem.error.message }, 'handover warning');
      }
      const fatal = decoding.problems.find((p) => p.reaction === 'panic' || p.reaction === 'cold-boot');
      if (fatal || !decoding.model) {
        image.close();
        const detail = fatal?.error.message ?? 'the handover could not be read';
        log.fatal({ detail }, 'the handover is unusable');
        return start({
          outcome: fatal?.reaction === 'cold-boot' ? 'handover-ignored' : 'panic',
          detail,
          sessions: 0,
        });
      }
      const model = decoding.model;
      const broken = new Set(
        decoding.problems
          .filter((p) => p.reaction === 'retrieve-fails')
          .map((p) => `${p.sessionIndex}\0${p.token}`),
      );
      const restoreFails = decoding.problems.some((p) => p.reaction === 'device-eio');
      incomingImage = image;
      const incoming: IncomingSessionRecord[] = model.sessions.map((session, index) => ({
        // LUO compares names as bytes; the emulator keeps them as binary strings (one char per byte).
        name: Buffer.from(session.nameBytes ?? Buffer.from(session.name, 'utf8')).toString('latin1'),
        files: session.files.map((file) => {
          const state = broken.has(`${index}\0${file.token}`) ? undefined : file.memfd;
          if (!state) return { token: file.token, compatible: file.compatible };
          return {
            token: file.token,
            compatible: file.compatible,
            memfd: { pos: Number(state.pos), size: Number(state.size), seals: state.seals },
            fill: (target: OwnedFd) => {
              for (const run of contiguousRuns(state.folios, state.size)) {
                copyRange(image, Number(run.pa), target, run.offset, run.bytes);
              }
            },
          };
        }),
      }));
      identity.liveupdateNum = Number(model.liveupdateNum);
      return start(
        {
          outcome: 'restored',
          detail: `live update ${model.liveupdateNum} from ${model.previousRelease}${restoreFails ? ' (restore fails: every open EIO)' : ''}`,
          sessions: incoming.length,
        },
        new Luo(incoming, { restoreError: restoreFails ? Errno.EIO : 0 }),
      );
    },
  };
}
