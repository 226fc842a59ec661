/** Child processes for tests: their output collected, and waited on by line or text. */
import { type ChildProcess, spawn } from 'node:child_process';
import { ROOT } from './luod.js';

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
