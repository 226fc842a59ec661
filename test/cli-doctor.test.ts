/**
 * The compiled `luoctl` run as an operator would run it, on this machine.
 * Needs `npm run build` first (the test command does it).
 */
import assert from 'node:assert/strict';
import { type SpawnSyncReturns, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const projectRoot = fileURLToPath(new URL('..', import.meta.url));
const LUOCTL = 'dist/cli/luoctl.js';
/** These expectations hold on hosts without LUO, such as CI machines and this one. */
const hostHasLuo = existsSync('/dev/liveupdate');

function luoctl(...args: string[]): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, [LUOCTL, ...args], {
    cwd: projectRoot,
    encoding: 'utf8',
    env: { ...process.env, LUOKIT_DEBUG: '' },
  });
}

function assertNoStackTrace(result: SpawnSyncReturns<string>): void {
  assert.doesNotMatch(`${result.stdout}${result.stderr}`, /^\s+at /m);
}

before(() => {
  assert.ok(
    existsSync(`${projectRoot}/${LUOCTL}`),
    `${LUOCTL} is missing: run \`npm run build\` before this test`,
  );
});

describe('luoctl doctor on this host', { skip: hostHasLuo && 'this host has /dev/liveupdate' }, () => {
  it('says there is no /dev/liveupdate and exits 1', () => {
    const result = luoctl('doctor');
    assert.equal(result.status, 1, result.stderr);
    assert.match(result.stdout, /^FAIL {2}\/dev\/liveupdate +\/dev\/liveupdate does not exist/m);
    assert.match(result.stdout, /NOT preserve VMs/);
    assert.match(result.stdout, /This host cannot live update/);
    assert.equal(result.stderr, '');
  });

  it('--json prints one JSON object with ok:false and a failed device check', () => {
    const result = luoctl('doctor', '--json');
    assert.equal(result.status, 1, result.stderr);
    assert.equal(result.stdout.trimEnd().split('\n').length, 1);
    const report = JSON.parse(result.stdout);
    assert.equal(report.ok, false);
    assert.equal(report.backend, 'emulated');
    const device = report.checks.find((check: { id: string }) => check.id === 'device');
    assert.equal(device?.status, 'fail');
    assert.equal(typeof device?.fix, 'string');
  });
});

describe('luoctl usage', () => {
  it("an unknown command exits 2 with commander's message and no stack trace", () => {
    const result = luoctl('nosuch');
    assert.equal(result.status, 2);
    assert.match(result.stderr, /unknown command 'nosuch'/);
    assert.equal(result.stdout, '');
    assertNoStackTrace(result);
  });

  it('an unknown option exits 2', () => {
    const result = luoctl('doctor', '--bogus');
    assert.equal(result.status, 2);
    assert.match(result.stderr, /unknown option '--bogus'/);
    assertNoStackTrace(result);
  });

  it('--version prints the package version', () => {
    const { version } = JSON.parse(readFileSync(`${projectRoot}/package.json`, 'utf8'));
    const result = luoctl('--version');
    assert.equal(result.status, 0);
    assert.equal(result.stdout.trim(), version);
  });

  it('--help lists doctor and exits 0', () => {
    const result = luoctl('--help');
    assert.equal(result.status, 0);
    assert.match(result.stdout, /doctor/);
  });
});
