/**
 * A C client written only from docs/protocol.md (test/c-client/luo_client.c)
 * completes the luo-agent flow against luod on the emulated kernel: its
 * ioctls go through the real ioctl(2) and the preload shim
 * (build/native/libluoemu.so) carries them to the emulator.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, type TestContext, test } from 'node:test';
import { LuoClient } from '../src/client/index.js';
import { fstat, ftruncate, memfdCreate, type OwnedFd, pread, pwriteAll } from '../src/sys/index.js';
import { spawnChild } from './support/child.js';
import { type LuodInstance, ROOT, startLuod, waitIdleWith } from './support/luod.js';

const SOURCE = path.join(ROOT, 'test/c-client/luo_client.c');
const SHIM = path.join(ROOT, 'build/native/libluoemu.so');

function compilerMissing(): string | false {
  try {
    execFileSync('cc', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'no C compiler (cc)';
  }
  if (!fs.existsSync(SHIM)) return `the preload shim ${SHIM} is not built (npm run build)`;
  return false;
}

const skip = compilerMissing();

function readAllOf(fd: OwnedFd): Buffer {
  const size = fstat(fd).size;
  return size === 0 ? Buffer.alloc(0) : pread(fd, size, 0);
}

describe('a C client written from docs/protocol.md', { skip }, () => {
  let luod: LuodInstance;
  let admin: LuoClient;
  let buildDir: string;
  let binary: string;

  before(async () => {
    buildDir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-c-client-'));
    binary = path.join(buildDir, 'luo_client');
    // Warnings are errors: the file must build cleanly with any recent compiler.
    execFileSync('cc', ['-std=c11', '-O2', '-Wall', '-Wextra', '-Werror', '-o', binary, SOURCE], {
      stdio: 'pipe',
    });
    luod = await startLuod();
    admin = await LuoClient.connect(luod.socket);
  });
  after(async () => {
    admin?.close();
    await luod?.stop();
    if (buildDir) fs.rmSync(buildDir, { recursive: true, force: true });
  });

  /** A TypeScript client in the same update, so the barrier spans both languages. */
  async function tsPeer(t: TestContext, id: string) {
    const content = randomBytes(65536);
    const mem = memfdCreate(id);
    ftruncate(mem, content.length);
    pwriteAll(mem, content, 0);
    const client = await LuoClient.connect(luod.socket);
    t.after(() => {
      client.close();
      mem.close();
    });
    client.onPreserve((sessions) => sessions[0]!.preserveFd(mem, 1n));
    await client.subscribe(id);
    return {
      async claimAndCheck() {
        const again = await LuoClient.connectWithRetry(luod.socket);
        t.after(() => again.close());
        const [session] = await again.claim(id);
        const file = session!.retrieveFd(1n);
        assert.ok(readAllOf(file).equals(content));
        file.close();
        session!.finish();
        session!.close();
      },
    };
  }

  async function runUpdate(
    t: TestContext,
    launch: () => ReturnType<typeof spawnChild>,
    id: string,
    size: number,
  ) {
    const child = launch();
    t.after(() => {
      child.process.kill('SIGKILL');
    });
    await child.waitLine((l) => l === 'subscribed');
    const peer = await tsPeer(t, `${id}-peer`);
    await waitIdleWith(admin, [id, `${id}-peer`]);
    const outcome = await admin.update({ timeoutMs: 20_000 });
    assert.equal(outcome.outcome, 'rebooted', JSON.stringify(outcome));
    const { code } = await child.exit;
    assert.equal(code, 0, `stdout:\n${child.lines.join('\n')}\nstderr:\n${child.stderr()}`);
    const result = JSON.parse(child.lines.find((l) => l.startsWith('{'))!);
    assert.deepEqual(
      { id: result.id, verified: result.verified, bytes: result.bytes, bad: result.bad_bytes },
      { id, verified: true, bytes: size, bad: 0 },
    );
    // RESUMED: luod recorded the blackout the client measured (resumed_at - paused_at).
    assert.equal(typeof result.blackout_ms, 'number');
    assert.ok(result.blackout_ms >= 0, JSON.stringify(result));
    assert.equal(result.recorded_blackout_ms, result.blackout_ms, JSON.stringify(result));
    await peer.claimAndCheck();
    const status = await admin.status();
    assert.deepEqual(status.pending_claims, []);
  }

  test('SUBSCRIBE, START_PRESERVATION + fd, PRESERVE_FD, READY, KEXEC; reconnect, CLAIM, RETRIEVE_FD, FINISH, RESUMED, verify', async (t) => {
    const size = 4 << 20;
    await runUpdate(
      t,
      () =>
        spawnChild(binary, ['--socket', luod.socket, '--id', 'c-vm', '--size', String(size)], {
          env: { ...process.env, LD_PRELOAD: SHIM, LUOKIT_EMU_STATE: luod.stateDir },
        }),
      'c-vm',
      size,
    );
  });

  test('the same, unmodified, under `luoctl emu exec` and with LUOD_SOCKET', async (t) => {
    const size = 1 << 20;
    await runUpdate(
      t,
      () =>
        spawnChild(
          process.execPath,
          [
            '--import',
            'tsx',
            path.join(ROOT, 'src/cli/luoctl.ts'),
            'emu',
            'exec',
            '--state',
            luod.stateDir,
            '--',
            binary,
            '--id',
            'c-vm-2',
            '--size',
            String(size),
          ],
          { env: { ...process.env, LUOD_SOCKET: luod.socket } },
        ),
      'c-vm-2',
      size,
    );
  });
});
