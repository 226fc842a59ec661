/**
 * `luoctl qualify --emulated` (#16 part 3, emulated half): the workload really runs on the
 * emulated kernel for a pair that works and one that boots cold, and each outcome matches
 * the gate's verdict; pairs the emulator cannot write are reported as not run, never passed.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { qualifyEmulatedPair } from '../src/cli/qualify.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-qualify-test-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('7.2 -> 7.3: the memfd comes back byte for byte, as the gate predicts', async () => {
  const pair = await qualifyEmulatedPair('7.2', '7.3', dir);
  assert.equal(pair.outcome, 'works', pair.detail);
  assert.equal(pair.gate, 'works');
  assert.equal(pair.agrees, true);
  assert.match(pair.detail, /1048576 bytes came back identical/);
});

test('7.3 -> 7.1: the next kernel boots cold (kho-v3 against kho-v4), as the gate predicts', async () => {
  const pair = await qualifyEmulatedPair('7.3', '7.1', dir);
  assert.equal(pair.outcome, 'cold-boot', pair.detail);
  assert.match(pair.detail, /kho-v4.*kho-v3|kho-v3.*kho-v4/);
  assert.equal(pair.gate, 'cold-boot');
  assert.equal(pair.agrees, true);
});

test('a pair the emulator cannot write is not run, and neither agrees nor disagrees', async () => {
  const pair = await qualifyEmulatedPair('7.1', '7.2', dir);
  assert.equal(pair.outcome, 'not-run');
  assert.equal(pair.agrees, null);
});
