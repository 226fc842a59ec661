/**
 * The QEMU part of the real-kernel bench (`test/vm/run.ts --only qemu`; docs/vm.md): a real
 * QEMU VM crosses a real kernel live update through luod, for every kernel pair (by default
 * 7.2 -> 7.2 and 7.2 -> 7.3), one QEMU run of the bench guest per pair
 * (vm/guest/qemu-update.sh). Inside it, luo-qemu runs the host's qemu-system-x86_64 (seen
 * through the read-only share) on the counter guest (native/counter-guest/counter.S, built
 * here on the host into build/vm/guest/) under nested TCG.
 *
 * Checked per pair, each a failure of the run when wrong:
 *   - the counter goes on from where it stopped, no banner after the update (no guest
 *     reboot), the RAM sum the guest computes on every line the same before and after;
 *   - luod restored the update (last_update rebooted), nothing left unclaimed, no luod or
 *     luo-qemu error line, luo-qemu continued the VM (its `continued` event) and exited 0;
 *   - the guest measured its pause with its own clocks, and the bench guest's wall clock step
 *     across the kexec was measured (qemu-blackout.ts).
 * Then the QEMU section of build/vm/blackout.{json,txt}.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { counterGuest } from '../../src/vm/counter-guest.js';
import {
  BANNER,
  continuityProblem,
  type GuestLine,
  guestPause,
  parseSerial,
} from '../../src/vm/counter-serial.js';
import { luodErrors, restoredProblems } from '../../src/vm/luod-job.js';
import { CLOCK, collectMarks, parseConsoleLog } from './blackout.js';
import { writeBlackoutFiles } from './blackout-file.js';
import {
  clockSamples,
  clockStepMs,
  luoQemuErrors,
  luoQemuEvents,
  luoQemuFigures,
  type QemuBlackout,
  qemuBlackout,
} from './qemu-blackout.js';
import { type BenchContext, guestPrograms, type UpdatePair } from './update.js';

/** The nested guest's RAM: tiny (the counter guest uses under 1 MiB; SeaBIOS wants a few). */
export const QEMU_RAM = '32M';
/** CMOS second changes the counter must print on each side: the pause needs a whole second on each. */
const EDGES = 4;

/** The counter guest's boot sector, built on the host (as, ld) where the guest finds it. */
function counterImage(ctx: BenchContext): string {
  const image = path.join(ctx.out, 'guest/counter.img');
  fs.mkdirSync(path.dirname(image), { recursive: true });
  try {
    fs.copyFileSync(counterGuest(), image);
  } catch (err) {
    throw ctx.infra(`the counter guest: ${(err as Error).message}`);
  }
  return image;
}

function readIf(file: string): string {
  return fs.existsSync(file) ? fs.readFileSync(file, 'latin1') : '';
}

/** The first and last counter lines' figures, for the report. */
function counterSummary(before: GuestLine[], after: GuestLine[]): QemuBlackout['counter'] {
  return {
    lastBefore: before.at(-1)?.n ?? null,
    firstAfter: after[0]?.n ?? null,
    sumBefore: before.at(-1)?.sum ?? null,
    sumAfter: after.at(-1)?.sum ?? null,
  };
}

async function qemuUpdate(
  ctx: BenchContext,
  { kernels, label, runLabel }: UpdatePair,
  image: string,
  bin: string,
  counter: string,
): Promise<QemuBlackout> {
  const g = await ctx.guest(
    `qemu-${runLabel}`,
    kernels,
    'exec sh vm/guest/qemu-update.sh',
    {
      LUOKIT_GUEST_BIN: bin,
      LUOKIT_COUNTER_IMAGE: counter,
      LUOKIT_QEMU_RAM: QEMU_RAM,
      LUOKIT_QEMU_EDGES: String(EDGES),
      LUOKIT_QEMU_WAIT: String(Math.round(240 * ctx.timeoutScale)),
    },
    900_000 * ctx.timeoutScale,
    image,
  );
  const consoleLines = parseConsoleLog(readIf(path.join(g.dir, 'console.log')));
  const run = collectMarks(consoleLines);
  const problems = [
    ...g.result.markers
      .filter((m) => m.kind === 'QEMU-FAILED' || m.kind === 'KEXEC-FAILED')
      .map((m) => m.line.trim()),
    ...(g.result.outcome === 'failed' ? [g.result.reason ?? 'the guest run failed'] : []),
  ];
  if (g.result.boots.length < 2 && problems.length === 0) problems.push('the guest never reached boot 1');
  if (g.result.outcome === 'ok' && g.result.exitStatus !== 0 && problems.length === 0)
    problems.push(`the guest job exited ${g.result.exitStatus}`);
  const logs = [0, 1].map((boot) => readIf(path.join(g.dir, `luo-qemu.boot${boot}.log`)));
  for (const boot of [0, 1]) {
    for (const e of luodErrors(readIf(path.join(g.dir, `luod.boot${boot}.log`))))
      problems.push(`luod error in boot ${boot}: ${e}`);
    for (const e of luoQemuErrors(logs[boot]!)) problems.push(`luo-qemu error in boot ${boot}: ${e}`);
  }
  if (g.result.boots.length >= 2) {
    if (luoQemuEvents(logs[0]!, 'saved').length !== 1) problems.push('luo-qemu never saved the VM in boot 0');
    // luod's READY mark for it (luo-qemu itself has no time to log the kexec: the kernel goes first).
    if (run.marks['ready@0'] === undefined) problems.push('luod saw no READY in boot 0');
    if (luoQemuEvents(logs[1]!, 'claimed').length !== 1) problems.push('luo-qemu in boot 1 claimed nothing');
    if (luoQemuEvents(logs[1]!, 'continued').length !== 1)
      problems.push('luo-qemu in boot 1 did not continue the VM');
    if (luoQemuEvents(logs[1]!, 'cold-boot').length > 0)
      problems.push('luo-qemu in boot 1 cold-booted the VM');
    const exit = g.result.markers.find((m) => m.kind === 'QEMU-EXIT');
    if (exit?.fields.status !== '0')
      problems.push(`luo-qemu in boot 1 exited ${exit?.fields.status ?? '(never)'} on SIGTERM, not 0`);
    problems.push(...restoredProblems(g.dir));
  }
  ctx.check(
    `QEMU VM through luod: luod, luo-qemu, kexec, recovery, claimed (${label})`,
    problems.length ? 'fail' : 'pass',
    problems.join('; '),
  );

  // The guest's own account of it.
  const before = readIf(path.join(g.dir, 'serial.boot0.txt'));
  const after = readIf(path.join(g.dir, 'serial.boot1.txt'));
  const beforeLines = parseSerial(before);
  const afterLines = parseSerial(after);
  const continuity = !before.includes(BANNER)
    ? 'the guest never booted in boot 0 (no banner)'
    : after === ''
      ? `nothing from the guest after the update${problems[0] ? ` (${problems[0]})` : ''}`
      : continuityProblem(before, after);
  ctx.check(
    `QEMU VM through luod: the counter goes on where it stopped, no guest reboot, RAM sum unchanged (${label})`,
    continuity === null ? 'pass' : 'fail',
    continuity ?? undefined,
  );
  const all = parseSerial(before + after);
  // The line the stop cut in two is completed after the update: the first line of the join.
  const pause = all.length > 0 ? guestPause(all, beforeLines.length) : null;
  const step = clockStepMs(clockSamples(consoleLines));
  const report = qemuBlackout({
    kernels: label,
    ram: QEMU_RAM,
    clock: CLOCK,
    run,
    step,
    guestPauseRawMs: pause?.pauseMs ?? null,
    pauseUncertaintyMs: pause?.uncertaintyMs ?? null,
    luoQemu: luoQemuFigures(logs[0]!, logs[1]!),
    counter: counterSummary(beforeLines, afterLines),
  });
  const unmeasured = [
    ...(pause === null
      ? [`the guest's clocks gave no pause (${all.length} lines, join at ${beforeLines.length})`]
      : []),
    ...(step === null ? ['no LUOKIT-CLOCK samples in both boots'] : []),
    ...(report.missing.length > 0 ? [`missing marks: ${report.missing.join(', ')}`] : []),
  ];
  ctx.check(
    `QEMU VM through luod: the guest-visible pause measured by its own clocks, and every phase (${label})`,
    unmeasured.length === 0 ? 'pass' : 'fail',
    unmeasured.join('; '),
  );
  ctx.timings[`qemu (${label}): guest-visible pause, ms`] = report.guestPauseMs ?? 'n/a';
  ctx.timings[`qemu (${label}): wall clock step across the kexec, ms`] = report.clockStepMs ?? 'n/a';
  ctx.timings[`qemu (${label}): luo-qemu stop -> cont, ms`] = report.luoQemuStopToContMs ?? 'n/a';
  ctx.timings[`qemu (${label}): host clock stop -> cont, ms`] = report.hostStopToContMs ?? 'n/a';
  return report;
}

/** Every pair, one after the other, then the QEMU section of the blackout report. */
export async function qemuUpdates(
  ctx: BenchContext,
  pairs: readonly UpdatePair[],
  image: string,
): Promise<QemuBlackout[]> {
  const counter = counterImage(ctx);
  const bin = await guestPrograms(ctx);
  const reports: QemuBlackout[] = [];
  for (const pair of pairs) reports.push(await qemuUpdate(ctx, pair, image, bin, counter));
  const text = writeBlackoutFiles(ctx.out, { qemu: reports });
  console.log(text);
  return reports;
}
