/**
 * A full live update of many VMMs through luod on the emulated kernel,
 * against the same device calls made by one plain script without luod, in
 * the same run (issue #15 goal 3; docs/performance.md).
 *
 * luod side: luod (its bundle, as installed) with --max-clients above N;
 * N VMMs with MEMFDS memfds each, as connections from a few processes
 * (bench/scale-client.ts: a thousand VMM processes are more than this
 * machine holds, and luod sees one connection per VMM either way). Each
 * subscribes; an UPDATE runs; each preserves its memfds and says READY;
 * the emulated kexec; each reconnects, CLAIMs, retrieves its memfds and
 * finishes. From luod's --timeline:
 *   barrier = update-start to barrier-done (sessions created and handed out,
 *             every READY in);
 *   claim   = luod-ready (after the kexec) to all-claimed;
 *   luod CPU = luod's user+system time over the whole update, per session.
 * Floor: one process opens the device, creates N sessions and preserves
 * MEMFDS memfds in each (the barrier's device calls), the emulated kexec,
 * then retrieves every session and memfd and finishes (the claims' calls);
 * its CPU time per session likewise.
 *
 * N runs over LUOKIT_BENCH_SCALE_VMS (default "100,300,1000"): the ratios
 * must not grow with N (nothing quadratic). Target: luod at most 2x the floor.
 *
 * Restart (the largest N only; goal 1): after the kexec, before any VMM
 * reconnects, luod is killed and started again, as after a real reboot: it
 * takes every session back from the fd holder before it listens. Timed from
 * its exec: listening ("ready"), and every session handed back (the last
 * CLAIM). Target: at most 3x. Three ratios, each against a baseline of the
 * same run:
 *   ready / `node -e 1`: luod's start against Node's own;
 *   handed back / `node -e 1`: everything after the exec counted as luod's,
 *     the N VMMs' own work included (connect, CLAIM, N x MEMFDS retrieves
 *     and N finishes through the emulator process, on the same cores);
 *   handed back / restart floor: the restart floor is `node -e 1` plus the
 *     floor's claim (above: the same retrieves and finishes, made by one
 *     plain script with no luod), so this ratio is what luod adds to a
 *     plain script's start and the claims' own device calls.
 * The floor is the one measured for the scale figures when they run, else
 * measured once for the restart alone.
 * LUOKIT_BENCH_SCALE_RESTART=0 leaves the restart out, `only` runs nothing else.
 * Ratios here are times (lower is better).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { LuoClient } from '../src/client/index.js';
import { startEmulator } from '../src/kernel/emu/index.js';
import type { Session } from '../src/kernel/index.js';
import type { UpdateRecord } from '../src/record/format.js';
import { readRecordFile } from '../src/record/store.js';
import { ftruncate, memfdCreate, type OwnedFd } from '../src/sys/index.js';
import {
  type BenchContext,
  type Benchmark,
  type BenchmarkResult,
  type Measurement,
  measurement,
  packageBin,
  type Ratio,
  ROOT,
  timeRatio,
} from './lib.js';

const LUOD = packageBin('luod');
const MEMFDS = 4;
/** Connections per client process. */
const PER_PROCESS = 250;
/** USER_HZ: /proc/PID/stat counts CPU time in 1/100 s on Linux. */
const TICKS = 100;

interface Side {
  barrier: number;
  claim: number;
  cpuPerSession: number;
  /** Of which in the kernel (system time): passing fds, the emulator's sockets. */
  systemPerSession: number;
}

/** A process's CPU time so far: user and system, in seconds. */
function cpuTimes(pid: number): { user: number; system: number } {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return { user: Number(fields[11]) / TICKS, system: Number(fields[12]) / TICKS };
}

function cpuSeconds(pid: number): number {
  const { user, system } = cpuTimes(pid);
  return user + system;
}

async function floor(dir: string, n: number): Promise<Side> {
  const emulator = await startEmulator({ stateDir: path.join(dir, 'floor-emu') });
  try {
    const ram: OwnedFd[] = [];
    for (let i = 0; i < n * MEMFDS; i++) {
      const fd = memfdCreate(`f${i}`);
      ftruncate(fd, 64 * 1024);
      ram.push(fd);
    }
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const device = emulator.openDevice();
    const sessions: Session[] = [];
    for (let i = 0; i < n; i++) {
      const session = device.createSession(`vm-${i}`);
      for (let j = 0; j < MEMFDS; j++) session.preserveFd(ram[i * MEMFDS + j]!, BigInt(j + 1));
      sessions.push(session);
    }
    const barrier = (performance.now() - t0) / 1000;
    const cpuBarrier = process.cpuUsage(cpu0);
    device.close();
    await emulator.kexec();
    for (const s of sessions) s.close();
    for (const fd of ram) fd.close();
    const cpu1 = process.cpuUsage();
    const t1 = performance.now();
    const next = emulator.openDevice();
    for (let i = 0; i < n; i++) {
      const session = next.retrieveSession(`vm-${i}`);
      for (let j = 0; j < MEMFDS; j++) session.retrieveFd(BigInt(j + 1)).close();
      session.finish();
      session.close();
    }
    next.close();
    const claim = (performance.now() - t1) / 1000;
    const cpuClaim = process.cpuUsage(cpu1);
    const cpu = (cpuBarrier.user + cpuBarrier.system + cpuClaim.user + cpuClaim.system) / 1e6;
    const system = (cpuBarrier.system + cpuClaim.system) / 1e6;
    return { barrier, claim, cpuPerSession: cpu / n, systemPerSession: system / n };
  } finally {
    await emulator.stop().catch(() => {});
  }
}

interface Restart {
  /** exec of the new luod to its socket listening. */
  ready: number;
  /** exec of the new luod to the last CLAIM served. */
  handedBack: number;
  /** The new luod's CPU time (user+system) from its exec until every claim is recorded. */
  cpu: number;
}

function luodArgs(state: string, socket: string, dir: string, n: number): string[] {
  return [
    LUOD,
    '--emulate',
    '--state',
    state,
    '--socket',
    socket,
    '--max-clients',
    String(n + 64),
    '--claim-timeout',
    '600',
    '--records',
    path.join(dir, 'records'),
  ];
}

const LUOD_ENV = { ...process.env, LUOKIT_LOG_LEVEL: 'warn' };

/** LUOKIT_BENCH_SCALE_PROFILE=DIR: luod runs with --cpu-prof writing there. */
function startLuod(args: string[]): ChildProcess {
  const profile = process.env.LUOKIT_BENCH_SCALE_PROFILE;
  const node = profile ? ['--cpu-prof', '--cpu-prof-dir', path.resolve(profile)] : [];
  // LUOKIT_BENCH_SCALE_LOG=FILE: luod's log (warnings and errors) appended there.
  const logFile = process.env.LUOKIT_BENCH_SCALE_LOG;
  const out = logFile ? fs.openSync(logFile, 'a') : 'ignore';
  try {
    return spawn(process.execPath, [...node, ...args], { stdio: ['ignore', out, 'inherit'], env: LUOD_ENV });
  } finally {
    if (typeof out === 'number') fs.closeSync(out);
  }
}

/** Resolves when `file` exists (inotify on its directory). */
function appears(file: string): Promise<void> {
  return new Promise((resolve) => {
    const watcher = fs.watch(path.dirname(file), () => {
      if (fs.existsSync(file)) {
        watcher.close();
        resolve();
      }
    });
    if (fs.existsSync(file)) {
      watcher.close();
      resolve();
    }
  });
}

async function waitUntil<T>(what: string, probe: () => Promise<T | undefined> | T | undefined): Promise<T> {
  const deadline = Date.now() + 600_000;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** CPU per session, and its system part. */
function perSession(side: Side): string {
  return `${(side.cpuPerSession * 1e3).toFixed(2)} ms (system ${(side.systemPerSession * 1e3).toFixed(2)})`;
}

function phaseSeconds(record: UpdateRecord, names: string[]): number {
  const spans = record.phases.filter((p) => names.includes(p.phase));
  if (spans.length !== names.length || spans.some((p) => p.end === null))
    throw new Error(`the record lacks a finished ${names.join(' or ')} phase`);
  return (Math.max(...spans.map((p) => p.end!)) - Math.min(...spans.map((p) => p.start))) / 1000;
}

async function throughLuod(
  dir: string,
  n: number,
  ctx: BenchContext,
  restart: boolean,
): Promise<Side & { restart: Restart | null }> {
  const state = path.join(dir, 'luod-emu');
  const socket = path.join(dir, 'luod.sock');
  const gate = path.join(dir, 'claim-now');
  const args = luodArgs(state, socket, dir, n);
  const emulator = await startEmulator({ stateDir: state });
  let luod = startLuod(args);
  const clients: ChildProcess[] = [];
  try {
    (await LuoClient.connectWithRetry(socket, { timeoutMs: 30_000 })).close();
    const line = (child: ChildProcess, word: string) =>
      new Promise<void>((resolve, reject) => {
        let text = '';
        child.stdout!.on('data', (chunk) => {
          text += chunk;
          if (text.includes(word)) resolve();
        });
        child.once('exit', (code) => reject(new Error(`a client process exited ${code} before "${word}"`)));
      });
    const subscribed: Promise<void>[] = [];
    const claimed: Promise<void>[] = [];
    for (let first = 0; first < n; first += PER_PROCESS) {
      const count = Math.min(PER_PROCESS, n - first);
      const child = spawn(
        process.execPath,
        [
          '--import',
          'tsx',
          path.join(ROOT, 'bench/scale-client.ts'),
          socket,
          `vm${first}-`,
          String(count),
          String(MEMFDS),
          gate,
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      clients.push(child);
      // Handled where awaited; a client killed after another failure must not hide it.
      const both = [line(child, 'subscribed'), line(child, 'claimed')] as const;
      for (const p of both) p.catch(() => {});
      subscribed.push(both[0]);
      claimed.push(both[1]);
    }
    await Promise.all(subscribed);
    ctx.log(`${n} VMMs subscribed`);
    if (!restart) fs.writeFileSync(gate, '');
    const cpu0 = cpuTimes(luod.pid!);
    const admin = await LuoClient.connect(socket);
    const update = await admin
      .update({ timeoutMs: 600_000 })
      .then((r) => r.update)
      .catch(() => undefined); // the connection drops at the kexec
    admin.close();
    let restarted: Restart | null = null;
    if (restart) {
      // Every session retrieved and held: luod dies, a new one starts with them all.
      // luod's state file says `claiming` once the holder has every incoming session
      // (keeper.ts): read without taking a connection of luod's.
      await waitUntil('luod to hand every session to the holder', () => {
        try {
          const file = JSON.parse(fs.readFileSync(`${socket}.state.json`, 'utf8'));
          return file.body?.phase === 'claiming' && file.body.clients.length === n ? true : undefined;
        } catch {
          return undefined;
        }
      });
      const exited = new Promise((r) => luod.once('exit', r));
      luod.kill('SIGKILL');
      await exited;
      fs.rmSync(socket, { force: true }); // what the next luod does with a dead one's socket
      const listening = appears(socket);
      const t0 = performance.now();
      const started = Date.now();
      luod = startLuod(args);
      await listening;
      const ready = (performance.now() - t0) / 1000;
      fs.writeFileSync(gate, '');
      await Promise.all(claimed);
      const last = await waitUntil('the record of every claim', () => {
        const record = newestRecord(path.join(dir, 'records'));
        const ends = record?.clients.map((c) => c.claim?.end).filter((t): t is number => t !== undefined);
        return ends && ends.length === n ? Math.max(...ends) : undefined;
      });
      restarted = { ready, handedBack: (last - started) / 1000, cpu: cpuSeconds(luod.pid!) };
    } else {
      await Promise.all(claimed);
    }
    const times = cpuTimes(luod.pid!);
    const system = times.system - (restart ? 0 : cpu0.system);
    const cpu = times.user + times.system - (restart ? 0 : cpu0.user + cpu0.system);
    const record = await waitUntil('the closed update record', () => {
      const r = newestRecord(path.join(dir, 'records'));
      return r && r.outcome !== 'in-progress' && (update === undefined || r.update === update)
        ? r
        : undefined;
    });
    return {
      barrier: phaseSeconds(record, ['preserve', 'barrier']),
      claim: phaseSeconds(record, ['restore', 'claims']),
      cpuPerSession: restart ? Number.NaN : cpu / n,
      systemPerSession: restart ? Number.NaN : system / n,
      restart: restarted,
    };
  } finally {
    for (const c of clients) c.kill('SIGKILL');
    luod.kill('SIGTERM');
    await emulator.stop().catch(() => {});
  }
}

function newestRecord(dir: string): UpdateRecord | undefined {
  let files: string[];
  try {
    files = fs.readdirSync(dir).filter((f) => f.endsWith('.json'));
  } catch {
    return undefined;
  }
  const newest = files
    .map((f) => path.join(dir, f))
    .sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs)[0];
  if (!newest) return undefined;
  try {
    return readRecordFile(newest);
  } catch {
    return undefined;
  }
}

async function nodeFloor(runs: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await new Promise((resolve) =>
      spawn(process.execPath, ['-e', '1'], { stdio: 'ignore' }).once('exit', resolve),
    );
    times.push((performance.now() - t0) / 1000);
  }
  return times;
}

export const scale: Benchmark = {
  name: 'scale',
  description: `a full update of N VMMs x ${MEMFDS} memfds through luod (emulated kernel) vs the same device calls from one plain script`,
  async run(ctx: BenchContext): Promise<BenchmarkResult> {
    const sizes = (process.env.LUOKIT_BENCH_SCALE_VMS ?? '100,300,1000').split(',').map(Number);
    const measurements: Measurement[] = [];
    const ratios: Ratio[] = [];
    const notes: string[] = [];
    for (const n of sizes) {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), `luokit-bench-scale-${n}-`));
      fs.mkdirSync(path.join(dir, 'r'));
      try {
        const restartOnly = process.env.LUOKIT_BENCH_SCALE_RESTART === 'only';
        let base: { value: Side } | null = null;
        if (!restartOnly) {
          const floorRun = await ctx.phase(`floor, ${n} sessions`, () => floor(dir, n));
          base = floorRun;
          const luod = await ctx.phase(`luod, ${n} VMMs`, () => throughLuod(dir, n, ctx, false));
          const pair = (what: string, key: keyof Side) => {
            const b = measurement(`${n} VMMs: ${what}, floor`, 'baseline', [floorRun.value[key]], null);
            const s = measurement(`${n} VMMs: ${what}, luod`, 'subject', [luod.value[key]], null);
            measurements.push(b, s);
            ratios.push(timeRatio(s, b));
          };
          pair('barrier', 'barrier');
          pair('claim', 'claim');
          pair('CPU s per session', 'cpuPerSession');
          notes.push(
            `${n} VMMs: barrier ${ms(luod.value.barrier)} vs ${ms(floorRun.value.barrier)}, claim ${ms(luod.value.claim)} vs ${ms(floorRun.value.claim)}, ` +
              `CPU per session ${perSession(luod.value)} vs ${perSession(floorRun.value)}`,
          );
        }
        if (n === Math.max(...sizes) && process.env.LUOKIT_BENCH_SCALE_RESTART !== '0') {
          const node = measurement('node -e 1', 'baseline', await nodeFloor(5), null);
          // The claims' device calls without luod: the scale figures' floor, or one of its own.
          base ??= await ctx.phase(`floor, ${n} sessions (for the restart)`, () => floor(dir, n));
          const claimFloor = base.value.claim;
          const again = await ctx
            .phase(`luod restarted with ${n} sessions to hand back`, () =>
              throughLuod(path.join(dir, 'r'), n, ctx, true),
            )
            .catch((err: Error) => {
              // The scale figures above stand on their own: say what failed, keep them.
              ctx.log(`restart FAILED: ${err.stack ?? err.message}`);
              notes.push(`restart with ${n} sessions FAILED: ${err.message}`);
              return null;
            });
          const r = again?.value.restart;
          if (r) {
            const ready = measurement(`${n} sessions: restarted luod ready`, 'subject', [r.ready], null);
            const back = measurement(
              `${n} sessions: ... and every session handed back`,
              'subject',
              [r.handedBack],
              null,
            );
            // A plain script's start and the claims' own device calls, in this run.
            const restartFloor = measurement(
              `${n} sessions: restart floor (node -e 1 + the floor's claim)`,
              'baseline',
              [node.seconds + claimFloor],
              null,
            );
            measurements.push(node, restartFloor, ready, back);
            ratios.push(timeRatio(ready, node), timeRatio(back, node), timeRatio(back, restartFloor));
            notes.push(
              `restart with ${n} sessions: ready ${ms(r.ready)}, every session handed back ${ms(r.handedBack)}, luod CPU ${ms(r.cpu)} ` +
                `(node -e 1: ${ms(node.seconds)}; the floor's claim: ${ms(claimFloor)}; restart floor: ${ms(restartFloor.seconds)})`,
            );
          }
        }
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    }
    notes.push(
      'ratios here are times (lower is better); target at most 2x, and no ratio growing with N (the restart: at most 3x)',
    );
    return {
      name: 'scale',
      description: this.description,
      params: { sizes, memfds: MEMFDS },
      measurements,
      ratios,
      notes,
    };
  },
};

function ms(seconds: number): string {
  return `${Math.round(seconds * 1000)} ms`;
}
