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
import { agree, extra, opt, withNearMisses } from './support/fast-paths.js';

const { mostly, str, num, uid, bool, list, mark } = withNearMisses(20);

const client = mostly(
  fc.record(
    { id: str, uid, sessions: list(str), claimed: bool, ...extra },
    { requiredKeys: ['id', 'uid', 'sessions', 'claimed'] },
  ),
  null,
  [],
  { id: 'vm-1', uid: 0, sessions: [] },
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
