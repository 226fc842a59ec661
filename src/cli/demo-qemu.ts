/**
 * `luoctl demo --qemu`: the demo with real QEMU VMs under luo-qemu.
 *
 * An emulated kernel and luod (--emulate) in a private directory; N QEMU VMs,
 * each booting the counter guest (native/counter-guest/counter.S) under
 * luo-qemu; one live update; the same luo-qemu commands run again, which
 * claim each VM and continue it. Verified: every guest's counter goes on one
 * by one from where it stopped, its RAM sum is unchanged, it did not boot
 * again; each guest's own clocks say how long it was paused.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { statePaths, stopEmulator } from '../kernel/emu/index.js';
import { blackoutOf, type UpdateRecord, vmBlackoutMs } from '../record/format.js';
import { Errno } from '../sys/errno.js';
import { SysError } from '../sys/error.js';
import { counterGuest, counterGuestArgs } from '../vm/counter-guest.js';
import { continuityProblem, guestPauseMs, parseSerial, secondEdges } from '../vm/counter-serial.js';
import {
  cleanupOnSignal,
  closedRecord,
  command,
  demoPlaces,
  startDemoLuod,
  terminate,
  waitFor,
} from './demo-support.js';
import { askLuod, checkReply } from './luod-connection.js';
import { ExitCode, type Output } from './output.js';

export const QEMU_BINARY = 'qemu-system-x86_64';

const DEMO_QEMU_BLACKOUT_MEANING =
  "pause to resume: from luo-qemu's QMP stop before the kexec to its cont after it, as luo-qemu reported it to luod (RESUMED) and luod's update record holds it; guest_pause_ms is the guest's own clocks' view, a cross-check";

interface QemuResult {
  id: string;
  verified: boolean;
  /**
   * The VM's blackout from luod's record of the update: luo-qemu's `stop` before the kexec
   * to its `cont` after it, reported with RESUMED. Null when the record lacks it.
   */
  blackout_ms: number | null;
  /** The guest's own measure of its pause (CMOS clock against TSC): a cross-check. */
  guest_pause_ms?: number;
  state_bytes?: number;
  error?: string;
}

/** One VM: its directory, floor image, and the luo-qemu runs (OUT1 before, OUT2 after). */
class DemoVm {
  readonly runs: { child: ChildProcess; serial: string; log: string; exit: Promise<number | null> }[] = [];

  constructor(
    readonly id: string,
    readonly dir: string,
    readonly image: string,
    readonly mem: number,
    readonly socket: string,
  ) {}

  start(): void {
    const serial = path.join(this.dir, `OUT${this.runs.length + 1}`);
    const log = path.join(this.dir, `luo-qemu${this.runs.length + 1}.log`);
    const logFd = fs.openSync(log, 'a');
    const child = spawn(
      process.execPath,
      [
        ...command('./luo-qemu.js', './luo-qemu-bin.cjs'),
        '--id',
        this.id,
        '--ram',
        `${this.mem >> 20}M`,
        '--state-dir',
        this.dir,
        '--',
        QEMU_BINARY,
        ...counterGuestArgs(this.image, serial),
      ],
      { stdio: ['ignore', logFd, logFd], env: { ...process.env, LUOD_SOCKET: this.socket } },
    );
    fs.closeSync(logFd);
    const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    this.runs.push({ child, serial, log, exit });
  }

  text(run: number): string {
    const file = this.runs[run]?.serial;
    return file && fs.existsSync(file) ? fs.readFileSync(file, 'latin1') : '';
  }

  edges(run: number): number {
    return secondEdges(parseSerial(this.text(run)));
  }

  /** luo-qemu's 'continued' log line of the second run. */
  continued(): Record<string, unknown> | undefined {
    const file = this.runs[1]?.log;
    if (!file || !fs.existsSync(file)) return undefined;
    for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
      if (!line.startsWith('{')) continue;
      const entry = JSON.parse(line) as Record<string, unknown>;
      if (entry.event === 'continued') return entry;
    }
    return undefined;
  }

  result(record: UpdateRecord): QemuResult {
    const problem = continuityProblem(this.text(0), this.text(1));
    const all = parseSerial(this.text(0) + this.text(1));
    const pause = guestPauseMs(all, parseSerial(this.text(0)).length);
    const continued = this.continued();
    const lane = record.clients.find((c) => c.id === this.id);
    return {
      id: this.id,
      verified: problem === null,
      blackout_ms: lane ? vmBlackoutMs(lane) : null,
      ...(pause !== null && { guest_pause_ms: Math.round(pause) }),
      ...(continued && { state_bytes: Number(continued.state_bytes) }),
      ...(problem !== null && { error: problem }),
    };
  }
}

export async function demoQemu(
  options: { vms: number; mem: number; keep: boolean; reportDir?: string },
  out: Output,
): Promise<ExitCode> {
  const probe = spawnSync(QEMU_BINARY, ['--version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0)
    throw new SysError(
      'demo',
      Errno.ENOENT,
      `--qemu needs ${QEMU_BINARY} (Debian: apt-get install qemu-system-x86); the plain luoctl demo runs without it`,
    );
  if (options.mem % (1 << 20) !== 0)
    throw new SysError('demo', Errno.EINVAL, '--mem must be whole MiB with --qemu');
  const image = counterGuest();
  const { dir, reportDir, recordsDir, socket, emuState } = demoPlaces('luokit-demo-qemu-', options.reportDir);
  const say = (line: string) => {
    if (!out.json) process.stderr.write(`${line}\n`);
  };
  let luod: ChildProcess | null = null;
  const vms: DemoVm[] = [];
  const started = Date.now();
  let cleaned: Promise<void> | undefined;
  const cleanup = (): Promise<void> =>
    (cleaned ??= (async () => {
      await Promise.all(vms.flatMap((vm) => vm.runs.map((run) => terminate(run.child))));
      if (luod) await terminate(luod);
      await stopEmulator(statePaths(emuState)).catch(() => {});
      if (!options.keep) fs.rmSync(dir, { recursive: true, force: true });
    })());
  const unhook = cleanupOnSignal(cleanup);
  try {
    say(`demo: ${options.vms} QEMU VM(s) with ${options.mem >> 20} MiB of guest RAM each, in ${dir}`);
    luod = await startDemoLuod({ dir, socket, emuState, recordsDir });
    for (let i = 1; i <= options.vms; i++) {
      const id = `qemu-${i}`;
      const vmDir = path.join(dir, id);
      fs.mkdirSync(vmDir);
      const vmImage = path.join(vmDir, 'guest.img');
      fs.copyFileSync(image, vmImage); // QEMU locks its image: one per VM
      const vm = new DemoVm(id, vmDir, vmImage, options.mem, socket);
      vm.start();
      vms.push(vm);
    }
    await waitFor('every VM to subscribe', 60_000, async () => {
      const reply = checkReply(await askLuod({ cmd: 'CLIENTS' }, { socket }));
      return (reply.clients as { id: string | null }[]).filter((c) => c.id).length >= options.vms
        ? true
        : undefined;
    });
    // Three seconds of each guest's clocks before the update, to measure its pause by.
    await waitFor('every guest to run', 60_000, () =>
      vms.every((vm) => vm.edges(0) >= 3) ? true : undefined,
    );
    say('demo: every VM runs and is subscribed; updating');
    const update = checkReply(
      await askLuod(
        { cmd: 'UPDATE', timeout_ms: 60_000 },
        { socket, onEvent: (e) => say(`demo: update: ${String(e.phase)}`) },
      ),
    );
    say(`demo: update ${update.update}: ${update.outcome}`);
    if (update.outcome === 'rebooted') {
      const exits = await Promise.all(vms.map((vm) => vm.runs[0]!.exit));
      say(`demo: luo-qemu exited at the kexec (${exits.join(', ')}); the same commands again`);
      for (const vm of vms) vm.start();
      await waitFor('every guest to go on', 60_000, () =>
        vms.every((vm) => vm.edges(1) >= 2) ? true : undefined,
      ).catch(() => {});
    }
    let { record, recordFile, htmlFile } = await closedRecord(recordsDir, reportDir, String(update.update));
    // Each luo-qemu reports its VM's blackout (RESUMED) just after its `cont`.
    if (update.outcome === 'rebooted')
      ({ record, recordFile, htmlFile } = await waitFor(
        "every VM's blackout in the record",
        20_000,
        async () => {
          const again = await closedRecord(recordsDir, reportDir, String(update.update));
          return blackoutOf(again.record).vms.length >= options.vms ? again : undefined;
        },
      ).catch(() => ({ record, recordFile, htmlFile })));
    const results = vms.map((vm) => vm.result(record));
    const verified =
      update.outcome === 'rebooted' &&
      record.outcome === 'completed' &&
      results.every((r) => r.verified && r.blackout_ms !== null);
    out.result(
      {
        verified,
        qemu: true,
        update: update.update,
        outcome: update.outcome,
        vms: options.vms,
        mem_bytes: options.mem,
        /** The update's blackout: the longest of its VMs' (record/format.ts blackoutOf). */
        blackout_ms: blackoutOf(record).maxMs,
        blackout: DEMO_QEMU_BLACKOUT_MEANING,
        vmms: results,
        record: recordFile,
        html: htmlFile,
        duration_ms: Date.now() - started,
        ...(options.keep && { dir }),
      },
      () =>
        [
          "QEMU VMs (blackout: QMP stop to cont, as luo-qemu reported it to luod and the record holds it; the guest's own clocks are a cross-check):",
          ...results.map(
            (r) =>
              `  ${r.id.padEnd(8)} ${r.verified ? 'continued' : 'NOT CONTINUED'}  blackout ${r.blackout_ms === null ? 'not recorded' : `${r.blackout_ms} ms`}${r.guest_pause_ms !== undefined ? `  (guest's clocks: paused ${r.guest_pause_ms} ms)` : ''}${r.error ? `  ${r.error}` : ''}`,
          ),
          `record: ${recordFile} (${record.outcome})`,
          `html report: ${htmlFile}`,
          verified
            ? `verdict: live update verified: ${options.vms} QEMU VM(s) went on where they stopped, without a reboot`
            : 'verdict: live update NOT verified',
        ].join('\n'),
    );
    return verified ? ExitCode.ok : ExitCode.failure;
  } finally {
    unhook();
    await cleanup();
  }
}
