/**
 * The LUO scenario suite (test/scenarios/) on luokit's emulated kernel: one
 * test per scenario or stage.
 *
 * - Single-kernel scenarios share one emulator; each scenario closes what it
 *   opened (the device first of all) before the next one starts.
 * - Multi-stage flows share a second emulator: every before-kexec stage, the
 *   emulated kexec, every after-kexec stage, a second kexec, every
 *   after-second-kexec stage. The test process is the "holder": it keeps the
 *   session fds the stages hold open across the emulated kexec.
 * - Scenarios that need what only the LD_PRELOAD shim provides (the frozen
 *   size on every write path, a release seen when close() returns) run in a
 *   Node program under `luoctl emu exec` (test/scenarios/shim-run.ts), as
 *   any unmodified program would; their results join the emulated side of
 *   the parity report. The last test here proves what the emulator does for
 *   a program not under the shim (it fails the kexec).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, type TestContext, test } from 'node:test';
import { startEmulator } from '../src/kernel/emu/index.js';
import { ftruncate, memfdCreate, pwriteAll } from '../src/sys/index.js';
import { outcomeText } from './scenarios/context.js';
import { type EmulatorHost, emulatorHost } from './scenarios/hosts.js';
import { runScenario, STAGES, selectScenarios } from './scenarios/index.js';
import {
  type Capabilities,
  type EmulatorLike,
  type Scenario,
  type ScenarioResult,
  STAGE_BOOT,
} from './scenarios/types.js';

const ROOT = new URL('..', import.meta.url).pathname;

/** What only the preload shim provides: such scenarios run in a program under it. */
const SHIM_CAPABILITIES: readonly (keyof Capabilities)[] = [
  'sizeFreezeEnforced',
  'closeReleasesSynchronously',
];
const needsShim = (scenario: Scenario) =>
  (scenario.requires ?? []).some((capability) => SHIM_CAPABILITIES.includes(capability));

/** Every result of this run; written as JSON to $LUOKIT_SCENARIO_RESULTS when set (the emulator's side of a parity report). */
const allResults: ScenarioResult[] = [];
after(() => {
  const out = process.env.LUOKIT_SCENARIO_RESULTS;
  if (out)
    fs.writeFileSync(out, `${JSON.stringify({ backend: 'emulated', results: allResults }, null, 2)}\n`);
});

function newStateDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-scn-'));
}

async function emulator(): Promise<{ emu: EmulatorLike; dir: string }> {
  const dir = newStateDir();
  try {
    const emu: EmulatorLike = await startEmulator({ stateDir: dir });
    return { emu, dir };
  } catch (err) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

async function shutdown(running: { emu: EmulatorLike; dir: string } | undefined): Promise<void> {
  if (!running) return;
  try {
    await running.emu.stop();
  } finally {
    fs.rmSync(running.dir, { recursive: true, force: true });
  }
}

/** Turn a result into the test's outcome: pass, skip ('infra', with the reason), or a failure listing the steps. */
function report(t: TestContext, result: ScenarioResult): void {
  allResults.push(result);
  if (result.status === 'pass') return;
  if (result.status === 'infra') {
    t.skip(`infra: ${result.error}`);
    return;
  }
  const steps = result.steps.map((s) => `  ${s.step}: ${outcomeText(s.outcome)}`).join('\n');
  assert.fail(`${result.id}: ${result.rule}\n${result.error}\nsteps:\n${steps}`);
}

describe('LUO scenarios in one kernel (emulated)', () => {
  let running: { emu: EmulatorLike; dir: string } | undefined;
  let host: EmulatorHost;
  before(async () => {
    running = await emulator();
    host = emulatorHost(running.emu);
  });
  after(() => shutdown(running));

  for (const scenario of selectScenarios({ stages: ['single'] }).filter((s) => !needsShim(s))) {
    test(scenario.id, async (t) => report(t, await runScenario(host, scenario)));
  }
});

describe('LUO scenarios in one kernel (emulated), as a Node program under the preload shim', () => {
  const shimmed = selectScenarios({ stages: ['single'] }).filter(needsShim);
  let results: Promise<ScenarioResult[]>;
  let dir = '';
  before(() => {
    execFileSync(path.join(ROOT, 'scripts/build-native.sh'), { stdio: ['ignore', 'ignore', 'inherit'] });
    dir = newStateDir();
    results = runUnderShim(
      dir,
      shimmed.map((s) => s.id),
    );
  });
  after(async () => {
    await results.catch(() => {});
    await new Promise<void>((resolve) => {
      const stop = spawn(
        process.execPath,
        ['--import', 'tsx', 'src/cli/luoctl.ts', 'emu', 'stop', '--state', dir],
        {
          cwd: ROOT,
          stdio: 'ignore',
        },
      );
      stop.on('close', () => resolve());
    });
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('the shimmed scenarios exist', () => {
    assert.ok(shimmed.length >= 3, shimmed.map((s) => s.id).join(', '));
  });
  for (const scenario of shimmed) {
    test(scenario.id, async (t) => {
      const result = (await results).find((r) => r.id === scenario.id);
      assert.ok(result, `${scenario.id} did not run under the shim`);
      report(t, result);
    });
  }
});

/** `luoctl emu exec --state DIR -- node --import tsx test/scenarios/shim-run.ts IDS...`: its results. */
function runUnderShim(dir: string, ids: string[]): Promise<ScenarioResult[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        'src/cli/luoctl.ts',
        'emu',
        'exec',
        '--state',
        dir,
        '--',
        process.execPath,
        '--import',
        'tsx',
        'test/scenarios/shim-run.ts',
        ...ids,
      ],
      { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 240_000);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (status !== 0 || line === undefined) {
        reject(new Error(`shim-run exited ${status}:\n${out}\n${err}`));
        return;
      }
      resolve((JSON.parse(line) as { results: ScenarioResult[] }).results);
    });
  });
}

describe('LUO scenarios across kexec (emulated)', () => {
  let running: { emu: EmulatorLike; dir: string } | undefined;
  let host: EmulatorHost;
  const results: ScenarioResult[] = [];
  let kexecFailed = false;
  before(async () => {
    running = await emulator();
    host = emulatorHost(running.emu);
  });
  after(() => shutdown(running));

  const staged = STAGES.filter((stage) => stage !== 'single');
  for (const stage of staged) {
    const boot = STAGE_BOOT[stage];
    if (boot > 0) {
      test(`emulated kexec into boot ${boot}`, async () => {
        try {
          await host.kexec();
        } catch (err) {
          kexecFailed = true;
          throw err;
        }
      });
    }
    for (const scenario of selectScenarios({ stages: [stage] })) {
      test(scenario.id, async (t) => {
        if (kexecFailed && boot > 0) {
          t.skip('an emulated kexec before this stage failed');
          return;
        }
        const result = await runScenario(host, scenario, results);
        results.push(result);
        report(t, result);
      });
    }
  }
});

describe('emulated kernel only', () => {
  let running: { emu: EmulatorLike; dir: string } | undefined;
  before(async () => {
    running = await emulator();
  });
  after(() => shutdown(running));

  test('a preserved memfd resized behind its back fails the emulated kexec with EPERM; sessions stay usable', async () => {
    const emu = running!.emu;
    const device = emu.openDevice();
    const session = device.createSession('resized-behind-its-back');
    device.close();
    const file = memfdCreate('guest');
    pwriteAll(file, Buffer.alloc(8192, 0x42), 0);
    session.preserveFd(file, 1n);
    // The documented difference: TypeScript code is not under the shim, so this succeeds here
    // (the real kernel says EPERM; see scenario preserve/size-frozen).
    ftruncate(file, 16384);
    await assert.rejects(emu.kexec(), { code: 'EPERM' });
    assert.equal(session.getName(), 'resized-behind-its-back', 'the session is still usable');
    session.close();
    file.close();
  });
});
