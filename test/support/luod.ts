/**
 * A real luod on the emulated kernel, for any test that needs one (the client
 * tests, observability): each instance has its own socket and emulator
 * state directory under a fresh temporary directory, and stop() takes all
 * of it down (luod, then the emulator luod started, then the directory).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { LuoClient } from '../../src/client/index.js';
import { statePaths, stopEmulator } from '../../src/kernel/emu/index.js';
import { reapOnExit } from './reaper.js';
import { waitUntil } from './wait.js';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface LuodInstance {
  readonly dir: string;
  readonly socket: string;
  readonly stateDir: string;
  readonly child: ChildProcess;
  /** luod's output so far (pino JSON lines). */
  log(): string;
  stop(): Promise<void>;
}

export interface StartLuodOptions {
  claimTimeoutS?: number;
  /** Group allowed to connect (luod --group), e.g. 65534 for a client running as nobody. */
  group?: number;
  /** More luod options (e.g. --metrics-port 0). */
  args?: string[];
}

export async function startLuod(options: StartLuodOptions = {}): Promise<LuodInstance> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-client-'));
  reapOnExit(dir); // a file killed by --test-timeout leaves no luod, holder or emulator behind
  fs.chmodSync(dir, 0o755); // a client running as another uid must reach the socket
  const socket = path.join(dir, 'luod.sock');
  const stateDir = path.join(dir, 'emu');
  const args = [
    '--import',
    'tsx',
    path.join(ROOT, 'src/daemon/main.ts'),
    '--socket',
    socket,
    '--emulate',
    '--state',
    stateDir,
    ...(options.claimTimeoutS !== undefined ? ['--claim-timeout', String(options.claimTimeoutS)] : []),
    ...(options.group !== undefined ? ['--group', String(options.group)] : []),
    ...(options.args ?? []),
  ];
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    output += d;
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    output += d;
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    try {
      await stopEmulator(statePaths(stateDir));
    } catch {
      // never started, or already gone
    }
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    const probe = await Promise.race([
      LuoClient.connectWithRetry(socket, { hello: true, timeoutMs: 30_000, intervalMs: 50 }),
      exited.then(() => {
        throw new Error(`luod exited during startup:\n${output}`);
      }),
    ]);
    probe.close();
  } catch (err) {
    await stop();
    throw err;
  }
  return { dir, socket, stateDir, child, log: () => output, stop };
}

/** Wait until luod's subscribers are exactly `ids` and it is idle (ready for an update). */
export async function waitIdleWith(admin: LuoClient, ids: readonly string[]): Promise<void> {
  const want = [...ids].sort().join(',');
  await waitUntil(async () => {
    const status = await admin.status();
    const subscribers = ((status.subscribers as string[]) ?? []).slice().sort().join(',');
    return status.phase === 'idle' && subscribers === want;
  }, `luod idle with subscribers [${want}]`);
}
