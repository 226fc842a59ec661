/**
 * /dev/liveupdate itself: exclusive open, and the ioctl dispatch of
 * luo_ioctl() (kernel/liveupdate/luo_core.c) as observed on a real 7.2.13
 * kernel: range check on _IOC_NR (EINVAL, whatever the type byte), then
 * get_user of the size (EFAULT), then the exact command match (ENOTTY), then
 * size < struct (EINVAL), then copy_struct_from_user (E2BIG for non-zero
 * bytes the kernel does not know).
 */
import { isCloseOnExec, setCloseOnExec } from '../../src/sys/index.js';
import { LIVEUPDATE_IOCTL_CREATE_SESSION, LIVEUPDATE_IOCTL_RETRIEVE_SESSION } from '../../src/uapi/index.js';
import { create, FIOCLEX, FIONCLEX, getName, ioc, poke, raw, sessionArg, sized } from './helpers.js';
import type { Scenario } from './types.js';

const CREATE = LIVEUPDATE_IOCTL_CREATE_SESSION;
const RETRIEVE = LIVEUPDATE_IOCTL_RETRIEVE_SESSION;

const hex = (n: number): string => `0x${(n >>> 0).toString(16)}`;

export const deviceScenarios: Scenario[] = [
  {
    id: 'device/exclusive-open',
    rule: 'While one fd holds /dev/liveupdate open, a second open fails with EBUSY.',
    run(ctx) {
      ctx.expect('open #1', () => ctx.openDevice(), 'ok');
      ctx.expect('open #2 while #1 is open', () => ctx.openDevice(), 'EBUSY');
    },
  },
  {
    id: 'device/reopen-after-close',
    rule: 'Closing the device fd releases the exclusive open: the next open succeeds.',
    run(ctx) {
      const first = ctx.expect('open #1', () => ctx.openDevice(), 'ok');
      ctx.expect('close #1', () => first.close(), 'ok');
      const second = ctx.expect('open #2 after close', () => ctx.openDevice(), 'ok');
      ctx.expect('open #3 while #2 is open', () => ctx.openDevice(), 'EBUSY');
      second.close();
      ctx.expect('open #4 after closing #2', () => ctx.openDevice(), 'ok');
    },
  },
  {
    id: 'device/ioctl-out-of-range-einval',
    rule: 'On the device, a command whose number (_IOC_NR) is not 0x00 or 0x01 gives EINVAL whatever its type byte and direction bits, session commands included.',
    run(ctx) {
      const device = ctx.openDevice();
      for (const request of [0xba02, 0xba3f, 0xba40, 0xba41, 0xba42, 0xba43, 0xbaff, 0x1202, 0xc048ba02]) {
        raw(
          ctx,
          `ioctl ${hex(request)} on the device`,
          { fd: device.fd, request, arg: sessionArg(ctx.name('range')), outFd: true },
          'EINVAL',
        );
      }
    },
  },
  {
    id: 'device/ioctl-wrong-type-enotty',
    rule: 'On the device, a command with an in-range number (0x00, 0x01) but another type byte, direction or size bits gives ENOTTY.',
    run(ctx) {
      const device = ctx.openDevice();
      const requests = [
        0x1200,
        0x1201,
        0xbb00,
        ioc(3, 0xba, 0x00, 72), // _IOWR(0xBA, 0, 72) = 0xc048ba00
        ioc(2, 0xba, 0x01, 72), // _IOR(0xBA, 1, 72) = 0x8048ba01
        ioc(1, 0xba, 0x00, 72), // _IOW(0xBA, 0, 72) = 0x4048ba00
        ioc(0, 0xba, 0x00, 72), // size bits only = 0x0048ba00
      ];
      for (const request of requests) {
        raw(
          ctx,
          `ioctl ${hex(request)} on the device`,
          { fd: device.fd, request, arg: sessionArg(ctx.name('type')), outFd: true },
          'ENOTTY',
        );
      }
      // Nothing was created by any of them.
      create(ctx, device, ctx.name('type'), 'CREATE_SESSION with the name the refused calls carried');
    },
  },
  {
    id: 'device/fioclex',
    rule: 'FIOCLEX and FIONCLEX are handled by the VFS before LUO: on the device and on session fds they succeed and set/clear close-on-exec.',
    run(ctx) {
      const device = ctx.openDevice();
      const session = create(ctx, device, ctx.name('s'));
      for (const [what, fd] of [
        ['device', device.fd],
        ['session', session.fd],
      ] as const) {
        setCloseOnExec(fd, false);
        raw(ctx, `FIOCLEX on the ${what} fd`, { fd, request: FIOCLEX, arg: null }, 'ok');
        ctx.equal(`${what} fd is close-on-exec after FIOCLEX`, isCloseOnExec(fd), true);
        raw(ctx, `FIONCLEX on the ${what} fd`, { fd, request: FIONCLEX, arg: null }, 'ok');
        ctx.equal(`${what} fd is not close-on-exec after FIONCLEX`, isCloseOnExec(fd), false);
        setCloseOnExec(fd, true);
      }
    },
  },
  {
    id: 'device/size-too-small-einval',
    rule: 'A size field smaller than the 72-byte struct gives EINVAL (CREATE and RETRIEVE) and creates nothing.',
    run(ctx) {
      const device = ctx.openDevice();
      const name = ctx.name('small');
      for (const size of [0, 4, 8, 71]) {
        raw(
          ctx,
          `CREATE_SESSION size ${size}`,
          { fd: device.fd, request: CREATE, arg: sized(sessionArg(name), size, 72), outFd: true },
          'EINVAL',
        );
      }
      raw(
        ctx,
        'RETRIEVE_SESSION size 71',
        { fd: device.fd, request: RETRIEVE, arg: sized(sessionArg(name), 71, 72), outFd: true },
        'EINVAL',
      );
      raw(
        ctx,
        'RETRIEVE_SESSION size 72 (control: passes the size check)',
        { fd: device.fd, request: RETRIEVE, arg: sessionArg(name), outFd: true },
        'ENOENT',
      );
      create(ctx, device, name, 'CREATE_SESSION with a correct size: the name was never taken');
    },
  },
  {
    id: 'device/size-larger-zero-padded',
    rule: 'A size field larger than the struct is accepted when the extra bytes are zero (80, 4096 and 8192 bytes); the kernel writes back only its own 72 bytes.',
    run(ctx) {
      const device = ctx.openDevice();
      for (const size of [80, 4096, 8192]) {
        const name = ctx.name(`pad${size}`);
        const arg = sized(sessionArg(name), size);
        const fd = raw(
          ctx,
          `CREATE_SESSION size ${size}`,
          { fd: device.fd, request: CREATE, arg, outFd: true },
          'ok',
        );
        ctx.equal(`size ${size}: an fd came back`, fd !== undefined, true);
        if (fd) ctx.equal(`size ${size}: GET_NAME of the new session`, getName(ctx, fd.fd), name);
        ctx.equal(
          `size ${size}: bytes beyond 72 untouched`,
          arg.subarray(72).every((b) => b === 0),
          true,
        );
        ctx.equal(`size ${size}: size field untouched`, arg.readUInt32LE(0), size);
      }
      raw(
        ctx,
        'RETRIEVE_SESSION size 80, unknown name',
        { fd: device.fd, request: RETRIEVE, arg: sized(sessionArg(ctx.name('nope')), 80), outFd: true },
        'ENOENT',
      );
    },
  },
  {
    id: 'device/size-nonzero-tail-e2big',
    rule: 'Non-zero bytes beyond the 72-byte struct but within the size field give E2BIG and create nothing; bytes beyond the size field are never read.',
    run(ctx) {
      const device = ctx.openDevice();
      const name = ctx.name('tail');
      const cases: Array<[number, number]> = [
        [80, 72],
        [80, 79],
        [4096, 4095],
        [8192, 8191],
      ];
      for (const [size, at] of cases) {
        raw(
          ctx,
          `CREATE_SESSION size ${size}, byte ${at} non-zero`,
          { fd: device.fd, request: CREATE, arg: poke(sized(sessionArg(name), size), at), outFd: true },
          'E2BIG',
        );
      }
      raw(
        ctx,
        'RETRIEVE_SESSION size 80, byte 75 non-zero',
        { fd: device.fd, request: RETRIEVE, arg: poke(sized(sessionArg(name), 80), 75), outFd: true },
        'E2BIG',
      );
      raw(
        ctx,
        'CREATE_SESSION size 72 with non-zero bytes after the struct in memory',
        {
          fd: device.fd,
          request: CREATE,
          arg: poke(poke(sized(sessionArg(name), 72, 96), 72), 95),
          outFd: true,
        },
        'ok',
      );
    },
  },
  {
    id: 'device/null-argument',
    rule: 'A NULL argument gives EFAULT for any in-range command number (read of the size field), including one with the wrong type byte; an out-of-range number gives EINVAL first.',
    run(ctx) {
      const device = ctx.openDevice();
      const cases: Array<[number, 'EFAULT' | 'EINVAL']> = [
        [CREATE, 'EFAULT'],
        [RETRIEVE, 'EFAULT'],
        [0x1200, 'EFAULT'],
        [ioc(3, 0xba, 0x00, 72), 'EFAULT'],
        [0xba02, 'EINVAL'],
        [0xba40, 'EINVAL'],
      ];
      for (const [request, expected] of cases) {
        raw(ctx, `ioctl ${hex(request)} with NULL`, { fd: device.fd, request, arg: null }, expected);
      }
    },
  },
];
