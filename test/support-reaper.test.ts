/**
 * The reaper (test/support/reaper.ts): a test file killed by --test-timeout must not leave
 * its hosts' detached processes running.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { ROOT } from './support/luod.js';
import { waitUntil } from './support/wait.js';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('SIGTERM to a test process kills the detached processes of its registered directories, and only those', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-reaper-'));
  const other = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-reaper-other-'));
  const sleeper = (where: string) =>
    `spawn(process.execPath, ['-e', 'setTimeout(() => {}, 300000)', ${JSON.stringify(where)}], { detached: true, stdio: 'ignore' }).pid`;
  // Like the emulated kernel: its command line does not name the directory, its log file does.
  const renamed = (where: string) =>
    `spawn(process.execPath, ['-e', 'setTimeout(() => {}, 300000)'], { detached: true, stdio: ['ignore', openSync(${JSON.stringify(`${where}/log`)}, 'a'), 'ignore'] }).pid`;
  const script = `
    import { spawn } from 'node:child_process';
    import { openSync } from 'node:fs';
    import { reapOnExit } from ${JSON.stringify(path.join(ROOT, 'test/support/reaper.ts'))};
    reapOnExit(${JSON.stringify(dir)});
    console.log(JSON.stringify({ mine: ${sleeper(dir)}, logging: ${renamed(dir)}, other: ${sleeper(other)} }));
    setInterval(() => {}, 1000);
  `;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (chunk) => {
    out += chunk;
  });
  await waitUntil(() => out.includes('\n'), 'the test process started its sleepers', 60_000);
  const {
    mine,
    logging,
    other: unrelated,
  } = JSON.parse(out) as { mine: number; logging: number; other: number };
  try {
    assert.ok(alive(mine) && alive(logging) && alive(unrelated));
    child.kill('SIGTERM');
    const code = await new Promise((resolve) => child.once('exit', (c) => resolve(c)));
    assert.equal(code, 143);
    await waitUntil(() => !alive(mine), 'the registered directory’s process is killed', 10_000);
    await waitUntil(() => !alive(logging), 'the process with a file open there is killed too', 10_000);
    assert.ok(alive(unrelated), 'a process of another directory is left alone');
  } finally {
    for (const pid of [mine, logging, unrelated]) if (alive(pid)) process.kill(pid, 'SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(other, { recursive: true, force: true });
  }
});
