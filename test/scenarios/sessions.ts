/**
 * Outgoing sessions in one kernel: names are unique among outgoing sessions,
 * a session lives as long as any fd refers to it, closing the last one
 * unpreserves its files, and the session fd's ioctl dispatch
 * (luo_session_ioctl in kernel/liveupdate/luo_session.c) checks range,
 * NULL, command match, direction, size, in that order.
 */
import { dup, isCloseOnExec } from '../../src/sys/index.js';
import {
  LIVEUPDATE_SESSION_FINISH,
  LIVEUPDATE_SESSION_GET_NAME,
  LIVEUPDATE_SESSION_PRESERVE_FD,
  LIVEUPDATE_SESSION_RETRIEVE_FD,
} from '../../src/uapi/index.js';
import {
  create,
  fdArg,
  finishArg,
  getName,
  getNameArg,
  ioc,
  memfd,
  pageWithText,
  poke,
  raw,
  sized,
} from './helpers.js';
import type { Scenario } from './types.js';

const PRESERVE = LIVEUPDATE_SESSION_PRESERVE_FD;
const RETRIEVE_FD = LIVEUPDATE_SESSION_RETRIEVE_FD;
const FINISH = LIVEUPDATE_SESSION_FINISH;
const GET_NAME = LIVEUPDATE_SESSION_GET_NAME;

const hex = (n: number): string => `0x${(n >>> 0).toString(16)}`;

export const sessionScenarios: Scenario[] = [
  {
    id: 'sessions/duplicate-eexist',
    rule: 'Creating a session with the name of an existing outgoing session gives EEXIST.',
    run(ctx) {
      const device = ctx.openDevice();
      const name = ctx.name('dup');
      create(ctx, device, name);
      ctx.expect(`CREATE_SESSION ${name} again`, () => device.createSession(name), 'EEXIST');
    },
  },
  {
    id: 'sessions/distinct',
    rule: 'Sessions with different names coexist, each with its own fd and name.',
    run(ctx) {
      const device = ctx.openDevice();
      const a = create(ctx, device, ctx.name('a'));
      const b = create(ctx, device, ctx.name('b'));
      ctx.equal('the two session fds differ', a.fd !== b.fd, true);
      ctx.equal('GET_NAME of a', a.getName(), ctx.name('a'));
      ctx.equal('GET_NAME of b', b.getName(), ctx.name('b'));
    },
  },
  {
    id: 'sessions/fd-cloexec',
    rule: 'CREATE_SESSION returns a close-on-exec fd.',
    run(ctx) {
      const device = ctx.openDevice();
      const session = create(ctx, device, ctx.name('s'));
      ctx.equal('session fd is close-on-exec', isCloseOnExec(session.fd), true);
    },
  },
  {
    id: 'sessions/name-free-after-close',
    rule: 'Closing an outgoing session removes it: its name can be created again.',
    run(ctx) {
      const device = ctx.openDevice();
      const name = ctx.name('again');
      const first = create(ctx, device, name, 'CREATE_SESSION #1');
      first.close();
      create(ctx, device, name, 'CREATE_SESSION #2 after closing #1');
    },
  },
  {
    id: 'sessions/retrieve-unknown-enoent',
    rule: 'RETRIEVE_SESSION of a name the previous kernel did not hand over gives ENOENT, even when an outgoing session of that name exists.',
    run(ctx) {
      const device = ctx.openDevice();
      const name = ctx.name('out');
      ctx.expect(`RETRIEVE_SESSION ${name}`, () => device.retrieveSession(name), 'ENOENT');
      create(ctx, device, name);
      ctx.expect(`RETRIEVE_SESSION ${name} (it is outgoing)`, () => device.retrieveSession(name), 'ENOENT');
    },
  },
  {
    id: 'sessions/close-unpreserves',
    rule: 'Closing a session fd unpreserves its files: a memfd that was EBUSY in another session can then be preserved there.',
    run(ctx) {
      const device = ctx.openDevice();
      const first = create(ctx, device, ctx.name('1'));
      const second = create(ctx, device, ctx.name('2'));
      const file = memfd(ctx, 'guest', pageWithText('close-unpreserves'));
      ctx.expect('PRESERVE_FD in session 1', () => first.preserveFd(file, 1n), 'ok');
      ctx.expect('PRESERVE_FD in session 2 while preserved in 1', () => second.preserveFd(file, 1n), 'EBUSY');
      first.close();
      ctx.expect('PRESERVE_FD in session 2 after closing session 1', () => second.preserveFd(file, 1n), 'ok');
    },
  },
  {
    id: 'sessions/outlive-device',
    rule: 'Sessions outlive the device fd: after it is closed they still take PRESERVE_FD and GET_NAME, and their names stay taken.',
    run(ctx) {
      const device = ctx.openDevice();
      const name = ctx.name('s');
      const session = create(ctx, device, name);
      device.close();
      ctx.expect('GET_NAME after the device is closed', () => session.getName(), 'ok');
      const file = memfd(ctx, 'guest', pageWithText('outlive-device'));
      ctx.expect('PRESERVE_FD after the device is closed', () => session.preserveFd(file, 7n), 'ok');
      const again = ctx.openDevice();
      ctx.expect(`CREATE_SESSION ${name} on the reopened device`, () => again.createSession(name), 'EEXIST');
      session.close();
      create(ctx, again, name, `CREATE_SESSION ${name} after closing the session`);
    },
  },
  {
    id: 'sessions/last-reference',
    rule: "A session lives while any fd refers to it: closing one of two dup'd fds keeps its files preserved; closing the last one unpreserves them.",
    run(ctx) {
      const device = ctx.openDevice();
      const session = create(ctx, device, ctx.name('held'));
      const other = create(ctx, device, ctx.name('other'));
      const copy = ctx.track(dup(session.fd));
      const file = memfd(ctx, 'guest', pageWithText('last-reference'));
      ctx.expect('PRESERVE_FD in the session', () => session.preserveFd(file, 1n), 'ok');
      session.close();
      ctx.equal('GET_NAME through the remaining dup', getName(ctx, copy.fd), ctx.name('held'));
      ctx.expect('PRESERVE_FD elsewhere while the dup is open', () => other.preserveFd(file, 1n), 'EBUSY');
      copy.close();
      ctx.expect('PRESERVE_FD elsewhere after the last fd is closed', () => other.preserveFd(file, 1n), 'ok');
    },
  },
  {
    id: 'sessions/ioctl-dispatch',
    rule: 'On a session fd, a number outside 0x40..0x43 gives EINVAL whatever its type byte (device commands included), an in-range number with other type/direction/size bits gives ENOTTY, and NULL gives EFAULT only for in-range numbers.',
    run(ctx) {
      const device = ctx.openDevice();
      const session = create(ctx, device, ctx.name('s'));
      for (const request of [0xba00, 0xba01, 0xba3f, 0xba44, 0xbaff, 0x1244, 0xc048ba44]) {
        raw(ctx, `ioctl ${hex(request)}`, { fd: session.fd, request, arg: getNameArg() }, 'EINVAL');
      }
      for (const request of [0x1240, 0x1243, 0xbb43, ioc(3, 0xba, 0x43, 72), ioc(2, 0xba, 0x41, 16)]) {
        raw(ctx, `ioctl ${hex(request)}`, { fd: session.fd, request, arg: getNameArg() }, 'ENOTTY');
      }
      const nulls: Array<[number, 'EFAULT' | 'EINVAL']> = [
        [GET_NAME, 'EFAULT'],
        [PRESERVE, 'EFAULT'],
        [0x1243, 'EFAULT'],
        [0xba44, 'EINVAL'],
        [0xba00, 'EINVAL'],
      ];
      for (const [request, expected] of nulls) {
        raw(ctx, `ioctl ${hex(request)} with NULL`, { fd: session.fd, request, arg: null }, expected);
      }
    },
  },
  {
    id: 'sessions/check-order',
    rule: 'Session ioctl checks run in the kernel order observed on 7.2.13: NULL (EFAULT) before direction (EINVAL) before size (EINVAL/E2BIG), and a duplicate token (EEXIST) before the fd is looked up (EBADF).',
    run(ctx) {
      const device = ctx.openDevice();
      const session = create(ctx, device, ctx.name('s'));
      const fd = session.fd;
      raw(
        ctx,
        'RETRIEVE_FD with NULL on an outgoing session',
        { fd, request: RETRIEVE_FD, arg: null },
        'EFAULT',
      );
      raw(ctx, 'FINISH with NULL on an outgoing session', { fd, request: FINISH, arg: null }, 'EFAULT');
      raw(
        ctx,
        'RETRIEVE_FD on an outgoing session, size 24 with a non-zero tail (direction first)',
        { fd, request: RETRIEVE_FD, arg: poke(sized(fdArg(0, 1n), 24), 20), outFd: true },
        'EINVAL',
      );
      raw(
        ctx,
        'FINISH on an outgoing session, size 16 with a non-zero tail (direction first)',
        { fd, request: FINISH, arg: poke(sized(finishArg(), 16), 12) },
        'EINVAL',
      );
      raw(
        ctx,
        'PRESERVE_FD, size 24 with a non-zero tail (right direction: E2BIG)',
        { fd, request: PRESERVE, arg: poke(sized(fdArg(-1, 1n), 24), 20) },
        'E2BIG',
      );
      raw(
        ctx,
        'PRESERVE_FD, size 15',
        { fd, request: PRESERVE, arg: sized(fdArg(-1, 1n), 15, 16) },
        'EINVAL',
      );
      const file = memfd(ctx, 'guest', pageWithText('check-order'));
      ctx.expect('PRESERVE_FD token 5', () => session.preserveFd(file, 5n), 'ok');
      raw(
        ctx,
        'PRESERVE_FD fd -1 with the used token 5',
        { fd, request: PRESERVE, arg: fdArg(-1, 5n) },
        'EEXIST',
      );
      raw(
        ctx,
        'PRESERVE_FD fd -1 with a new token 6',
        { fd, request: PRESERVE, arg: fdArg(-1, 6n) },
        'EBADF',
      );
    },
  },
  {
    id: 'sessions/get-name-struct',
    rule: 'GET_NAME checks its struct like every LUO ioctl: reserved != 0 gives EINVAL, size 71 gives EINVAL, a zero-padded larger struct works, a non-zero tail gives E2BIG.',
    run(ctx) {
      const device = ctx.openDevice();
      const name = ctx.name('gn');
      const session = create(ctx, device, name);
      const fd = session.fd;
      raw(ctx, 'GET_NAME reserved 1', { fd, request: GET_NAME, arg: getNameArg(1) }, 'EINVAL');
      raw(ctx, 'GET_NAME size 71', { fd, request: GET_NAME, arg: sized(getNameArg(), 71, 72) }, 'EINVAL');
      raw(
        ctx,
        'GET_NAME size 80, non-zero byte 76',
        { fd, request: GET_NAME, arg: poke(sized(getNameArg(), 80), 76) },
        'E2BIG',
      );
      const padded = sized(getNameArg(), 80);
      raw(ctx, 'GET_NAME size 80, zero-padded', { fd, request: GET_NAME, arg: padded }, 'ok');
      const field = padded.subarray(8, 72);
      ctx.equal('the name it wrote', field.subarray(0, field.indexOf(0)).toString('utf8'), name);
      ctx.equal(
        'bytes beyond 72 untouched',
        padded.subarray(72).every((b) => b === 0),
        true,
      );
    },
  },
];
