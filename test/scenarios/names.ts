/**
 * Session names: a 64-byte field that must hold a NUL (1..63 bytes of name).
 * CREATE_SESSION validates with strnlen (luo_session_create); RETRIEVE_SESSION
 * only compares with strncmp, so a name CREATE would refuse is simply not
 * found. The device API refuses bad names before the kernel sees them, so
 * these scenarios send the raw struct.
 */
import { LIVEUPDATE_IOCTL_CREATE_SESSION, LIVEUPDATE_IOCTL_RETRIEVE_SESSION } from '../../src/uapi/index.js';
import { create, getName, raw, sessionArg } from './helpers.js';
import type { Scenario } from './types.js';

const CREATE = LIVEUPDATE_IOCTL_CREATE_SESSION;
const RETRIEVE = LIVEUPDATE_IOCTL_RETRIEVE_SESSION;

/** `prefix` padded with 'x' to exactly `bytes` bytes. */
function padded(prefix: string, bytes: number): string {
  return prefix + 'x'.repeat(bytes - Buffer.byteLength(prefix));
}

export const nameScenarios: Scenario[] = [
  {
    id: 'names/length-1-and-63',
    rule: 'Names of 1 byte and of 63 bytes are accepted, and GET_NAME returns them exactly.',
    run(ctx) {
      const device = ctx.openDevice();
      const short = create(ctx, device, 'n', 'CREATE_SESSION 1-byte name "n"');
      ctx.equal('GET_NAME of the 1-byte session', short.getName(), 'n');
      short.close();
      const long = padded(ctx.name('63-'), 63);
      const session = create(ctx, device, long, 'CREATE_SESSION 63-byte name');
      ctx.equal('GET_NAME of the 63-byte session', session.getName(), long);
    },
  },
  {
    id: 'names/create-empty-einval',
    rule: 'CREATE_SESSION with an empty name gives EINVAL.',
    run(ctx) {
      const device = ctx.openDevice();
      raw(
        ctx,
        'CREATE_SESSION ""',
        { fd: device.fd, request: CREATE, arg: sessionArg(''), outFd: true },
        'EINVAL',
      );
    },
  },
  {
    id: 'names/create-unterminated-einval',
    rule: 'CREATE_SESSION with all 64 name bytes non-NUL (no terminator) gives EINVAL.',
    run(ctx) {
      const device = ctx.openDevice();
      raw(
        ctx,
        'CREATE_SESSION 64 x "X", no NUL',
        { fd: device.fd, request: CREATE, arg: sessionArg(Buffer.alloc(64, 'X')), outFd: true },
        'EINVAL',
      );
      // A 63-byte prefix of it is a valid name, and was not taken by the refused call.
      create(ctx, device, 'X'.repeat(63), 'CREATE_SESSION 63 x "X"');
    },
  },
  {
    id: 'names/retrieve-does-not-validate',
    rule: 'RETRIEVE_SESSION does not validate the name: empty, unterminated and unknown 63-byte names all give ENOENT (not EINVAL).',
    run(ctx) {
      const device = ctx.openDevice();
      const cases: Array<[string, Buffer]> = [
        ['""', sessionArg('')],
        ['64 x "X", no NUL', sessionArg(Buffer.alloc(64, 'X'))],
        ['unknown 63-byte name', sessionArg(padded(ctx.name('r-'), 63))],
        ['unknown 1-byte name', sessionArg('r')],
      ];
      for (const [what, arg] of cases) {
        raw(
          ctx,
          `RETRIEVE_SESSION ${what}`,
          { fd: device.fd, request: RETRIEVE, arg, outFd: true },
          'ENOENT',
        );
      }
    },
  },
  {
    id: 'names/bytes-after-nul-ignored',
    rule: 'A name ends at its first NUL: "abc\\0xyz" creates the session "abc", so CREATE "abc" then gives EEXIST.',
    run(ctx) {
      const device = ctx.openDevice();
      const base = ctx.name('nul');
      const bytes = Buffer.concat([Buffer.from(base), Buffer.from([0]), Buffer.from('trailing-garbage')]);
      const fd = raw(
        ctx,
        'CREATE_SESSION "<name>\\0trailing-garbage"',
        { fd: device.fd, request: CREATE, arg: sessionArg(bytes), outFd: true },
        'ok',
      );
      if (fd) ctx.equal('GET_NAME of the new session', getName(ctx, fd.fd), base);
      ctx.expect('CREATE_SESSION <name> again', () => device.createSession(base), 'EEXIST');
    },
  },
  {
    id: 'names/utf8-bytes',
    rule: 'The limit is in bytes, not characters: a 63-byte UTF-8 name is accepted and returned byte for byte, a 64-byte one gives EINVAL.',
    run(ctx) {
      const device = ctx.openDevice();
      const fits = `${'é'.repeat(31)}x`; // 63 bytes
      const session = create(ctx, device, fits, 'CREATE_SESSION 31 x "é" + "x" (63 bytes)');
      ctx.equal('GET_NAME returns the UTF-8 name', session.getName(), fits);
      raw(
        ctx,
        'CREATE_SESSION 32 x "é" (64 bytes, no room for NUL)',
        { fd: device.fd, request: CREATE, arg: sessionArg(Buffer.from('é'.repeat(32))), outFd: true },
        'EINVAL',
      );
    },
  },
];
