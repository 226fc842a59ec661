/**
 * Start-up of luokit's commands against `node -e 1`, the floor of any Node
 * program, measured interleaved in the same run (issue #15, goals 1 and 2;
 * docs/performance.md):
 *
 *  - luod ready: exec of the `luod` bin (its bundle, src/sys/bundle-runner.cts)
 *    to its listening socket existing, nothing to restore, the emulated
 *    kernel already running (as on a host: the kernel is there before luod).
 *    Target: at most 1.5x node -e 1.
 *  - luoctl --version, and luoctl status against a running luod: exec to
 *    exit. Target: at most 1.5x node -e 1 plus the command's own work.
 *    status is also compared with that floor measured as such: `node -e`
 *    of a few lines that connect to the same luod, send STATUS, read the
 *    reply line and exit (Node's start plus the round trip, nothing else).
 *  - the same with LUOKIT_NO_BUNDLE=1 (every module loaded one by one, as
 *    before the bundles), shown for comparison, not compared.
 *
 * Ratios here are times (lower is better). Runs: LUOKIT_BENCH_STARTUP_RUNS
 * (default 15), interleaved so that the machine's load hits every side alike.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startEmulator } from '../src/kernel/emu/index.js';
import {
  type BenchContext,
  type Benchmark,
  type BenchmarkResult,
  envNumber,
  type Measurement,
  measurement,
  packageBin,
  timeRatio,
} from './lib.js';

const LUOD = packageBin('luod');
const LUOCTL = packageBin('luoctl');

/**
 * The floor of `luoctl status`: Node's start plus one STATUS round trip to
 * luod, with node:net and no parsing beyond finding the reply's end.
 */
const STATUS_ROUND_TRIP = `
const s = require('node:net').connect(process.env.LUOD_SOCKET);
s.on('connect', () => s.write(${JSON.stringify(`${JSON.stringify({ cmd: 'STATUS' })}\n`)}));
let text = '';
s.on('data', (c) => {
  text += c;
  if (text.includes('\\n')) {
    process.stdout.write(text);
    s.destroy();
  }
});`;

/** Seconds from spawn to exit (status 0 or `allowed`). */
function timeExit(args: string[], env: NodeJS.ProcessEnv, allowed: number[] = [0]): Promise<number> {
  const t0 = process.hrtime.bigint();
  const child = spawn(process.execPath, args, { env, stdio: 'ignore' });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => {
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      if (allowed.includes(code ?? -1)) resolve(seconds);
      else reject(new Error(`${args.join(' ')} exited ${code}`));
    });
  });
}

/** Seconds from spawn to `socket` existing (inotify on its directory, no polling); luod is then stopped. */
async function timeLuodReady(
  args: string[],
  socket: string,
  env: NodeJS.ProcessEnv,
): Promise<{ seconds: number; child: ChildProcess }> {
  const dir = path.dirname(socket);
  const name = path.basename(socket);
  let watcher: fs.FSWatcher | undefined;
  const appeared = new Promise<bigint>((resolve) => {
    watcher = fs.watch(dir, (_event, file) => {
      if (file === name && fs.existsSync(socket)) resolve(process.hrtime.bigint());
    });
  });
  const t0 = process.hrtime.bigint();
  const child = spawn(process.execPath, [LUOD, ...args, '--socket', socket], { env, stdio: 'ignore' });
  const failed = new Promise<never>((_, reject) =>
    child.once('exit', (code) => reject(new Error(`luod exited ${code} before listening`))),
  );
  const timeout = new Promise<never>((_, reject) =>
    setTimeout(() => reject(new Error('luod did not listen within 30 s')), 30_000).unref(),
  );
  try {
    const t1 = await Promise.race([appeared, failed, timeout]);
    return { seconds: Number(t1 - t0) / 1e9, child };
  } finally {
    watcher?.close();
  }
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await exited;
}

export const startup: Benchmark = {
  name: 'startup',
  description:
    'luod ready and luoctl commands, exec to listening / to exit, vs node -e 1 (same run, interleaved)',
  async run(ctx: BenchContext): Promise<BenchmarkResult> {
    const runs = Math.round(envNumber('LUOKIT_BENCH_STARTUP_RUNS', 15));
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-bench-startup-'));
    const state = path.join(dir, 'emu');
    const emulator = await startEmulator({ stateDir: state });
    const env = { ...process.env, LUOKIT_LOG_LEVEL: 'warn' };
    const plain = { ...env, LUOKIT_NO_BUNDLE: '1' };
    const luodArgs = ['--emulate', '--state', state];
    // One luod that stays up, for luoctl status; each timed luod gets its own socket.
    const served = path.join(dir, 'served.sock');
    const { child: serving } = await timeLuodReady(luodArgs, served, env);
    const withSocket = { ...env, LUOD_SOCKET: served };
    const sides: Record<string, number[]> = {
      node: [],
      luod: [],
      luodPlain: [],
      version: [],
      versionPlain: [],
      status: [],
      statusPlain: [],
      roundTrip: [],
    };
    try {
      for (let i = 0; i < runs; i++) {
        sides.node!.push(await timeExit(['-e', '1'], env));
        for (const [key, e] of [
          ['luod', env],
          ['luodPlain', plain],
        ] as const) {
          const socket = path.join(dir, `l${i}-${key}.sock`);
          const { seconds, child } = await timeLuodReady(luodArgs, socket, e);
          sides[key]!.push(seconds);
          await stop(child);
        }
        sides.version!.push(await timeExit([LUOCTL, '--version'], env));
        sides.versionPlain!.push(await timeExit([LUOCTL, '--version'], plain));
        sides.roundTrip!.push(await timeExit(['-e', STATUS_ROUND_TRIP], withSocket));
        sides.status!.push(await timeExit([LUOCTL, 'status'], withSocket));
        sides.statusPlain!.push(await timeExit([LUOCTL, 'status'], { ...plain, LUOD_SOCKET: served }));
        ctx.log(
          `run ${i + 1}/${runs}: node ${ms(sides.node!)} luod ${ms(sides.luod!)} (plain ${ms(sides.luodPlain!)}) ` +
            `--version ${ms(sides.version!)} status ${ms(sides.status!)}`,
        );
      }
    } finally {
      await stop(serving);
      await emulator.stop().catch(() => {});
      fs.rmSync(dir, { recursive: true, force: true });
    }
    const node = measurement('node -e 1', 'baseline', sides.node!, null);
    const m = (name: string, key: string, role: Measurement['role']) =>
      measurement(name, role, sides[key]!, null);
    const luod = m('luod ready (bundle)', 'luod', 'subject');
    const version = m('luoctl --version (bundle)', 'version', 'subject');
    const status = m('luoctl status (bundle)', 'status', 'subject');
    const luodPlain = m('luod ready (modules, no bundle)', 'luodPlain', 'subject');
    const versionPlain = m('luoctl --version (modules)', 'versionPlain', 'subject');
    const statusPlain = m('luoctl status (modules)', 'statusPlain', 'subject');
    const roundTrip = m('node -e: STATUS round trip (node:net)', 'roundTrip', 'baseline');
    return {
      name: 'startup',
      description: this.description,
      params: { runs },
      measurements: [node, roundTrip, luod, version, status, luodPlain, versionPlain, statusPlain],
      ratios: [
        ...[luod, version, status, luodPlain, versionPlain, statusPlain].map((s) => timeRatio(s, node)),
        timeRatio(status, roundTrip),
      ],
      notes: [
        'ratios here are times (lower is better); targets: luod ready and luoctl --version at most 1.5x node -e 1, status 1.5x node -e 1 plus its round trip to luod (the last ratio: status against node doing that round trip)',
        'the "modules" rows are the same bins with LUOKIT_NO_BUNDLE=1: every module loaded one by one, as before the bundles',
      ],
    };
  },
};

function ms(values: number[]): string {
  return `${Math.round(values.at(-1)! * 1000)} ms`;
}
