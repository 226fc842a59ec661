/**
 * The hand-checked fast paths a restarted luod reads its files with before
 * it listens (the state file's body, the id owners file), against their zod
 * schemas, the validators of record: on any input below, whatever the fast
 * path accepts the schema accepts with the same result, and whatever the
 * schema accepts the fast path accepts too (so the schema only ever sees,
 * and words the error for, what is invalid).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { OwnersFile, ownersFast } from '../src/daemon/id-owners.js';
import { StateBody, stateBodyFast } from '../src/daemon/restart-state.js';

/** As the file gives it: JSON (no undefined, no NaN, no -0). */
const wire = (value: unknown) => JSON.parse(JSON.stringify(value) ?? 'null') as unknown;

/** Mostly valid values of each kind (weight 20), and each kind's near misses (weight 1 each). */
const mostly = <T>(valid: fc.Arbitrary<T>, ...misses: unknown[]) =>
  fc.oneof(
    { arbitrary: valid as fc.Arbitrary<unknown>, weight: 20 },
    ...misses.map((m) => ({ arbitrary: fc.constant(m), weight: 1 })),
  );
const str = mostly(fc.string({ maxLength: 8 }), 3, null);
const num = mostly(fc.oneof(fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true })), 'x', null);
const uid = mostly(fc.nat(), -1, 1.5, 2 ** 60, '0');
const bool = mostly(fc.boolean(), 'true', 0);
const opt = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: undefined });
const list = <T>(arb: fc.Arbitrary<T>) => mostly(fc.array(arb, { maxLength: 4 }), 'not a list', {});
const extra = { extra: opt(fc.string()) };

const client = mostly(
  fc.record(
    { id: str, uid, sessions: list(str), claimed: bool, ...extra },
    { requiredKeys: ['id', 'uid', 'sessions', 'claimed'] },
  ),
  null,
  [],
  { id: 'vm-1', uid: 0, sessions: [] },
);
const mark = mostly(
  fc.record({ phase: str, at: num, client: opt(str), ...extra }, { requiredKeys: ['phase', 'at'] }),
  'claim',
  { at: 1 },
);
const body = fc.record(
  {
    boot: str,
    phase: mostly(fc.constantFrom('preserving', 'kexec', 'claiming'), 'dancing', 3),
    update: str,
    from: opt(str),
    to: opt(str),
    claimDeadline: opt(num),
    clients: list(client),
    timeline: list(mark),
    ...extra,
  },
  { requiredKeys: ['boot', 'phase', 'update', 'clients', 'timeline'] },
);

function agree<T>(
  fast: (v: unknown) => T | undefined,
  schema: { safeParse(v: unknown): { success: boolean; data?: unknown } },
  toSame: (parsed: unknown) => unknown,
  arb: fc.Arbitrary<unknown>,
): { fast: number; invalid: number } {
  const seen = { fast: 0, invalid: 0 };
  fc.assert(
    fc.property(arb, (raw) => {
      const value = wire(raw);
      const quick = fast(value);
      const checked = schema.safeParse(value);
      if (quick === undefined) {
        assert.equal(checked.success, false, `valid, but left to the schema: ${JSON.stringify(value)}`);
        seen.invalid++;
      } else {
        assert.ok(checked.success, `the fast path took what the schema refuses: ${JSON.stringify(value)}`);
        assert.deepEqual(quick, toSame(checked.data));
        seen.fast++;
      }
    }),
    { numRuns: 3000 },
  );
  return seen;
}

test('the state body: stateBodyFast and the StateBody schema agree', () => {
  const seen = agree(stateBodyFast, StateBody, (d) => d, body);
  assert.ok(seen.fast > 50 && seen.invalid > 50, JSON.stringify(seen));
});

test('the id owners file: ownersFast and the OwnersFile schema agree', () => {
  const entry = mostly(
    fc.record({ uid, seen: num, ...extra }, { requiredKeys: ['uid', 'seen'] }),
    null,
    [1],
    {
      uid: 0,
    },
  );
  const file = fc.record(
    {
      format: mostly(fc.constant('luod-id-owners-v1'), 'luod-id-owners-v2'),
      owners: mostly(fc.dictionary(fc.string({ maxLength: 6 }), entry, { maxKeys: 4 }), [], null),
      ...extra,
    },
    { requiredKeys: ['format', 'owners'] },
  );
  const seen = agree(ownersFast, OwnersFile, (d) => Object.entries((d as { owners: object }).owners), file);
  assert.ok(seen.fast > 50 && seen.invalid > 50, JSON.stringify(seen));
});
