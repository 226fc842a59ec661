/**
 * The real-kernel bench's C VMM (test/vm/vmm/luo_vmm.c) through a whole live update
 * against luod on the emulated kernel, as the bench runs it on the real one: a first
 * process fills its RAM with luokit's data pattern, preserves it and its device state,
 * says READY and ends at the KEXEC; a second one, started with --claim, claims, resumes,
 * reports RESUMED and verifies every byte after the resume. Its ioctls go through the
 * real ioctl(2) and the preload shim (build/native/libluoemu.so).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { LuoClient } from '../../src/client/index.js';
import { type Child, spawnChild } from '../support/child.js';
import { type LuodInstance, ROOT, startLuod, waitIdleWith } from '../support/luod.js';

const SOURCE = path.join(ROOT, 'test/vm/vmm/luo_vmm.c');
const SHIM = path.join(ROOT, 'build/native/libluoemu.so');
const MEM = 4 << 20;

function compilerMissing(): string | false {
  try {
    execFileSync('cc', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'no C compiler (cc)';
  }
  if (!fs.existsSync(SHIM)) return `the preload shim ${SHIM} is not built (npm run build)`;
  return false;
}

describe("the bench's C VMM across a live update (emulated kernel)", { skip: compilerMissing() }, () => {
  let luod: LuodInstance;
  let admin: LuoClient;
  let dir: string;
  let binary: string;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-luo-vmm-'));
    binary = path.join(dir, 'luo_vmm');
    // Dynamically linked here (the preload shim needs it); the bench links it static.
    execFileSync('cc', ['-std=c11', '-O2', '-Wall', '-Wextra', '-Werror', '-o', binary, SOURCE], {
      stdio: 'pipe',
    });
    luod = await startLuod();
    admin = await LuoClient.connect(luod.socket);
  });
  after(async () => {
    admin?.close();
    await luod?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const vmm = (args: string[]): Child =>
    spawnChild(binary, ['--socket', luod.socket, '--tick-ms', '5', '--pages-per-tick', '4', ...args], {
      env: { ...process.env, LD_PRELOAD: SHIM, LUOKIT_EMU_STATE: luod.stateDir },
    });

  /** Boot 0's VMM through the update up to its KEXEC; returns the timeline file. */
  async function preserved(id: string): Promise<string> {
    const timeline = path.join(dir, `${id}.timeline`);
    const first = vmm([
      '--id',
      id,
      '--mem',
      String(MEM),
      '--fill',
      '--verify',
      'pattern',
      '--timeline',
      timeline,
    ]);
    try {
      await first.waitStderr('"msg":"subscribed"', 60_000);
      await waitIdleWith(admin, [id]);
      const outcome = await admin.update({ timeoutMs: 30_000 });
      assert.equal(outcome.outcome, 'rebooted', JSON.stringify(outcome));
      const { code } = await first.exit;
      assert.equal(code, 0, first.stderr());
      assert.match(first.stderr(), /"msg":"paused and preserved"/);
      return timeline;
    } finally {
      first.process.kill('SIGKILL');
    }
  }

  test('fill, preserve, READY, KEXEC; then --claim: CLAIM, FINISH, resume, RESUMED, every byte verified after', async () => {
    const timeline = await preserved('c-vm-1');
    const second = vmm(['--id', 'c-vm-1', '--mem', String(MEM), '--claim', '--timeline', timeline]);
    const { code } = await second.exit;
    assert.equal(code, 0, second.stderr());
    const result = JSON.parse(second.lines.find((l) => l.startsWith('{'))!);
    assert.equal(result.id, 'c-vm-1');
    assert.equal(result.verified, true, JSON.stringify(result));
    assert.equal(result.bytes, MEM);
    assert.equal(result.verify, 'pattern');
    assert.ok(result.generation > 0, 'the vCPU ran before the pause');
    assert.equal(typeof result.verify_ms, 'number');
    // luod recorded the blackout this VMM measured (RESUMED: resumed_at - paused_at).
    assert.ok(result.blackout_ms >= 0);
    assert.equal(result.recorded_blackout_ms, result.blackout_ms, JSON.stringify(result));
    // The two moments of the blackout, on the timeline, in order, for the same update.
    const marks = fs
      .readFileSync(timeline, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.deepEqual(
      marks.map((m) => [m.vmm_phase, m.id, m.update]),
      [
        ['paused', 'c-vm-1', result.update],
        ['resumed', 'c-vm-1', result.update],
      ],
    );
    assert.ok(marks[1].at >= marks[0].at);
    const status = await admin.status();
    assert.deepEqual(status.pending_claims, []);
  });

  test('a VMM of another size refuses the RAM before resuming, and says so in an unverified verdict', async () => {
    await preserved('c-vm-2');
    const second = vmm(['--id', 'c-vm-2', '--mem', String(2 * MEM), '--claim']);
    const { code } = await second.exit;
    assert.equal(code, 1);
    const result = JSON.parse(second.lines.find((l) => l.startsWith('{'))!);
    assert.equal(result.verified, false);
    assert.match(result.error, /RAM is 4194304 bytes/);
  });
});
