import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  decodeFdArg,
  decodeFinishArg,
  decodeGetNameArg,
  decodeSessionArg,
  encodeFdArg,
  encodeFinishArg,
  encodeGetNameArg,
  encodeSessionArg,
  FD_ARG_SIZE,
  FINISH_ARG_SIZE,
  GET_NAME_ARG_SIZE,
  SESSION_ARG_SIZE,
} from '../src/uapi/structs.js';

/** `n` zero bytes, for the tail of a name field. */
const zeros = (n: number): number[] => new Array<number>(n).fill(0);
const U64_MAX = (1n << 64n) - 1n;

test('struct sizes match include/uapi/linux/liveupdate.h', () => {
  assert.equal(SESSION_ARG_SIZE, 4 + 4 + 64);
  assert.equal(FD_ARG_SIZE, 4 + 4 + 8);
  assert.equal(FINISH_ARG_SIZE, 4 + 4);
  assert.equal(GET_NAME_ARG_SIZE, 4 + 4 + 64);
});

test('create/retrieve session arg: encode by hand-computed bytes', () => {
  const expected = [
    ...[0x48, 0x00, 0x00, 0x00], // 0: u32 size = 72
    ...[0x00, 0x00, 0x00, 0x00], // 4: s32 fd = 0 (output)
    ...[0x76, 0x6d, 0x2d, 0x31], // 8: name "vm-1"
    ...zeros(60), //              12..71: NUL and padding
  ];
  assert.deepEqual([...encodeSessionArg({ name: 'vm-1' })], expected);
});

test('create/retrieve session arg: decode hand-written reply', () => {
  const reply = Uint8Array.from([
    ...[0x48, 0x00, 0x00, 0x00], // 0: size = 72
    ...[0x07, 0x00, 0x00, 0x00], // 4: fd = 7
    ...[0x64, 0x62, 0x00, 0x78], // 8: name "db", NUL, then junk after the NUL that must be ignored
    ...zeros(60),
  ]);
  assert.deepEqual(decodeSessionArg(reply), { size: 72, fd: 7, name: 'db' });
});

test('session arg: negative fd, UTF-8 name and unterminated 64-byte name', () => {
  const bytes = Uint8Array.from([
    ...[0x48, 0x00, 0x00, 0x00], // 0: size = 72
    ...[0xff, 0xff, 0xff, 0xff], // 4: fd = -1
    ...[0xc3, 0xa9], //             8: name "é" (U+00E9 is c3 a9 in UTF-8)
    ...zeros(62),
  ]);
  assert.deepEqual(decodeSessionArg(bytes), { size: 72, fd: -1, name: 'é' });
  assert.deepEqual([...encodeSessionArg({ name: 'é', fd: -1 })], [...bytes]);

  const unterminated = encodeSessionArg({ name: new Uint8Array(64).fill(0x61) });
  assert.equal(unterminated[71], 0x61, 'last name byte is not a NUL');
  assert.equal(decodeSessionArg(unterminated).name, 'a'.repeat(64));
});

test('preserve/retrieve fd arg: encode by hand-computed bytes', () => {
  const expected = [
    ...[0x10, 0x00, 0x00, 0x00], // 0: u32 size = 16
    ...[0x05, 0x00, 0x00, 0x00], // 4: s32 fd = 5
    ...[0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01], // 8: u64 token 0x0102030405060708, little-endian
  ];
  assert.deepEqual([...encodeFdArg({ fd: 5, token: 0x0102030405060708n })], expected);
});

test('preserve/retrieve fd arg: decode hand-written bytes, token 2^64-1', () => {
  const bytes = Uint8Array.from([
    ...[0x10, 0x00, 0x00, 0x00], // 0: size = 16
    ...[0x2a, 0x00, 0x00, 0x00], // 4: fd = 42
    ...[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // 8: token = 2^64-1
  ]);
  assert.deepEqual(decodeFdArg(bytes), { size: 16, fd: 42, token: U64_MAX });
});

test('finish arg: encode and decode by hand', () => {
  assert.deepEqual(
    [...encodeFinishArg()],
    [
      ...[0x08, 0x00, 0x00, 0x00], // 0: u32 size = 8
      ...[0x00, 0x00, 0x00, 0x00], // 4: u32 reserved = 0
    ],
  );
  const bytes = Uint8Array.from([0x08, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x80]); // reserved = 0x80000001
  assert.deepEqual(decodeFinishArg(bytes), { size: 8, reserved: 0x8000_0001 });
});

test('get-name arg: encode request and decode reply by hand', () => {
  assert.deepEqual(
    [...encodeGetNameArg()],
    [
      ...[0x48, 0x00, 0x00, 0x00], // 0: u32 size = 72
      ...[0x00, 0x00, 0x00, 0x00], // 4: u32 reserved = 0
      ...zeros(64), //                8: name (output), empty in the request
    ],
  );
  const reply = Uint8Array.from([
    ...[0x48, 0x00, 0x00, 0x00], // 0: size = 72
    ...[0x00, 0x00, 0x00, 0x00], // 4: reserved
    ...[0x71, 0x65, 0x6d, 0x75], // 8: name "qemu"
    ...zeros(60),
  ]);
  assert.deepEqual(decodeGetNameArg(reply), { size: 72, reserved: 0, name: 'qemu' });
});

test('size can be overridden to test the kernel size rules', () => {
  assert.deepEqual([...encodeFdArg({ token: 1n, size: 8 }).subarray(0, 4)], [0x08, 0x00, 0x00, 0x00]);
  assert.equal(decodeSessionArg(encodeSessionArg({ name: 'x', size: 0xffff_ffff })).size, 0xffff_ffff);
  assert.equal(decodeFinishArg(encodeFinishArg({ size: 4096 })).size, 4096);
  assert.equal(decodeGetNameArg(encodeGetNameArg({ size: 0 })).size, 0);
  assert.equal(encodeFdArg({ token: 1n, size: 8 }).length, FD_ARG_SIZE, 'the buffer keeps the real size');
});

test('decoders read from a view into a larger buffer', () => {
  const outer = new Uint8Array(100);
  outer.set(encodeFdArg({ fd: 3, token: 9n }), 20);
  assert.deepEqual(decodeFdArg(outer.subarray(20, 36)), { size: 16, fd: 3, token: 9n });
});

test('codecs refuse values that do not fit instead of wrapping', () => {
  assert.throws(() => encodeFdArg({ token: -1n }), RangeError);
  assert.throws(() => encodeFdArg({ token: 1n << 64n }), RangeError);
  assert.throws(() => encodeFdArg({ token: 0n, fd: 0x8000_0000 }), RangeError);
  assert.throws(() => encodeFdArg({ token: 0n, fd: 1.5 }), RangeError);
  assert.throws(() => encodeFinishArg({ reserved: -1 }), RangeError);
  assert.throws(() => encodeFinishArg({ size: 2 ** 32 }), RangeError);
  assert.throws(() => encodeSessionArg({ name: 'a'.repeat(65) }), /65 bytes/);
  assert.throws(() => decodeSessionArg(new Uint8Array(71)), /needs 72 bytes, got 71/);
  assert.throws(() => decodeFdArg(new Uint8Array(15)), RangeError);
  assert.throws(() => decodeFinishArg(new Uint8Array(7)), RangeError);
  assert.throws(() => decodeGetNameArg(new Uint8Array(8)), RangeError);
});

const fd = fc.integer({ min: -0x8000_0000, max: 0x7fff_ffff });
const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const token = fc.oneof(fc.constantFrom(0n, 1n, U64_MAX, 1n << 63n), fc.bigInt({ min: 0n, max: U64_MAX }));
/** Valid session names: 1..63 bytes of UTF-8, no NUL, any code points (multibyte included). */
const name = fc
  .string({ unit: 'binary', minLength: 1, maxLength: 40 })
  .filter((s) => !s.includes('\0') && Buffer.byteLength(s) <= 63);

test('property: session arg round trip', () => {
  fc.assert(
    fc.property(fd, name, u32, (fd, name, size) => {
      assert.deepEqual(decodeSessionArg(encodeSessionArg({ fd, name, size })), { size, fd, name });
      assert.equal(decodeSessionArg(encodeSessionArg({ fd, name })).size, SESSION_ARG_SIZE);
    }),
  );
});

test('property: fd arg round trip across the whole u64 token range', () => {
  fc.assert(
    fc.property(fd, token, u32, (fd, token, size) => {
      assert.deepEqual(decodeFdArg(encodeFdArg({ fd, token, size })), { size, fd, token });
      assert.equal(decodeFdArg(encodeFdArg({ fd, token })).size, FD_ARG_SIZE);
    }),
  );
});

test('property: finish arg round trip', () => {
  fc.assert(
    fc.property(u32, u32, (reserved, size) => {
      assert.deepEqual(decodeFinishArg(encodeFinishArg({ reserved, size })), { size, reserved });
      assert.equal(decodeFinishArg(encodeFinishArg({ reserved })).size, FINISH_ARG_SIZE);
    }),
  );
});

test('property: get-name arg round trip', () => {
  fc.assert(
    fc.property(name, u32, u32, (name, reserved, size) => {
      assert.deepEqual(decodeGetNameArg(encodeGetNameArg({ name, reserved, size })), {
        size,
        reserved,
        name,
      });
      assert.equal(decodeGetNameArg(encodeGetNameArg({ name })).size, GET_NAME_ARG_SIZE);
    }),
  );
});
