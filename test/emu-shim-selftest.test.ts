/**
 * The kernel's own LUO selftest (tools/testing/selftests/liveupdate/liveupdate.c
 * from Debian's linux-source-7.2), unmodified and dynamically linked, run
 * against luokit's emulated kernel through the preload shim: all 15 tests
 * must pass, none skipped. Then the four kexec selftests (luo_kexec_simple,
 * luo_multi_session, luo_stress_sessions, luo_stress_files): stage 1, an
 * emulated kexec (`luoctl emu kexec`), stage 2.
 *
 * Builds the shim (scripts/build-native.sh) and the selftest
 * (scripts/build-selftests.sh, which fetches the kernel source into
 * ~/.cache/luokit on first use), then drives `luoctl emu` from the sources.
 * Needs gcc, make and perl; the first run also needs the network.
 */
import assert from 'node:assert/strict';
import { execFileSync, type SpawnSyncReturns, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const projectRoot = fileURLToPath(new URL('..', import.meta.url));
const SHIM = path.join(projectRoot, 'build/native/libluoemu.so');
const EXPECTED_TESTS = 15;

/** `luoctl` from the sources, so the test needs no `npm run build`. */
function luoctl(...args: string[]): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/luoctl.ts', ...args], {
    cwd: projectRoot,
    encoding: 'utf8',
    env: { ...process.env, LUOKIT_DEBUG: '' },
    timeout: 120_000,
  });
}

interface TapResult {
  plan: number | null;
  passed: string[];
  skipped: string[];
  failed: string[];
  /** The kselftest summary, e.g. "pass:15 fail:0 xfail:0 xpass:0 skip:0 error:0". */
  totals: string | null;
}

/** Parse kselftest TAP output ("ok 3 name", "ok 4 name # SKIP why", "not ok 5 name"). */
function parseTap(output: string): TapResult {
  const result: TapResult = { plan: null, passed: [], skipped: [], failed: [], totals: null };
  for (const line of output.split('\n')) {
    const plan = /^1\.\.(\d+)$/.exec(line);
    if (plan) result.plan = Number(plan[1]);
    const test = /^(not )?ok \d+ (\S+)(?: # (SKIP|XFAIL)\b.*)?$/.exec(line);
    if (test) {
      if (test[1]) result.failed.push(test[2]!);
      else if (test[3] === 'SKIP') result.skipped.push(test[2]!);
      else result.passed.push(test[2]!);
    }
    const totals = /^# Totals: (.*)$/.exec(line);
    if (totals) result.totals = totals[1]!.trim();
  }
  return result;
}

interface Run {
  status: number | null;
  output: string;
}

/** Run a command with the event loop free (the emulator may be in another process, but be safe). */
function run(argv: string[], env: NodeJS.ProcessEnv): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), {
      cwd: projectRoot,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 300_000);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, output });
    });
  });
}

function assertAllPassed(label: string, result: Run, stateDir: string): void {
  const tap = parseTap(result.output);
  const log = path.join(stateDir, 'emu.log');
  const context = `${label}:\n${result.output}\n--- emu.log (tail) ---\n${
    existsSync(log) ? readFileSync(log, 'utf8').split('\n').slice(-40).join('\n') : '(none)'
  }`;
  assert.deepEqual(tap.failed, [], context);
  assert.deepEqual(tap.skipped, [], context);
  assert.equal(tap.plan, EXPECTED_TESTS, context);
  assert.equal(tap.passed.length, EXPECTED_TESTS, context);
  assert.equal(tap.totals, `pass:${EXPECTED_TESTS} fail:0 xfail:0 xpass:0 skip:0 error:0`, context);
  assert.equal(result.status, 0, context);
}

describe('parseTap', () => {
  it('counts passes, skips and failures of kselftest output', () => {
    const tap = parseTap(
      [
        'TAP version 13',
        '1..3',
        '# Starting 3 tests from 1 test cases.',
        'ok 1 liveupdate_device.basic_open_close',
        'ok 2 liveupdate_device.exclusive_open # SKIP /dev/liveupdate does not exist',
        'not ok 3 liveupdate_device.create_duplicate_session',
        '# Totals: pass:1 fail:1 xfail:0 xpass:0 skip:1 error:0',
      ].join('\n'),
    );
    assert.deepEqual(tap, {
      plan: 3,
      passed: ['liveupdate_device.basic_open_close'],
      skipped: ['liveupdate_device.exclusive_open'],
      failed: ['liveupdate_device.create_duplicate_session'],
      totals: 'pass:1 fail:1 xfail:0 xpass:0 skip:1 error:0',
    });
  });
});

// Once a guard that skipped the whole suite: a luoctl that crashes at start-up must fail, not skip.
it('luoctl emu starts', () => {
  const help = luoctl('emu', '--help');
  assert.equal(help.status, 0, `luoctl emu --help: ${help.stdout}${help.stderr}`);
});

describe("the kernel's liveupdate selftest against the emulated kernel", () => {
  let selftests = '';
  let stateDir = '';

  before(
    () => {
      execFileSync(path.join(projectRoot, 'scripts/build-native.sh'), {
        stdio: ['ignore', 'ignore', 'inherit'],
      });
      assert.ok(existsSync(SHIM), `${SHIM} was not built`);
      selftests = execFileSync(path.join(projectRoot, 'scripts/build-selftests.sh'), {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'inherit'],
      }).trim();
      assert.ok(existsSync(path.join(selftests, 'liveupdate')), `no liveupdate selftest in ${selftests}`);
      stateDir = mkdtempSync(path.join(tmpdir(), 'luokit-selftest-'));
      const started = luoctl('emu', 'start', '--state', stateDir);
      assert.equal(started.status, 0, `luoctl emu start: ${started.stdout}${started.stderr}`);
    },
    { timeout: 900_000 },
  );

  after(() => {
    if (!stateDir) return;
    luoctl('emu', 'stop', '--state', stateDir);
    rmSync(stateDir, { recursive: true, force: true });
  });

  it(`passes ${EXPECTED_TESTS}/${EXPECTED_TESTS} under luoctl emu exec`, { timeout: 300_000 }, async () => {
    const result = await run(
      [
        process.execPath,
        '--import',
        'tsx',
        'src/cli/luoctl.ts',
        'emu',
        'exec',
        '--state',
        stateDir,
        '--',
        path.join(selftests, 'liveupdate'),
      ],
      { ...process.env, LUOKIT_DEBUG: '' },
    );
    assertAllPassed('luoctl emu exec -- liveupdate', result, stateDir);
  });

  it(`passes ${EXPECTED_TESTS}/${EXPECTED_TESTS} with LD_PRELOAD and LUOKIT_EMU_STATE set by hand`, {
    timeout: 300_000,
  }, async () => {
    const result = await run([path.join(selftests, 'liveupdate')], {
      PATH: process.env.PATH,
      LD_PRELOAD: SHIM,
      LUOKIT_EMU_STATE: stateDir,
    });
    assertAllPassed('LD_PRELOAD=libluoemu.so liveupdate', result, stateDir);
  });

  describe('the kexec selftests across an emulated kexec', () => {
    let kexecState = '';
    const env = () => ({ PATH: process.env.PATH, LD_PRELOAD: SHIM, LUOKIT_EMU_STATE: kexecState });

    before(() => {
      kexecState = mkdtempSync(path.join(tmpdir(), 'luokit-kexec-selftest-'));
      const started = luoctl('emu', 'start', '--state', kexecState);
      assert.equal(started.status, 0, `luoctl emu start: ${started.stdout}${started.stderr}`);
    });

    after(() => {
      if (!kexecState) return;
      luoctl('emu', 'stop', '--state', kexecState);
      rmSync(kexecState, { recursive: true, force: true });
    });

    for (const [program, passed] of [
      ['luo_kexec_simple', /SIMPLE KEXEC TEST PASSED/],
      ['luo_multi_session', /MULTI-SESSION KEXEC TEST PASSED/],
      ['luo_stress_sessions', /MANY-SESSIONS KEXEC TEST PASSED/],
      ['luo_stress_files', /MANY-FILES KEXEC TEST PASSED/],
    ] as const) {
      it(`${program}: stage 1, kexec, stage 2`, { timeout: 300_000 }, async () => {
        const binary = path.join(selftests, program);
        const stage1 = await run([binary, '--stage', '1'], env());
        assert.equal(stage1.status, 0, stage1.output);
        // Stage 1 leaves a setsid'd child holding the outgoing sessions, as on a real host.
        const holder = /Child PID: (\d+)/.exec(stage1.output);
        assert.ok(holder, `stage 1 forked no holder:\n${stage1.output}`);
        try {
          const kexec = luoctl('emu', 'kexec', '--state', kexecState);
          assert.equal(kexec.status, 0, `luoctl emu kexec: ${kexec.stdout}${kexec.stderr}`);
          assert.match(kexec.stdout, /restored/);
        } finally {
          // On a real host the holder dies with the old kernel.
          try {
            process.kill(Number(holder[1]), 'SIGKILL');
          } catch {
            // already gone
          }
        }
        const stage2 = await run([binary, '--stage', '2'], env());
        assert.equal(stage2.status, 0, stage2.output);
        assert.match(stage2.output, passed);
      });
    }
  });
});
