import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { LuoError } from '../src/uapi/errors.js';
import { checkSessionName, SESSION_NAME_MAX_BYTES, sessionNameProblem, toToken } from '../src/uapi/names.js';

/** Asserts `fn` throws a LuoError EINVAL for `operation` whose reason is exactly `reason`. */
function assertEinval(fn: () => unknown, operation: string, reason: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof LuoError);
    assert.equal(err.code, 'EINVAL');
    assert.equal(err.errno, 22);
    assert.equal(err.operation, operation);
    assert.equal(err.reason, reason);
    assert.equal(err.message, `${operation}: EINVAL: ${reason}`);
    return true;
  });
}

test('the longest name is 63 bytes, leaving room for the NUL', () => {
  assert.equal(SESSION_NAME_MAX_BYTES, 63);
});

test('valid names are returned unchanged', () => {
  for (const name of ['a', 'vm-1', 'x'.repeat(63), 'é'.repeat(31), '€'.repeat(21), '🚀'.repeat(15)]) {
    assert.equal(checkSessionName(name), name);
    assert.equal(sessionNameProblem(name), undefined);
  }
});

test('empty name', () => {
  assertEinval(() => checkSessionName(''), 'CREATE_SESSION', 'session name is empty');
});

test('64 ASCII bytes is one too many', () => {
  assertEinval(
    () => checkSessionName('x'.repeat(64)),
    'CREATE_SESSION',
    'session name is 64 bytes; the kernel allows at most 63',
  );
  assert.equal(sessionNameProblem('x'.repeat(70)), 'session name is 70 bytes; the kernel allows at most 63');
});

test('length counts UTF-8 bytes, not characters', () => {
  // 32 characters but 64 bytes: "é" is two bytes.
  assert.equal(sessionNameProblem('é'.repeat(32)), 'session name is 64 bytes; the kernel allows at most 63');
  // 16 rockets are 16 code points, 32 UTF-16 units and 64 UTF-8 bytes.
  assert.equal(sessionNameProblem('🚀'.repeat(16)), 'session name is 64 bytes; the kernel allows at most 63');
  assert.equal(
    sessionNameProblem('x' + '€'.repeat(21)),
    'session name is 64 bytes; the kernel allows at most 63',
  );
});

test('NUL inside the name', () => {
  assertEinval(() => checkSessionName('a\0b'), 'CREATE_SESSION', 'session name contains a NUL byte');
  assert.equal(sessionNameProblem('\0'), 'session name contains a NUL byte');
});

test('unpaired surrogates cannot be written as UTF-8', () => {
  assert.equal(
    sessionNameProblem('a\ud800'),
    'session name is not valid Unicode (it has an unpaired surrogate)',
  );
  assert.equal(
    sessionNameProblem('\udc00'),
    'session name is not valid Unicode (it has an unpaired surrogate)',
  );
  assert.equal(sessionNameProblem('\ud83d\ude80'), undefined, 'a paired surrogate is fine');
});

test('non-string names', () => {
  assert.equal(sessionNameProblem(42), 'session name must be a string, got number');
  assert.equal(sessionNameProblem(undefined), 'session name must be a string, got undefined');
});

test('the operation is the caller’s', () => {
  assertEinval(() => checkSessionName('', 'RETRIEVE_SESSION'), 'RETRIEVE_SESSION', 'session name is empty');
});

test('property: a name is accepted exactly when it is 1..63 UTF-8 bytes without NUL', () => {
  fc.assert(
    fc.property(fc.string({ unit: 'binary', maxLength: 70 }), (name) => {
      const bytes = Buffer.byteLength(name);
      const ok = bytes >= 1 && bytes <= 63 && !name.includes('\0');
      assert.equal(sessionNameProblem(name) === undefined, ok);
    }),
  );
});

test('tokens: bigints across the u64 range', () => {
  assert.equal(toToken(0n), 0n);
  assert.equal(toToken(1n << 63n), 1n << 63n);
  assert.equal(toToken((1n << 64n) - 1n), (1n << 64n) - 1n);
});

test('tokens: non-negative safe integers become bigints', () => {
  assert.equal(toToken(0), 0n);
  assert.equal(toToken(7), 7n);
  assert.equal(toToken(Number.MAX_SAFE_INTEGER), BigInt(Number.MAX_SAFE_INTEGER));
  assert.equal(typeof toToken(7), 'bigint');
});

test('tokens: out of range or not an integer', () => {
  const must = 'token must be an unsigned 64-bit integer';
  assertEinval(() => toToken(-1n), 'PRESERVE_FD', `${must}; got -1`);
  assertEinval(() => toToken(1n << 64n), 'PRESERVE_FD', `${must}; got 18446744073709551616`);
  assertEinval(() => toToken(-1), 'PRESERVE_FD', `${must}; got -1`);
  assertEinval(() => toToken(1.5), 'PRESERVE_FD', `${must}; got 1.5`);
  assertEinval(() => toToken(Number.NaN), 'PRESERVE_FD', `${must}; got NaN`);
  assertEinval(() => toToken(Number.POSITIVE_INFINITY), 'PRESERVE_FD', `${must}; got Infinity`);
  assertEinval(() => toToken('5'), 'PRESERVE_FD', `${must}; got string`);
  assertEinval(() => toToken(null), 'PRESERVE_FD', `${must}; got null`);
  assertEinval(
    () => toToken(2 ** 53),
    'PRESERVE_FD',
    `${must}; 9007199254740992 is above Number.MAX_SAFE_INTEGER and may have lost precision; pass it as a bigint`,
  );
  assertEinval(() => toToken(-5n, 'RETRIEVE_FD'), 'RETRIEVE_FD', `${must}; got -5`);
});

test('property: every u64 bigint is its own token, every safe non-negative number converts exactly', () => {
  fc.assert(fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), (t) => toToken(t) === t));
  fc.assert(
    fc.property(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), (n) => toToken(n) === BigInt(n)),
  );
  fc.assert(
    fc.property(fc.bigInt({ min: -(1n << 70n), max: -1n }), (t) => {
      assert.throws(() => toToken(t), LuoError);
    }),
  );
});
