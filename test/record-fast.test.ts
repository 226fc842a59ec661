/**
 * The hand-checked fast paths of the update record (updateRecordFast, which
 * luod's record store writes and reads through) and of the state carried
 * across a kexec (carriedStateFast, luod's restore) against their zod
 * schemas, the validators of record: whatever the fast path accepts the
 * schema accepts with the same result, and whatever the schema accepts the
 * fast path accepts too (so the schema only ever sees, and words the error
 * for, what is invalid). Records are checked as files give them and as luod
 * holds them in memory (undefined keys, NaN), since the store validates the
 * latter before each write.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { CarriedState, carriedStateFast } from '../src/daemon/handover-state.js';
import {
  isUpdateId,
  OUTCOMES,
  PHASES,
  RECORD_FORMAT,
  UpdateId,
  UpdateRecord,
  updateRecordFast,
} from '../src/record/format.js';
import { agree, extra, opt, withNearMisses } from './support/fast-paths.js';
import { abortedRecord, completedRecord } from './support/records.js';

/** A record has some fifty fields: a near miss at each is rarer than in the smaller files. */
const { mostly, str, uid, bool, list, mark } = withNearMisses(150);

/** `Time`: finite, not negative. */
const validTime = fc.oneof(fc.nat(), fc.double({ min: 0, max: 4e12, noNaN: true }));
const time = mostly(validTime, -1, -1e-9, 'x', null, Number.NaN, Number.POSITIVE_INFINITY);
const nullableTime = mostly(fc.option(validTime, { nil: null }), -1, 'x', undefined);
const nullableStr = mostly(fc.option(fc.string({ maxLength: 8 }), { nil: null }), 3, undefined);

/** A start and an end (null: still open) no earlier than it, and the near misses of the pair. */
const times = mostly(
  fc
    .tuple(
      validTime,
      fc.option(fc.oneof(fc.constant(0), fc.nat(), fc.double({ min: 0, max: 1e6, noNaN: true })), {
        nil: null,
      }),
    )
    .map(([start, length]) => ({ start, end: length === null ? null : start + length })),
  { start: 5, end: 4 },
  { start: 5, end: 5 - 1e-9 },
  { start: 1 },
  { start: -1, end: null },
  { start: 1, end: Number.POSITIVE_INFINITY },
  { start: '1', end: null },
);
const withTimes = <T extends object>(arb: fc.Arbitrary<T>) =>
  fc.tuple(arb, times).map(([fields, t]) => ({ ...fields, ...(t as object) }));

const span = mostly(withTimes(fc.record({ ...extra }, { requiredKeys: [] })), 'span', []);
const nullableSpan = fc.oneof({ arbitrary: fc.constant(null), weight: 1 }, { arbitrary: span, weight: 2 });

const phaseSpan = mostly(
  withTimes(
    fc.record(
      { phase: mostly(fc.constantFrom(...PHASES), 'reboot', 3), failed: opt(str), ...extra },
      { requiredKeys: ['phase'] },
    ),
  ),
  null,
  { phase: 'load', start: 1 },
);

const lane = mostly(
  fc.record(
    {
      id: mostly(fc.string({ minLength: 1, maxLength: 8 }), '', 3, null),
      uid,
      sessions: list(str),
      preserve: nullableSpan,
      ready: nullableTime,
      claim: nullableSpan,
      failure: nullableStr,
      blackout: opt(
        mostly(
          fc.record(
            { paused_at: time, resumed_at: time, ...extra },
            { requiredKeys: ['paused_at', 'resumed_at'] },
          ),
          null,
          { paused_at: 1 },
          'x',
        ),
      ),
      ...extra,
    },
    { requiredKeys: ['id', 'uid', 'sessions', 'preserve', 'ready', 'claim', 'failure'] },
  ),
  null,
  [],
  { id: 'vm-1', uid: 0, sessions: [], preserve: null, ready: null, claim: null },
);

const gate = mostly(
  fc.record(
    {
      outcome: str,
      ok: bool,
      sentence: str,
      forced: bool,
      qualification: opt(
        mostly(
          fc.record(
            { required: str, qualified: bool, record: opt(str), ...extra },
            { requiredKeys: ['required', 'qualified'] },
          ),
          null,
          { required: 'x' },
        ),
      ),
      ...extra,
    },
    { requiredKeys: ['outcome', 'ok', 'sentence', 'forced'] },
  ),
  null,
  'pass',
  { ok: true, sentence: 'x', forced: false },
);

/** The outcome and the finish time: in progress with none, or finished with one; and the misses of the pair. */
const ending = mostly(
  fc.oneof(
    fc.constant({ outcome: 'in-progress', finished: null }),
    fc.record({
      outcome: fc.constantFrom(...OUTCOMES.filter((o) => o !== 'in-progress')),
      finished: validTime,
    }),
  ),
  { outcome: 'completed', finished: null },
  { outcome: 'in-progress', finished: 5 },
  { outcome: 'done', finished: 5 },
  { outcome: 'aborted', finished: -1 },
  { outcome: 'aborted' },
);

const updateId = mostly(
  fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/),
  '',
  'a/b',
  '../x',
  'x\n',
  'a'.repeat(65),
  'a'.repeat(64),
  3,
);

const record = fc
  .tuple(
    fc.record(
      {
        format: mostly(fc.constant(RECORD_FORMAT), 'luod-update-record-v2'),
        update: updateId,
        backend: mostly(fc.constantFrom('real', 'emulated'), 'virtual', null),
        reason: nullableStr,
        from: str,
        to: str,
        started: time,
        phases: list(phaseSpan),
        gate: opt(gate),
        clients: list(lane),
        failures: list(mostly(fc.record({ id: str, reason: str, ...extra }), null, { id: 'x' })),
        ...extra,
      },
      {
        requiredKeys: [
          'format',
          'update',
          'backend',
          'reason',
          'from',
          'to',
          'started',
          'phases',
          'clients',
          'failures',
        ],
      },
    ),
    ending,
  )
  .map(([fields, end]) => ({ ...fields, ...(end as object) }));

test('the update record as a file gives it: updateRecordFast and the UpdateRecord schema agree', () => {
  const seen = agree(updateRecordFast, UpdateRecord, (d) => d, record);
  assert.ok(seen.fast > 50 && seen.invalid > 50, JSON.stringify(seen));
});

test('the update record as luod holds it (undefined keys, NaN): updateRecordFast and the schema agree', () => {
  const seen = agree(updateRecordFast, UpdateRecord, (d) => d, record, { onWire: false });
  assert.ok(seen.fast > 50 && seen.invalid > 50, JSON.stringify(seen));
});

test('records luod builds pass the fast path, as the schema reads them', () => {
  for (const r of [
    completedRecord('u-1'),
    completedRecord('u-2', undefined, { resumed: false }),
    abortedRecord('u-3'),
  ]) {
    const quick = updateRecordFast(r);
    assert.ok(quick, r.update);
    assert.equal(JSON.stringify(quick), JSON.stringify(UpdateRecord.parse(r)));
    assert.notEqual(quick.clients, r.clients, 'a copy, as zod returns');
  }
});

const SAME_UPDATE = Symbol('the record’s update');
const carried = fc
  .record(
    {
      format: mostly(fc.constant('luod-state-v2'), 'luod-state-v1', 'luod-state-v3'),
      update: mostly(fc.constant(SAME_UPDATE), 'another-update', 3),
      from: str,
      to: str,
      clients: list(
        mostly(
          fc.record(
            {
              id: str,
              uid,
              sessions: mostly(fc.array(str, { minLength: 1, maxLength: 3 }), [], 'vm-1'),
              ...extra,
            },
            { requiredKeys: ['id', 'uid', 'sessions'] },
          ),
          null,
          { id: 'vm-1', uid: 0 },
        ),
      ),
      timeline: list(mark),
      record: mostly(record, null, 'record'),
      ...extra,
    },
    { requiredKeys: ['format', 'update', 'from', 'to', 'clients', 'timeline', 'record'] },
  )
  .map((s) => ({
    ...s,
    update: s.update === SAME_UPDATE ? (s.record as { update?: unknown } | null)?.update : s.update,
  }));

test('the state carried across a kexec: carriedStateFast and the CarriedState schema agree', () => {
  const seen = agree(carriedStateFast, CarriedState, (d) => d, carried);
  assert.ok(seen.fast > 50 && seen.invalid > 50, JSON.stringify(seen));
});

test('an update id: isUpdateId and the UpdateId schema agree (the record path is made with it)', () => {
  const id = fc.oneof(
    fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/),
    fc.stringMatching(/^[A-Za-z0-9_-]{60,70}$/),
    fc.string({ maxLength: 8 }),
    fc.constantFrom('', '../x', 'u-1\n', 'u 1', 'ü', 3, null, undefined),
  );
  let accepted = 0;
  let refused = 0;
  fc.assert(
    fc.property(id, (value) => {
      const fast = isUpdateId(value);
      assert.equal(fast, UpdateId.safeParse(value).success, JSON.stringify(value));
      if (fast) accepted++;
      else refused++;
    }),
    { numRuns: 3000 },
  );
  assert.ok(
    accepted > 500 && refused > 500,
    `both sides exercised (${accepted} accepted, ${refused} refused)`,
  );
});
