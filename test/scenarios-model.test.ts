/**
 * Tests of the scenario suite itself (test/scenarios/), independent of the
 * emulator: the runner's bookkeeping, the catalogue's consistency, the whole
 * suite on a small in-process model of the kernel (model-kernel.ts), and
 * proof that scenarios fail when the kernel breaks the rule they are about
 * (each "quirk" of the model is one such deviation).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { memfdCreate } from '../src/sys/index.js';
import { sessionName } from './scenarios/context.js';
import { emulatorHost } from './scenarios/hosts.js';
import {
  groupOf,
  runScenario,
  runScenarios,
  scenarios,
  selectScenarios,
  stageOf,
} from './scenarios/index.js';
import { ModelKernel, type Quirk } from './scenarios/model-kernel.js';
import type { Scenario, ScenarioResult } from './scenarios/types.js';

/** Scenarios the model cannot pass by construction (it does not pin pages). */
const MODEL_GAPS = new Set(['preserve/seal-write-pinned-ebusy']);

function modelHost(quirks: Quirk[] = []) {
  const model = new ModelKernel(quirks);
  return { model, host: emulatorHost(model) };
}

function summary(results: readonly ScenarioResult[]): string {
  return results
    .filter((r) => r.status !== 'pass')
    .map((r) => `${r.id}: ${r.status}: ${r.error}`)
    .join('\n');
}

describe('the catalogue', () => {
  test('ids are unique and every rule is one sentence', () => {
    const ids = scenarios.map((s) => s.id);
    assert.equal(new Set(ids).size, ids.length);
    for (const s of scenarios) {
      assert.match(s.rule, /^[A-Z0-9].*\.$/s, s.id);
      assert.ok(!/\.\s+[A-Z]/.test(s.rule.slice(0, -1)), `${s.id}: one sentence`);
    }
  });

  test('every later stage has the earlier stages of its group', () => {
    for (const s of scenarios) {
      const stage = stageOf(s);
      const siblings = scenarios.filter((o) => groupOf(o) === groupOf(s)).map(stageOf);
      if (stage === 'after-kexec') assert.ok(siblings.includes('before-kexec'), s.id);
      if (stage === 'after-second-kexec') assert.ok(siblings.includes('after-kexec'), s.id);
      if (stage === 'before-kexec') assert.ok(siblings.includes('after-kexec'), s.id);
      if (stage !== 'single') assert.ok(s.id.startsWith(`${groupOf(s)}/`), s.id);
    }
  });

  test('selection: by group, by stage, in running order', () => {
    const simple = selectScenarios({ ids: 'kexec/simple' }).map((s) => s.id);
    assert.deepEqual(simple, ['kexec/simple/before', 'kexec/simple/after']);
    const order = selectScenarios().map(stageOf);
    assert.deepEqual(
      order,
      [...order].sort((a, b) => stageRank(a) - stageRank(b)),
    );
    assert.ok(selectScenarios({ stages: ['single'] }).every((s) => stageOf(s) === 'single'));
  });

  test('session names stay within 63 bytes', () => {
    assert.throws(() => sessionName('g'.repeat(40), 'x'.repeat(30)));
    assert.equal(sessionName('kexec/simple', 'test-session'), 'kexec.simple-test-session');
  });
});

function stageRank(stage: string): number {
  return ['single', 'before-kexec', 'after-kexec', 'after-second-kexec'].indexOf(stage);
}

describe('the runner', () => {
  const base = { rule: 'A test rule.' } as const;

  test('records steps, passes, and closes what the scenario left open', async () => {
    const { model, host } = modelHost();
    let leaked: ReturnType<typeof memfdCreate> | undefined;
    const scenario: Scenario = {
      ...base,
      id: 't/pass',
      run(ctx) {
        const device = ctx.openDevice();
        ctx.expect('create', () => device.createSession(ctx.name('a')), 'ok');
        ctx.expect('create again', () => device.createSession(ctx.name('a')), 'EEXIST');
        leaked = ctx.track(memfdCreate('leak'));
        ctx.equal('a value', 7n, '7');
      },
    };
    const result = await runScenario(host, scenario);
    assert.equal(result.status, 'pass', result.error);
    assert.deepEqual(result.steps, [
      { step: 'create', outcome: { ok: true } },
      { step: 'create again', outcome: { ok: false, code: 'EEXIST' } },
      { step: 'a value', outcome: { ok: true, value: '7' } },
    ]);
    assert.equal(leaked?.closed, true);
    // The device and the session were closed: the device opens again and the name is free.
    const again = await runScenario(host, { ...scenario, id: 't/pass-again' });
    assert.equal(again.status, 'pass', again.error);
    model.close();
  });

  test('a wrong errno, a wrong value or a stray exception fails the scenario', async () => {
    const { model, host } = modelHost();
    const wrongErrno = await runScenario(host, {
      ...base,
      id: 't/errno',
      run(ctx) {
        const device = ctx.openDevice();
        ctx.expect('retrieve unknown', () => device.retrieveSession(ctx.name('x')), 'EINVAL');
      },
    });
    assert.equal(wrongErrno.status, 'fail');
    assert.match(wrongErrno.error!, /expected EINVAL, got ENOENT/);
    assert.deepEqual(wrongErrno.steps, [
      { step: 'retrieve unknown', outcome: { ok: false, code: 'ENOENT' } },
    ]);
    const wrongValue = await runScenario(host, {
      ...base,
      id: 't/value',
      run: (ctx) => ctx.equal('v', 1, 2),
    });
    assert.equal(wrongValue.status, 'fail');
    const stray = await runScenario(host, {
      ...base,
      id: 't/stray',
      run() {
        throw new TypeError('bug');
      },
    });
    assert.equal(stray.status, 'fail');
    assert.match(stray.error!, /TypeError: bug/);
    model.close();
  });

  test('infra: a failed precondition, a missing capability, a failed earlier stage', async () => {
    const { model, host } = modelHost();
    const pre = await runScenario(host, {
      ...base,
      id: 't/infra',
      run: (ctx) => ctx.infra('no hugetlb here'),
    });
    assert.equal(pre.status, 'infra');
    assert.equal(pre.error, 'InfraError: no hugetlb here');
    let ran = false;
    const capability = await runScenario(host, {
      ...base,
      id: 't/cap',
      requires: ['sizeFreezeEnforced'],
      run: () => {
        ran = true;
      },
    });
    assert.equal(capability.status, 'infra');
    assert.equal(ran, false);
    const before: ScenarioResult = {
      ...pre,
      id: 'g/before',
      group: 'g',
      stage: 'before-kexec',
      status: 'fail',
    };
    const after = await runScenario(
      host,
      { ...base, id: 'g/after', group: 'g', stage: 'after-kexec', run: () => {} },
      [before],
    );
    assert.equal(after.status, 'infra');
    assert.match(after.error!, /before-kexec stage \(g\/before\) did not pass/);
    model.close();
  });

  test('a selection spanning a kexec needs a host that can kexec', async () => {
    const { model, host } = modelHost();
    const { kexec: _kexec, ...noKexec } = host;
    await assert.rejects(runScenarios(noKexec, { ids: 'kexec/simple' }), /cannot kexec/);
    const perBoot = await runScenarios(noKexec, { ids: 'kexec/simple', stages: ['before-kexec'] });
    assert.deepEqual(
      perBoot.map((r) => [r.id, r.status]),
      [['kexec/simple/before', 'pass']],
    );
    host.holder.release();
    model.close();
  });
});

describe('the suite on the model kernel', () => {
  test('every scenario passes, except the known gaps of the model and what needs a frozen size', async () => {
    const { model, host } = modelHost();
    const results = await runScenarios(host);
    model.close();
    assert.equal(results.length, scenarios.length);
    const unexpected = results.filter((r) => {
      if (MODEL_GAPS.has(r.id)) return r.status !== 'fail';
      if (r.status === 'infra') return !/sizeFreezeEnforced|closeReleasesSynchronously/.test(r.error ?? '');
      return r.status !== 'pass';
    });
    assert.equal(summary(unexpected), '');
    // Results are plain JSON.
    assert.deepEqual(JSON.parse(JSON.stringify(results)), results);
  });
});

/** Each deviation from the kernel and the scenarios (or stages) that must catch it. */
const MUTATIONS: ReadonlyArray<[Quirk, string[]]> = [
  ['no-exclusive-open', ['device/exclusive-open', 'device/reopen-after-close']],
  [
    'enotty-out-of-range',
    ['device/ioctl-out-of-range-einval', 'device/null-argument', 'sessions/ioctl-dispatch'],
  ],
  [
    'ignore-nonzero-tail',
    ['device/size-nonzero-tail-e2big', 'sessions/get-name-struct', 'sessions/check-order'],
  ],
  ['create-accepts-empty-name', ['names/create-empty-einval']],
  ['retrieve-validates-name', ['names/retrieve-does-not-validate']],
  ['no-double-preserve-check', ['preserve/one-preservation-per-inode', 'sessions/close-unpreserves']],
  ['close-keeps-files', ['sessions/close-unpreserves', 'sessions/last-reference', 'limits/500-files']],
  ['tail-check-before-direction', ['sessions/check-order', 'kexec/incoming-ioctl-rules/after']],
  ['position-not-carried', ['kexec/retrieved-memfd-properties/after', 'kexec/changes-after-preserve/after']],
  ['late-seals-carried', ['kexec/changes-after-preserve/after']],
  ['retry-failed-retrieve', ['kexec/retrieve-failure-permanent/after']],
  ['second-finish-fails', ['kexec/finish-rules/after', 'kexec/incoming-ioctl-rules/after']],
  ['retrieve-after-close-einval', ['kexec/retrieve-session-rules/after']],
  ['carry-unretrieved', ['kexec/unretrieved-dropped/after-second']],
];

describe('scenarios fail when the kernel breaks their rule', () => {
  for (const [quirk, catches] of MUTATIONS) {
    test(quirk, async () => {
      const { model, host } = modelHost([quirk]);
      const groups = [...new Set(catches.map((id) => groupOf(scenarios.find((s) => s.id === id)!)))];
      const results = await runScenarios(host, { ids: groups });
      model.close();
      for (const id of catches) {
        const result = results.find((r) => r.id === id);
        assert.equal(result?.status, 'fail', `${id} should fail under ${quirk}: ${result?.status}`);
      }
    });
  }
});
