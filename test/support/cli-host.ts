/**
 * A test file's luod on the emulated kernel, run from the package's bins as an operator
 * runs it (the bundles, LUOD_SOCKET), and luoctl run against it: started before the
 * file's tests, stopped after them, reaped if the file is killed.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, type SpawnSyncReturns, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before } from 'node:test';
import { LuoClient } from '../../src/client/index.js';
import { statePaths, stopEmulator } from '../../src/kernel/emu/index.js';
import { ROOT } from './luod.js';
import { reapOnExit } from './reaper.js';

export interface CliHost {
  readonly dir: string;
  readonly socket: string;
  /** The emulated kernel's state directory. */
  readonly state: string;
  /** `luoctl ARGS` through LUOD_SOCKET; asserts that no stack trace reached the user. */
  luoctl(...args: string[]): SpawnSyncReturns<string>;
}

export function cliHost(prefix: string, extraLuodArgs: (dir: string) => string[] = () => []): CliHost {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  reapOnExit(dir);
  const socket = path.join(dir, 'luod.sock');
  const state = path.join(dir, 'emu');
  const env = { ...process.env, LUOD_SOCKET: socket };
  let luod: ChildProcess | undefined;
  before(async () => {
    luod = spawn(
      process.execPath,
      [path.join(ROOT, 'dist/daemon/luod-bin.cjs'), '--emulate', '--state', state, ...extraLuodArgs(dir)],
      { stdio: ['ignore', 'ignore', 'inherit'], env },
    );
    (await LuoClient.connectWithRetry(socket, { timeoutMs: 20_000 })).close();
  });
  after(async () => {
    luod?.kill('SIGTERM');
    await stopEmulator(statePaths(state)).catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return {
    dir,
    socket,
    state,
    luoctl(...args: string[]) {
      const run = spawnSync(process.execPath, [path.join(ROOT, 'dist/cli/luoctl-bin.cjs'), ...args], {
        encoding: 'utf8',
        env,
      });
      assert.equal(run.stderr.includes('    at '), false, `no stack trace:\n${run.stderr}`);
      return run;
    },
  };
}
