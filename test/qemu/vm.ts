/**
 * A real QEMU VM under luo-qemu, for the tests: the counter guest on a
 * floppy image of its own, its serial port written to a file per QEMU
 * process (OUT1 before the update, OUT2 after), luo-qemu's log kept.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { counterGuest, counterGuestArgs } from '../../src/vm/counter-guest.js';
import { type GuestLine, parseSerial } from '../../src/vm/counter-serial.js';
import { ROOT } from '../support/luod.js';

/** The bin, as users run it (its bundle). */
export const LUO_QEMU = path.join(ROOT, 'dist/cli/luo-qemu-bin.cjs');
export const QEMU = 'qemu-system-x86_64';

export interface Run {
  readonly child: ChildProcess;
  readonly serial: string;
  readonly exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  log(): string;
  /** luo-qemu's JSON log lines with this `event`. */
  events(event: string): Record<string, unknown>[];
}

export class QemuVm {
  readonly id: string;
  readonly dir: string;
  readonly image: string;
  readonly runs: Run[] = [];
  readonly #socket: string;
  readonly #extra: string[];

  constructor(options: { id: string; dir: string; socket: string; extraQemuArgs?: string[] }) {
    this.id = options.id;
    this.dir = path.join(options.dir, options.id);
    this.#socket = options.socket;
    this.#extra = options.extraQemuArgs ?? [];
    fs.mkdirSync(this.dir, { recursive: true });
    this.image = path.join(this.dir, 'guest.img');
    fs.copyFileSync(counterGuest(), this.image); // QEMU locks an image: one per VM
  }

  /** The same luo-qemu command each time, but for the serial file (OUT1, OUT2, ...). */
  start(): Run {
    const serial = path.join(this.dir, `OUT${this.runs.length + 1}`);
    const args = [
      LUO_QEMU,
      '--id',
      this.id,
      '--ram',
      '64M',
      '--state-dir',
      this.dir,
      '--',
      QEMU,
      ...counterGuestArgs(this.image, serial),
      ...this.#extra,
    ];
    const child = spawn(process.execPath, args, {
      cwd: ROOT,
      env: { ...process.env, LUOD_SOCKET: this.#socket },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let log = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      log += d;
    });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      log += d;
    });
    const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.once('exit', (code, signal) => resolve({ code, signal })),
    );
    const run: Run = {
      child,
      serial,
      exit,
      log: () => log,
      events: (event) =>
        log
          .split('\n')
          .filter((l) => l.startsWith('{'))
          .map((l) => JSON.parse(l) as Record<string, unknown>)
          .filter((l) => l.event === event),
    };
    this.runs.push(run);
    return run;
  }

  get current(): Run {
    return this.runs[this.runs.length - 1]!;
  }

  /** The counter lines of a run's serial file so far. */
  lines(run: Run = this.current): GuestLine[] {
    return fs.existsSync(run.serial) ? parseSerial(fs.readFileSync(run.serial, 'latin1')) : [];
  }

  serialText(run: Run): string {
    return fs.existsSync(run.serial) ? fs.readFileSync(run.serial, 'latin1') : '';
  }

  /** Every process of this VM gone: luo-qemu, and a QEMU it may have left behind. */
  kill(): void {
    for (const run of this.runs)
      if (run.child.exitCode === null && run.child.signalCode === null) run.child.kill('SIGKILL');
    for (const pid of this.qemuPids()) process.kill(pid, 'SIGKILL');
  }

  /** QEMU processes serving this VM (their command line names its directory). */
  qemuPids(): number[] {
    const pids: number[] = [];
    for (const entry of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const argv = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
        if (argv[0]?.endsWith(QEMU) && argv.some((a) => a.includes(this.dir))) pids.push(Number(entry));
      } catch {
        // gone
      }
    }
    return pids;
  }
}
