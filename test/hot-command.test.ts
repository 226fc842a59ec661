/**
 * parseHotCommand (the hand-checked SUBSCRIBE, READY and CLAIM luod takes
 * from a thousand VMMs at once) against the Command schema, the validator of
 * record: on every message below, whatever the fast path accepts the schema
 * accepts with the same result, and every valid hot command is accepted by
 * the fast path (so the two never disagree on one of them).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Command, MAX_ID_LENGTH, parseHotCommand } from '../src/protocol/messages.js';

const ids = [
  undefined,
  'vm-1',
  'A_z-09',
  '',
  'a'.repeat(MAX_ID_LENGTH),
  'a'.repeat(MAX_ID_LENGTH + 1),
  'luod-internal',
  'vm 1',
  'vm.1',
  'é',
  7,
  null,
];
const seqs = [undefined, 1, 1.5, -3, 0, 'x', '', 's'.repeat(64), 's'.repeat(65), null, true, {}];
const forces = [undefined, true, false, 'yes', 0, null];
const sessions = [undefined, 1, 8, 9, 0, -1, 1.5, '2', 2 ** 60, null];
const updates = [undefined, 'u-1', '', 'x'.repeat(64), 'x'.repeat(65), 3, null];

function* messages(): Generator<unknown> {
  for (const v of [
    null,
    [],
    'CLAIM',
    3,
    {},
    { cmd: 'CLAIM' },
    { cmd: 'claim', id: 'vm-1' },
    { cmd: 'HELLO' },
  ])
    yield v;
  for (const cmd of ['CLAIM', 'SUBSCRIBE', 'READY', 'HELLO', 'RESUMED'])
    for (const seq of seqs) {
      for (const id of ids) for (const force of forces) yield { cmd, seq, id, force, extra: 'kept out' };
      for (const id of ids) for (const n of sessions) yield { cmd, seq, id, sessions: n };
      for (const update of updates) yield { cmd, seq, update };
    }
}

/** As luod gets it: a JSON line (undefined fields are not in it). */
const wire = (value: unknown) => JSON.parse(JSON.stringify(value)) as unknown;

test('parseHotCommand agrees with the Command schema on every hot command', () => {
  const seen = { fast: 0, schemaOnly: 0, invalid: 0 };
  for (const raw of messages()) {
    const value = wire(raw);
    const fast = parseHotCommand(value);
    const schema = Command.safeParse(value);
    const cmd = (value as { cmd?: unknown } | null)?.cmd;
    const hot = cmd === 'CLAIM' || cmd === 'SUBSCRIBE' || cmd === 'READY';
    if (fast !== undefined) {
      assert.ok(schema.success, `the fast path took what the schema refuses: ${JSON.stringify(value)}`);
      assert.deepEqual(fast, schema.data, JSON.stringify(value));
      seen.fast++;
    } else if (schema.success) {
      assert.ok(!hot, `a valid ${String(cmd)} left to the schema: ${JSON.stringify(value)}`);
      seen.schemaOnly++;
    } else seen.invalid++;
  }
  // The cases above reach all three outcomes, each many times.
  assert.ok(seen.fast > 100 && seen.schemaOnly > 10 && seen.invalid > 1000, JSON.stringify(seen));
});
