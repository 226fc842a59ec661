/**
 * The gate before every kexec (#16 part 2): the verdict for every kind of mismatch, its
 * agreement with luokit's model of what the next kernel does (abi/versions.ts, which the
 * emulator follows), and luod on the emulated kernel refusing, forcing and recording it.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { bootOutcome, KERNEL_ABIS } from '../src/abi/versions.js';
import { emulatedFormats } from '../src/daemon/kernel.js';
import { type GateOutcome, gateVerdict, type SpokenFormats } from '../src/image/gate.js';
import { KERNEL_FORMATS } from '../src/kernel/emu/server/versions.js';
import { cliHost } from './support/cli-host.js';

const v72: SpokenFormats = {
  release: '7.2.13',
  kho: 'kho-v4',
  luo: 'luo-v5',
  files: ['memfd-v2'],
  source: 'test',
};

test('the verdict names the consequence of each mismatch in one sentence', () => {
  const works = gateVerdict(v72, { ...v72, release: '7.3.0-rc7' });
  assert.equal(works.outcome, 'works');
  assert.equal(works.ok, true);
  const panic = gateVerdict(v72, { ...v72, release: '7.1.4', luo: 'luo-v4' });
  assert.equal(panic.outcome, 'panic');
  assert.equal(panic.ok, false);
  assert.equal(
    panic.sentence,
    'the next kernel (7.1.4) reads luo-v4; this kernel writes luo-v5: the next kernel would panic',
  );
  const cold = gateVerdict(v72, { ...v72, release: '7.1.4', kho: 'kho-v3' });
  assert.equal(cold.outcome, 'cold-boot');
  assert.match(
    cold.sentence,
    /^the next kernel \(7\.1\.4\) reads kho-v3; this kernel writes kho-v4: the next kernel would boot cold/,
  );
  const stock = gateVerdict(v72, { release: '7.2.13+deb14-cloud-amd64', files: [], source: 'image' });
  assert.equal(stock.outcome, 'cold-boot');
  assert.match(stock.sentence, /\(7\.2\.13\+deb14-cloud-amd64\) has no KHO/);
  const files = gateVerdict(v72, { ...v72, files: ['memfd-v1'] });
  assert.equal(files.outcome, 'files-lost');
  assert.match(
    files.sentence,
    /reads memfd-v1; this kernel writes memfd-v2: those files could not be retrieved \(EIO\)/,
  );
  const noLuo = gateVerdict(v72, { ...v72, luo: undefined as unknown as string, files: [] });
  assert.equal(noLuo.outcome, 'files-lost');
  const fromNothing = gateVerdict({ release: 'x', files: [], source: 'image' }, v72);
  assert.equal(fromNothing.outcome, 'no-handover');
});

test('every pair of emulated kernels: the gate agrees with the model the emulator boots by', () => {
  const expected: Record<string, GateOutcome> = {
    ok: 'works',
    'kho-mismatch': 'cold-boot',
    'luo-mismatch': 'panic',
  };
  let mismatches = 0;
  for (const from of Object.keys(KERNEL_FORMATS)) {
    for (const to of Object.keys(KERNEL_FORMATS)) {
      const verdict = gateVerdict(emulatedFormats(from), emulatedFormats(to));
      const f = KERNEL_FORMATS[from]!;
      const model = bootOutcome(
        { kho: [f.kho], luo: f.luo, fileHandlers: [f.memfd] },
        KERNEL_ABIS.find((a) => a.kernel === to)!,
      );
      const want = model.startsWith('unknown-handler:') ? 'files-lost' : expected[model];
      assert.equal(verdict.outcome, want, `${from} -> ${to}: gate ${verdict.outcome}, model ${model}`);
      if (!verdict.ok) mismatches++;
    }
  }
  assert.ok(mismatches > 0, 'the table has mismatched pairs to judge');
});

const host = cliHost('luokit-gate-', (dir) => ['--records', path.join(dir, 'records')]);
const { luoctl } = host;
const records = path.join(host.dir, 'records');

test('luod on the emulated kernel: a mismatch is refused before anything is loaded, --force loads it and the record says so', () => {
  const current = JSON.parse(luoctl('status', '--json').stdout);
  assert.equal(current.loaded, null);
  // The emulated kernel starts as 7.2 (kho-v4); 7.1 reads kho-v3.
  const refused = luoctl('load', '--emu-version', '7.1');
  assert.equal(refused.status, 1);
  assert.match(
    refused.stderr,
    /^luoctl: load: EPROTO: refused: the next kernel \(7\.1\) reads kho-v3; this kernel writes kho-v4: the next kernel would boot cold/,
  );
  assert.equal(JSON.parse(luoctl('status', '--json').stdout).loaded, null, 'nothing was loaded');

  const good = luoctl('load', '--emu-version', '7.3', '--json');
  assert.equal(good.status, 0, good.stdout + good.stderr);
  const gate = JSON.parse(good.stdout).loaded.gate;
  assert.equal(gate.outcome, 'works');
  assert.equal(gate.forced, false);
  assert.equal(gate.current.source, 'emulator');

  const forced = luoctl('load', '--emu-version', '7.1', '--force', '--json');
  assert.equal(forced.status, 0, forced.stdout + forced.stderr);
  const forcedGate = JSON.parse(forced.stdout).loaded.gate;
  assert.deepEqual([forcedGate.outcome, forcedGate.ok, forcedGate.forced], ['cold-boot', false, true]);

  const doctor = JSON.parse(luoctl('doctor', '--json').stdout);
  const check = doctor.checks.find((c: { id: string }) => c.id === 'next-kernel');
  assert.equal(check.status, 'fail');
  assert.match(check.finding, /loaded with --force: the next kernel \(7\.1\) reads kho-v3/);

  const update = luoctl('update', '--json', '--timeout', '5s');
  const reply = JSON.parse(update.stdout);
  assert.ok(reply.update, update.stdout + update.stderr);
  const record = JSON.parse(fs.readFileSync(path.join(records, `${reply.update}.json`), 'utf8'));
  assert.deepEqual(record.gate, {
    outcome: 'cold-boot',
    ok: false,
    sentence: forcedGate.sentence,
    forced: true,
  });
});
