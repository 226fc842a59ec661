/**
 * A QEMU VM's blackout across a live update through luod (luo-qemu on
 * `luod --emulate`), against the raw QEMU cycle with no luod at all, in the
 * same run:
 *
 *  - baseline: the counter guest runs in QEMU with its RAM in a memfd; QMP
 *    `stop`, `migrate` (x-ignore-shared) into a memfd, `quit`; a new QEMU on
 *    the same RAM with `-S -incoming defer` loads it and `cont`s. Stop to cont
 *    is the least any VMM pays to swap its QEMU process;
 *  - subject: the same guest under luo-qemu, `luoctl update` through luod on
 *    the emulated kernel, the same luo-qemu command run again (claim, load,
 *    cont). Its blackout as luod's update record holds it: luo-qemu's `stop`
 *    to its `cont`, reported with RESUMED (the one definition of blackout,
 *    record/format.ts), checked against luo-qemu's own log line.
 *
 * Both are also measured by the guest itself (its CMOS clock against its
 * TSC: src/qemu/counter-serial.ts). Ratios are times: lower is better; the
 * target (issue 14) is at most 1.5x.
 *
 * Environment: LUOKIT_BENCH_RUNS (default 3), runs interleaved.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { LuoClient } from '../src/client/index.js';
import { statePaths, stopEmulator } from '../src/kernel/emu/index.js';
import { QmpClient } from '../src/qemu/qmp.js';
import { type UpdateRecord, vmBlackoutMs } from '../src/record/format.js';
import { fstat, ftruncate, lseek, memfdCreate, type OwnedFd } from '../src/sys/index.js';
import { counterGuest, counterGuestArgs } from '../src/vm/counter-guest.js';
import { guestPauseMs, parseSerial, secondEdges } from '../src/vm/counter-serial.js';
import { type BenchContext, type Benchmark, envNumber, measurement, ROOT, timeRatio } from './lib.js';

const QEMU = 'qemu-system-x86_64';
const RAM = '64M';
const RAM_BYTES = 64 << 20;

/**
 * luod and luo-qemu as a host runs them: the built JavaScript (npm ci builds
 * it) when there is one; under tsx, whose compile time would be counted in
 * the blackout, only when not.
 */
function program(built: string, source: string): string[] {
  const js = path.join(ROOT, built);
  return fs.existsSync(js) ? [js] : ['--import', 'tsx', path.join(ROOT, source)];
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function until(
  what: string,
  timeoutMs: number,
  check: () => boolean | Promise<boolean>,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

const serialLines = (file: string) =>
  fs.existsSync(file) ? parseSerial(fs.readFileSync(file, 'latin1')) : [];

/** The guest's pause across two serial files. */
function guestPause(before: string, after: string): number {
  const first = fs.readFileSync(before, 'latin1');
  const pause = guestPauseMs(
    parseSerial(first + fs.readFileSync(after, 'latin1')),
    parseSerial(first).length,
  );
  if (pause === null) throw new Error('the guest printed too little to measure its pause');
  return pause;
}

/** QEMU by hand on a RAM memfd, with QMP; `incoming`: paused, waiting for a state. */
async function startQemu(ram: OwnedFd, image: string, serial: string, qmpPath: string, incoming: boolean) {
  fs.rmSync(qmpPath, { force: true });
  const child: ChildProcess = spawn(
    QEMU,
    [
      ...counterGuestArgs(image, serial),
      '-m',
      RAM,
      '-object',
      `memory-backend-file,id=ram,size=${RAM},mem-path=/proc/self/fd/3,share=on`,
      '-machine',
      'memory-backend=ram',
      '-qmp',
      `unix:${qmpPath},server=on,wait=off`,
      ...(incoming ? ['-S', '-incoming', 'defer'] : []),
    ],
    { stdio: ['ignore', 'ignore', 'inherit', ram.fd] },
  );
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const qmp = await QmpClient.connect(qmpPath, { timeoutMs: 30_000 });
  await qmp.execute('migrate-set-capabilities', {
    capabilities: [
      { capability: 'x-ignore-shared', state: true },
      { capability: 'events', state: true },
    ],
  });
  return { child, qmp, exited };
}

const migrated = (qmp: QmpClient) =>
  qmp.waitEvent(
    (e) => e.event === 'MIGRATION' && ['completed', 'failed'].includes(String(e.data?.status)),
    60_000,
    'migration',
  );

/** One raw cycle: stop, save, quit, a new QEMU loads, cont. Seconds from stop to cont, and the guest's pause. */
async function rawCycle(dir: string, image: string): Promise<{ seconds: number; guestMs: number }> {
  const ram = memfdCreate('bench-raw-ram');
  ftruncate(ram, RAM_BYTES);
  const state = memfdCreate('bench-raw-state');
  const out1 = path.join(dir, 'raw-OUT1');
  const out2 = path.join(dir, 'raw-OUT2');
  const qmpPath = path.join(dir, 'raw.qmp');
  try {
    const a = await startQemu(ram, image, out1, qmpPath, false);
    await until('the guest to run', 60_000, () => secondEdges(serialLines(out1)) >= 3);
    const t0 = performance.now();
    await a.qmp.execute('stop');
    await a.qmp.execute('getfd', { fdname: 's' }, 10_000, [state]);
    await a.qmp.execute('migrate', { uri: 'fd:s' });
    if ((await migrated(a.qmp)).data?.status !== 'completed') throw new Error('the raw save failed');
    await a.qmp.execute('quit').catch(() => {});
    await a.exited;
    lseek(state, 0);
    const b = await startQemu(ram, image, out2, qmpPath, true);
    await b.qmp.execute('getfd', { fdname: 's' }, 10_000, [state]);
    await b.qmp.execute('migrate-incoming', { uri: 'fd:s' });
    if ((await migrated(b.qmp)).data?.status !== 'completed') throw new Error('the raw load failed');
    await b.qmp.execute('cont');
    const seconds = (performance.now() - t0) / 1000;
    await until('the guest to go on', 60_000, () => secondEdges(serialLines(out2)) >= 2);
    await b.qmp.execute('quit').catch(() => {});
    await b.exited;
    if (fstat(state).size === 0) throw new Error('no device state was written');
    return { seconds, guestMs: guestPause(out1, out2) };
  } finally {
    ram.close();
    state.close();
  }
}

/** The VM's blackout in luod's record of `update` (pause to resume, RESUMED), in ms; null until it is there. */
function recordedBlackoutMs(recordsDir: string, update: string, id: string): number | null {
  const file = path.join(recordsDir, `${update}.json`);
  if (!fs.existsSync(file)) return null;
  const lane = (JSON.parse(fs.readFileSync(file, 'utf8')) as UpdateRecord).clients.find((c) => c.id === id);
  return lane ? vmBlackoutMs(lane) : null;
}

/** One update through luod: luo-qemu before, luoctl update, luo-qemu again. */
async function luodCycle(dir: string, socket: string, image: string, id: string) {
  const vmDir = path.join(dir, id);
  fs.mkdirSync(vmDir);
  const run = (serial: string) => {
    const child = spawn(
      process.execPath,
      [
        ...program('dist/cli/luo-qemu-bin.cjs', 'src/cli/luo-qemu.ts'),
        '--id',
        id,
        '--ram',
        RAM,
        '--state-dir',
        vmDir,
        '--',
        QEMU,
        ...counterGuestArgs(image, serial),
      ],
      { cwd: ROOT, env: { ...process.env, LUOD_SOCKET: socket }, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let log = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      log += d;
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    return { child, exited, log: () => log };
  };
  const out1 = path.join(vmDir, 'OUT1');
  const out2 = path.join(vmDir, 'OUT2');
  const first = run(out1);
  await until('the guest to run', 60_000, () => secondEdges(serialLines(out1)) >= 3);
  const admin = await LuoClient.connect(socket);
  const outcome = await admin.update({ timeoutMs: 60_000 });
  const recordsDir = String((await admin.status()).records_dir);
  admin.close();
  if (outcome.outcome !== 'rebooted') throw new Error(`the update was ${outcome.outcome}: ${outcome.reason}`);
  await first.exited;
  const second = run(out2);
  await until('the guest to go on', 60_000, () => secondEdges(serialLines(out2)) >= 2);
  const continued = second
    .log()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .find((l) => l.event === 'continued');
  if (!continued) throw new Error(`luo-qemu did not continue the VM:\n${second.log()}`);
  let recorded: number | null = null;
  await until("the VM's blackout in luod's record", 30_000, () => {
    recorded = recordedBlackoutMs(recordsDir, String(outcome.update), id);
    return recorded !== null;
  });
  second.child.kill('SIGTERM');
  await second.exited;
  if (recorded !== Number(continued.blackout_ms))
    throw new Error(
      `luod's record says ${recorded} ms of blackout, luo-qemu's log ${String(continued.blackout_ms)} ms`,
    );
  return { seconds: recorded! / 1000, guestMs: guestPause(out1, out2) };
}

export const qemuBlackout: Benchmark = {
  name: 'qemu-blackout',
  description:
    'a QEMU VM across a live update through luod (luo-qemu, emulated kernel) vs the raw QEMU stop-save-load-cont cycle',
  async run(ctx: BenchContext) {
    const runs = envNumber('LUOKIT_BENCH_RUNS', 3);
    const image = counterGuest();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-bench-qemu-'));
    const socket = path.join(dir, 'luod.sock');
    const emu = path.join(dir, 'emu');
    const luod = spawn(
      process.execPath,
      [
        ...program('dist/daemon/luod-bin.cjs', 'src/daemon/main.ts'),
        '--socket',
        socket,
        '--emulate',
        '--state',
        emu,
      ],
      {
        cwd: ROOT,
        stdio: 'ignore',
      },
    );
    try {
      await until('luod', 30_000, async () => {
        try {
          (await LuoClient.connect(socket)).close();
          return true;
        } catch {
          return false;
        }
      });
      const raw: number[] = [];
      const rawGuest: number[] = [];
      const viaLuod: number[] = [];
      const viaLuodGuest: number[] = [];
      for (let i = 0; i < runs; i++) {
        const a = (await ctx.phase(`raw cycle ${i + 1}`, () => rawCycle(dir, image))).value;
        raw.push(a.seconds);
        rawGuest.push(a.guestMs / 1000);
        const b = (
          await ctx.phase(`update through luod ${i + 1}`, () => luodCycle(dir, socket, image, `bench-${i}`))
        ).value;
        viaLuod.push(b.seconds);
        viaLuodGuest.push(b.guestMs / 1000);
      }
      const baseline = measurement('raw QEMU stop-to-cont', 'baseline', raw, null);
      const subject = measurement(
        'luod + luo-qemu blackout (stop to cont, the record)',
        'subject',
        viaLuod,
        null,
      );
      const guestBaseline = measurement('raw: guest-visible pause', 'info', rawGuest, null);
      const guestSubject = measurement('luod: guest-visible pause', 'info', viaLuodGuest, null);
      return {
        name: 'qemu-blackout',
        description: qemuBlackout.description,
        params: { runs, ram: RAM, guest: 'native/counter-guest/counter.S' },
        measurements: [baseline, subject, guestBaseline, guestSubject],
        ratios: [timeRatio(subject, baseline), timeRatio(guestSubject, guestBaseline)],
        notes: [
          'ratios here are times (lower is better); the target is at most 1.5x',
          "blackout: the VM's pause to its resume (QMP stop to cont) as luo-qemu reported it to luod (RESUMED) and the update record holds it",
          'the subject includes luod (preserve, barrier, emulated kexec, restore) and a new luo-qemu process (Node start, claim) before QEMU loads',
        ],
      };
    } finally {
      luod.kill('SIGTERM');
      await new Promise((resolve) => luod.once('exit', resolve));
      await stopEmulator(statePaths(emu)).catch(() => {});
      fs.rmSync(dir, { recursive: true, force: true });
    }
  },
};
