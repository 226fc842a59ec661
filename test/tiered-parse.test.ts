/**
 * tieredSafeParse (src/sys/tiered-parse.ts): zod's interpreter for a schema's
 * first parses, its compiled fast path after; the same verdicts either way.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { Command } from '../src/protocol/messages.js';
import { tieredSafeParse } from '../src/sys/tiered-parse.js';

test('the first 16 parses of a schema are interpreted (jitless), later ones compiled', () => {
  const seen: unknown[] = [];
  const schema = {
    safeParse: (_value: unknown, params?: { jitless?: boolean }) => {
      seen.push(params?.jitless ?? false);
      return { success: true };
    },
  };
  for (let i = 0; i < 20; i++) tieredSafeParse(schema, i);
  assert.deepEqual(seen, [...Array(16).fill(true), false, false, false, false]);
  // Counted per schema.
  const other: unknown[] = [];
  tieredSafeParse({ safeParse: (_v: unknown, p?: { jitless?: boolean }) => other.push(p?.jitless) }, 0);
  assert.deepEqual(other, [true]);
});

test("interpreted and compiled parses of luod's commands agree on any message", () => {
  const message = fc.oneof(
    fc.record(
      {
        cmd: fc.constantFrom(
          'HELLO',
          'SUBSCRIBE',
          'READY',
          'CLAIM',
          'STATUS',
          'UPDATE',
          'RESUMED',
          'LOAD',
          'NOPE',
        ),
        id: fc.oneof(fc.string({ maxLength: 60 }), fc.integer()),
        update: fc.string({ maxLength: 40 }),
        seq: fc.oneof(fc.integer(), fc.string()),
        sessions: fc.integer({ min: -2, max: 20 }),
        versions: fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 3 }),
        paused_at: fc.integer(),
        resumed_at: fc.integer(),
        timeout_ms: fc.oneof(fc.integer(), fc.double()),
      },
      { requiredKeys: ['cmd'] },
    ),
    fc.anything(),
  );
  // Past the interpreted parses, so that both paths are compared.
  for (let i = 0; i < 20; i++) tieredSafeParse(Command, { cmd: 'STATUS' });
  fc.assert(
    fc.property(message, (value) => {
      const interpreted = Command.safeParse(value, { jitless: true });
      const compiled = tieredSafeParse(Command, value);
      assert.equal(compiled.success, interpreted.success);
      if (compiled.success && interpreted.success) assert.deepEqual(compiled.data, interpreted.data);
      else assert.deepEqual(compiled.error?.issues, interpreted.error?.issues);
    }),
    { numRuns: 2000 },
  );
});
