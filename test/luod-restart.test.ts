/**
 * luod restarted between two live updates (killed, as a crash would): the
 * stale socket is replaced, the emulated kernel it left keeps running, and
 * the next update works as the first did.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { LuoClient } from '../src/client/index.js';
import { stopEmulator } from '../src/kernel/emu/index.js';
import { statePaths } from '../src/kernel/emu/paths.js';
import { fstat, memfdCreate, pread, pwriteAll } from '../src/sys/index.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-restart-'));
const socket = path.join(dir, 'luod.sock');
const state = path.join(dir, 'emu');
let luod: ChildProcess | null = null;

after(async () => {
  luod?.kill('SIGKILL');
  await stopEmulator(statePaths(state)).catch(() => {});
  fs.rmSync(dir, { recursive: true, force: true });
});

async function startLuod(): Promise<void> {
  luod = spawn(process.execPath, ['dist/daemon/main.js', '--socket', socket, '--emulate', '--state', state], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const admin = await LuoClient.connectWithRetry(socket, { timeoutMs: 20_000 });
  admin.close();
}

/** One live update of one client with `content` in its memfd; returns what it claimed back. */
async function liveUpdate(id: string, content: Buffer): Promise<Buffer> {
  const vm = await LuoClient.connect(socket);
  using ram = memfdCreate(id);
  pwriteAll(ram, content, 0);
  vm.onPreserve((sessions) => sessions[0]!.preserveFd(ram, 1n));
  await vm.subscribe(id);
  const admin = await LuoClient.connect(socket);
  const outcome = await admin.update({ timeoutMs: 10_000 });
  admin.close();
  assert.equal(outcome.outcome, 'rebooted', JSON.stringify(outcome));
  vm.close();
  const again = await LuoClient.connectWithRetry(socket, { timeoutMs: 10_000 });
  const [session] = await again.claim(id);
  using file = session!.retrieveFd(1n);
  const back = pread(file, fstat(file).size, 0);
  session!.finish();
  session!.close();
  again.close();
  return back;
}

test('an update, luod killed, luod started again, another update', async () => {
  assert.ok(fs.existsSync('dist/daemon/main.js'), 'run npm run build first');
  await startLuod();
  const first = Buffer.from('first update: guest memory');
  assert.ok((await liveUpdate('vm-a', first)).equals(first));
  luod!.kill('SIGKILL');
  await new Promise((resolve) => luod!.once('exit', resolve));
  assert.ok(fs.existsSync(socket), 'a killed luod leaves its socket behind');
  await startLuod();
  const second = Buffer.alloc(1 << 20, 0x5a);
  assert.ok((await liveUpdate('vm-b', second)).equals(second));
});
