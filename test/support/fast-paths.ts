/**
 * The property test of luokit's hand-checked fast paths against their zod
 * schemas (the validators of record): generators of mostly valid values with
 * near misses at every field, and `agree`, which holds a fast path and its
 * schema to the same answer on them.
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';

/** As a file gives it: JSON (no undefined, no NaN, no -0). */
export const wire = (value: unknown) => JSON.parse(JSON.stringify(value) ?? 'null') as unknown;

/**
 * Generators of mostly valid values of each kind, each valid value drawn with
 * `validWeight` against 1 for each of the kind's near misses: 20 for a file of
 * a few fields, more for one of many (an update record), where a miss at any
 * field makes the whole invalid.
 */
export function withNearMisses(validWeight: number) {
  const mostly = <T>(valid: fc.Arbitrary<T>, ...misses: unknown[]) =>
    fc.oneof(
      { arbitrary: valid as fc.Arbitrary<unknown>, weight: validWeight },
      ...misses.map((m) => ({ arbitrary: fc.constant(m), weight: 1 })),
    );
  const str = mostly(fc.string({ maxLength: 8 }), 3, null);
  const num = mostly(
    fc.oneof(fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true })),
    'x',
    null,
    Number.NaN,
    Number.POSITIVE_INFINITY,
  );
  const uid = mostly(fc.nat(), -1, 1.5, 2 ** 60, '0');
  const bool = mostly(fc.boolean(), 'true', 0);
  /** A list; its near misses include a hole (undefined in memory, null on the wire). */
  const list = <T>(arb: fc.Arbitrary<T>) =>
    mostly(fc.array(arb, { maxLength: 4 }), 'not a list', {}, new Array(1));
  /** A timeline's phase mark (daemon/handover-state.ts PhaseMark). */
  const mark = mostly(
    fc.record({ phase: str, at: num, client: opt(str), ...extra }, { requiredKeys: ['phase', 'at'] }),
    'claim',
    { at: 1 },
  );
  return { mostly, str, num, uid, bool, list, mark };
}

/** An optional field: absent, present as undefined, or present. */
export const opt = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: undefined });
/** A key no schema knows: dropped by both. */
export const extra = { extra: opt(fc.string()) };

/**
 * Whatever `fast` accepts the schema accepts with the same result (deep-equal
 * and the same JSON text, so the same key order), and whatever the schema
 * accepts `fast` accepts. `onWire`: the values as a file gives them (else as
 * they are in memory, undefined and NaN included). Returns how many values
 * each side took, for the caller to check that both were exercised.
 */
export function agree<T>(
  fast: (v: unknown) => T | undefined,
  schema: { safeParse(v: unknown): { success: boolean; data?: unknown } },
  toSame: (parsed: unknown) => unknown,
  arb: fc.Arbitrary<unknown>,
  { onWire = true, numRuns = 3000 } = {},
): { fast: number; invalid: number } {
  const seen = { fast: 0, invalid: 0 };
  fc.assert(
    fc.property(arb, (raw) => {
      const value = onWire ? wire(raw) : raw;
      const quick = fast(value);
      const checked = schema.safeParse(value);
      if (quick === undefined) {
        assert.equal(checked.success, false, `valid, but left to the schema: ${show(value)}`);
        seen.invalid++;
      } else {
        assert.ok(checked.success, `the fast path took what the schema refuses: ${show(value)}`);
        const same = toSame(checked.data);
        assert.deepEqual(quick, same);
        assert.equal(JSON.stringify(quick), JSON.stringify(same));
        seen.fast++;
      }
    }),
    { numRuns },
  );
  return seen;
}

const show = (value: unknown) => JSON.stringify(value, (_, v) => (v === undefined ? '(undefined)' : v));
