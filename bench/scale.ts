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
 * Ratios here are times (lower is better).
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { LuoClient } from '../src/client/index.js';
import { startEmulator } from '../src/kernel/emu/index.js';
import type { Session } from '../src/kernel/index.js';
import { ftruncate, memfdCreate, type OwnedFd } from '../src/sys/index.js';
import {
  type BenchContext,
  type Benchmark,
  type BenchmarkResult,
  type Measurement,
  measurement,
  type Ratio,
  timeRatio,
} from './lib.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const bins = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).bin as Record<
  string,
  string
>;
const LUOD = path.join(ROOT, bins.luod!);
const MEMFDS = 4;
/** Connections per client process. */
const PER_PROCESS = 250;
/** USER_HZ: /proc/PID/stat counts CPU time in 1/100 s on Linux. */
const TICKS = 100;

interface Side {
  barrier: number;
  claim: number;
  cpuPerSession: number;
}

function cpuSeconds(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICKS; // utime, stime
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
    return { barrier, claim, cpuPerSession: cpu / n };
  } finally {
    await emulator.stop().catch(() => {});
  }
}

async function throughLuod(dir: string, n: number, ctx: BenchContext): Promise<Side> {
  const state = path.join(dir, 'luod-emu');
  const socket = path.join(dir, 'luod.sock');
  const timeline = path.join(dir, 'timeline.jsonl');
  const emulator = await startEmulator({ stateDir: state });
  const luod = spawn(
    process.execPath,
    [
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
      '--timeline',
      timeline,
      '--records',
      path.join(dir, 'records'),
    ],
    { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, LUOKIT_LOG_LEVEL: 'warn' } },
  );
  const clients: ReturnType<typeof spawn>[] = [];
  try {
    (await LuoClient.connectWithRetry(socket, { timeoutMs: 30_000 })).close();
    const lines = (child: ReturnType<typeof spawn>, word: string) =>
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
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      clients.push(child);
      subscribed.push(lines(child, 'subscribed'));
      claimed.push(lines(child, 'claimed'));
    }
    await Promise.all(subscribed);
    ctx.log(`${n} VMMs subscribed`);
    const cpu0 = cpuSeconds(luod.pid!);
    const admin = await LuoClient.connect(socket);
    await admin.update({ timeoutMs: 600_000 }).catch(() => {}); // the connection drops at the kexec
    admin.close();
    await Promise.all(claimed);
    const marks = () =>
      fs
        .readFileSync(timeline, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { luod_phase: string; at: number });
    const at = (phase: string) => {
      const m = marks().findLast((x) => x.luod_phase === phase);
      if (!m) throw new Error(`no ${phase} mark in luod's timeline`);
      return m.at;
    };
    for (let i = 0; i < 100 && !marks().some((m) => m.luod_phase === 'all-claimed'); i++)
      await new Promise((r) => setTimeout(r, 50));
    const cpu = cpuSeconds(luod.pid!) - cpu0;
    return {
      barrier: (at('barrier-done') - at('update-start')) / 1000,
      claim: (at('all-claimed') - at('luod-ready')) / 1000,
      cpuPerSession: cpu / n,
    };
  } finally {
    for (const c of clients) c.kill('SIGKILL');
    luod.kill('SIGTERM');
    await emulator.stop().catch(() => {});
  }
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
      try {
        const base = await ctx.phase(`floor, ${n} sessions`, () => floor(dir, n));
        const luod = await ctx.phase(`luod, ${n} VMMs`, () => throughLuod(dir, n, ctx));
        const pair = (what: string, key: keyof Side) => {
          const b = measurement(`${n} VMMs: ${what}, floor`, 'baseline', [base.value[key]], null);
          const s = measurement(`${n} VMMs: ${what}, luod`, 'subject', [luod.value[key]], null);
          measurements.push(b, s);
          ratios.push(timeRatio(s, b));
        };
        pair('barrier', 'barrier');
        pair('claim', 'claim');
        pair('CPU s per session', 'cpuPerSession');
        notes.push(
          `${n} VMMs: barrier ${ms(luod.value.barrier)} vs ${ms(base.value.barrier)}, claim ${ms(luod.value.claim)} vs ${ms(base.value.claim)}, ` +
            `CPU per session ${(luod.value.cpuPerSession * 1e3).toFixed(2)} vs ${(base.value.cpuPerSession * 1e3).toFixed(2)} ms`,
        );
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    }
    notes.push('ratios here are times (lower is better); target at most 2x, and no ratio growing with N');
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
