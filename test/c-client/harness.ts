/**
 * A real luod on the emulated kernel, for the client tests (test/client.test.ts,
 * test/c-client.test.ts): each instance has its own socket and emulator
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

/** A child process whose stdout lines and stderr are collected. */
export interface Child {
  readonly process: ChildProcess;
  readonly lines: string[];
  stderr(): string;
  /** Resolves with the first stdout line (seen or to come) that matches. */
  waitLine(match: (line: string) => boolean, timeoutMs?: number): Promise<string>;
  /** Resolves when stderr has contained `text`. */
  waitStderr(text: string, timeoutMs?: number): Promise<void>;
  readonly exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function spawnChild(
  command: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; uid?: number; gid?: number; cwd?: string } = {},
): Child {
  const child = spawn(command, args, {
    cwd: options.cwd ?? ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: options.env ?? process.env,
    ...(options.uid !== undefined && { uid: options.uid }),
    ...(options.gid !== undefined && { gid: options.gid }),
  });
  const lines: string[] = [];
  let partial = '';
  let err = '';
  const waiters = new Set<() => void>();
  const wake = () => {
    for (const w of [...waiters]) w();
  };
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    partial += d;
    const parts = partial.split('\n');
    partial = parts.pop()!;
    lines.push(...parts);
    wake();
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    err += d;
    wake();
  });
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      resolve({ code, signal });
      setImmediate(wake);
    }),
  );
  const waitFor = <T>(check: () => T | undefined, what: string, timeoutMs: number) =>
    new Promise<T>((resolve, reject) => {
      const attempt = () => {
        const found = check();
        if (found !== undefined) {
          cleanup();
          resolve(found);
        } else if (child.exitCode !== null || child.signalCode !== null) {
          cleanup();
          reject(new Error(`${what}: the child exited first\nstdout:\n${lines.join('\n')}\nstderr:\n${err}`));
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(
          new Error(`${what}: not within ${timeoutMs} ms\nstdout:\n${lines.join('\n')}\nstderr:\n${err}`),
        );
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        waiters.delete(attempt);
      };
      waiters.add(attempt);
      attempt();
    });
  return {
    process: child,
    lines,
    stderr: () => err,
    waitLine: (match, timeoutMs = 30_000) =>
      waitFor(() => lines.find(match), 'waiting for a line', timeoutMs),
    waitStderr: async (text, timeoutMs = 30_000) => {
      await waitFor(
        () => (err.includes(text) ? true : undefined),
        `waiting for ${JSON.stringify(text)}`,
        timeoutMs,
      );
    },
    exit,
  };
}

/** Poll until `check` returns something other than undefined/false. */
export async function waitUntil<T>(
  check: () => Promise<T> | T,
  what: string,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(`${what}: not within ${timeoutMs} ms${last ? ` (${String(last)})` : ''}`);
    await new Promise((r) => setTimeout(r, 25));
  }
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
