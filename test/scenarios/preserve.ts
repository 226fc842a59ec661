/**
 * PRESERVE_FD in one kernel (luo_preserve_file in kernel/liveupdate/luo_file.c,
 * memfd_luo_preserve in mm/memfd_luo.c): direction, tokens, which files have a
 * handler (shmem with no links), one preservation per inode, seals, and the
 * frozen size of a preserved memfd.
 */
import * as fs from 'node:fs';
import {
  addSeals,
  dup,
  F_SEAL_EXEC,
  F_SEAL_FUTURE_WRITE,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  fallocate,
  ftruncate,
  getSeals,
  MFD_ALLOW_SEALING,
  MFD_CLOEXEC,
  MFD_HUGETLB,
  memfdCreate,
  O_RDONLY,
  O_RDWR,
  type OwnedFd,
  open,
  pwrite,
  socketpair,
} from '../../src/sys/index.js';
import { LIVEUPDATE_SESSION_PRESERVE_FD } from '../../src/uapi/index.js';
import {
  create,
  fdArg,
  filesystemOf,
  HUGETLBFS_MAGIC,
  linkedTmpfsFile,
  memfd,
  PAGE,
  pageWithText,
  pattern,
  raw,
  readAll,
  sizeOf,
  tmpfile,
} from './helpers.js';
import type { Scenario } from './types.js';

const PRESERVE = LIVEUPDATE_SESSION_PRESERVE_FD;
const MAX_TOKEN = (1n << 64n) - 1n;

export const preserveScenarios: Scenario[] = [
  {
    id: 'preserve/memfds-stay-usable',
    rule: 'Preserving memfds (with data or empty, in several sessions) leaves their contents readable in this kernel (selftests preserve_memfd, preserve_multiple_memfds, preserve_complex_scenario).',
    run(ctx) {
      const device = ctx.openDevice();
      const one = create(ctx, device, ctx.name('1'));
      const two = create(ctx, device, ctx.name('2'));
      const data1 = Buffer.from('data for session 1');
      const data2 = Buffer.from('data for session 2');
      const full1 = memfd(ctx, 'data1', data1);
      const empty1 = memfd(ctx, 'empty1');
      const full2 = memfd(ctx, 'data2', data2);
      const empty2 = memfd(ctx, 'empty2');
      ctx.expect('PRESERVE_FD data1 0x1111', () => one.preserveFd(full1, 0x1111n), 'ok');
      ctx.expect('PRESERVE_FD empty1 0x2222', () => one.preserveFd(empty1, 0x2222n), 'ok');
      ctx.expect('PRESERVE_FD data2 0x3333', () => two.preserveFd(full2, 0x3333n), 'ok');
      ctx.expect('PRESERVE_FD empty2 0x4444', () => two.preserveFd(empty2, 0x4444n), 'ok');
      ctx.sameBytes('data1 after preserve', readAll(full1, 64), data1);
      ctx.sameBytes('data2 after preserve', readAll(full2, 64), data2);
      ctx.equal('empty1 size', sizeOf(empty1), 0);
      ctx.equal('empty2 size', sizeOf(empty2), 0);
    },
  },
  {
    id: 'preserve/direction-outgoing-only',
    rule: 'On an outgoing (created) session, RETRIEVE_FD and FINISH give EINVAL.',
    run(ctx) {
      const device = ctx.openDevice();
      const session = create(ctx, device, ctx.name('out'));
      const file = memfd(ctx, 'guest', pageWithText('direction'));
      ctx.expect('PRESERVE_FD token 1', () => session.preserveFd(file, 1n), 'ok');
      ctx.expect('RETRIEVE_FD token 1 on the outgoing session', () => session.retrieveFd(1n), 'EINVAL');
      ctx.expect('RETRIEVE_FD unknown token on the outgoing session', () => session.retrieveFd(9n), 'EINVAL');
      ctx.expect('FINISH on the outgoing session', () => session.finish(), 'EINVAL');
    },
  },
  {
    id: 'preserve/token-unique-per-session',
    rule: 'A token already used in the session gives EEXIST; the same token in another session is fine; 0 and 2^64-1 are valid tokens.',
    run(ctx) {
      const device = ctx.openDevice();
      const one = create(ctx, device, ctx.name('1'));
      const two = create(ctx, device, ctx.name('2'));
      const [a, b, c, d] = ['a', 'b', 'c', 'd'].map((l) => memfd(ctx, l, pageWithText(l))) as [
        OwnedFd,
        OwnedFd,
        OwnedFd,
        OwnedFd,
      ];
      ctx.expect('PRESERVE_FD a token 0', () => one.preserveFd(a, 0n), 'ok');
      ctx.expect('PRESERVE_FD b token 2^64-1', () => one.preserveFd(b, MAX_TOKEN), 'ok');
      ctx.expect('PRESERVE_FD c token 0 in the same session', () => one.preserveFd(c, 0n), 'EEXIST');
      ctx.expect(
        'PRESERVE_FD c token 2^64-1 in the same session',
        () => one.preserveFd(c, MAX_TOKEN),
        'EEXIST',
      );
      ctx.expect('PRESERVE_FD c token 0 in another session', () => two.preserveFd(c, 0n), 'ok');
      ctx.expect('PRESERVE_FD d token 1 in the first session', () => one.preserveFd(d, 1n), 'ok');
    },
  },
  {
    id: 'preserve/bad-fd-ebadf',
    rule: 'PRESERVE_FD of an fd number that is not open gives EBADF.',
    run(ctx) {
      const device = ctx.openDevice();
      const session = create(ctx, device, ctx.name('s'));
      const closed = memfdCreate('closed');
      const number = closed.fd;
      closed.close();
      raw(ctx, 'PRESERVE_FD fd -1', { fd: session.fd, request: PRESERVE, arg: fdArg(-1, 1n) }, 'EBADF');
      raw(
        ctx,
        'PRESERVE_FD a just-closed fd',
        { fd: session.fd, request: PRESERVE, arg: fdArg(number, 1n) },
        'EBADF',
      );
      raw(
        ctx,
        'PRESERVE_FD fd 1000000',
        { fd: session.fd, request: PRESERVE, arg: fdArg(1_000_000, 1n) },
        'EBADF',
      );
      // The token was not consumed by the failures.
      const file = memfd(ctx, 'guest', pageWithText('ebadf'));
      ctx.expect('PRESERVE_FD a memfd with token 1', () => session.preserveFd(file, 1n), 'ok');
    },
  },
  {
    id: 'preserve/no-handler-enoent',
    rule: 'Files no LUO handler accepts give ENOENT: /dev/null, a socket, a regular file on disk, a LUO session fd, the device fd.',
    run(ctx) {
      const device = ctx.openDevice();
      const session = create(ctx, device, ctx.name('s'));
      const other = create(ctx, device, ctx.name('other'));
      const devnull = ctx.track(open('/dev/null', O_RDWR));
      const [sock] = socketpair('stream').map((s) => ctx.track(s)) as [OwnedFd, OwnedFd];
      const regular = ctx.track(open(process.execPath, O_RDONLY));
      ctx.expect('PRESERVE_FD /dev/null', () => session.preserveFd(devnull, 1n), 'ENOENT');
      ctx.expect('PRESERVE_FD an AF_UNIX socket', () => session.preserveFd(sock, 2n), 'ENOENT');
      ctx.expect(
        'PRESERVE_FD a regular file (the node binary)',
        () => session.preserveFd(regular, 3n),
        'ENOENT',
      );
      ctx.expect('PRESERVE_FD another session fd', () => session.preserveFd(other.fd, 4n), 'ENOENT');
      ctx.expect('PRESERVE_FD the device fd', () => session.preserveFd(device.fd, 5n), 'ENOENT');
      // ENOENT consumed no token.
      const file = memfd(ctx, 'guest', pageWithText('enoent'));
      ctx.expect('PRESERVE_FD a memfd with token 1', () => session.preserveFd(file, 1n), 'ok');
    },
  },
  {
    id: 'preserve/tmpfs-links',
    rule: 'A tmpfs file that still has a name gives ENOENT; once unlinked, the same open file is accepted (any shmem file with no links is preservable).',
    run(ctx) {
      const device = ctx.openDevice();
      const session = create(ctx, device, ctx.name('s'));
      const { fd, path } = linkedTmpfsFile(ctx, 'linked', pageWithText('tmpfs'));
      ctx.expect('PRESERVE_FD a linked tmpfs file', () => session.preserveFd(fd, 1n), 'ENOENT');
      fs.unlinkSync(path);
      ctx.expect('PRESERVE_FD the same file after unlink', () => session.preserveFd(fd, 1n), 'ok');
    },
  },
  {
    id: 'preserve/o-tmpfile-accepted',
    rule: 'An O_TMPFILE file on tmpfs (shmem, never linked) can be preserved.',
    run(ctx) {
      const device = ctx.openDevice();
      const session = create(ctx, device, ctx.name('s'));
      const fd = tmpfile(ctx, pageWithText('o-tmpfile'));
      ctx.expect('PRESERVE_FD an O_TMPFILE file', () => session.preserveFd(fd, 1n), 'ok');
    },
  },
  {
    id: 'preserve/hugetlb-enoent',
    rule: 'A MFD_HUGETLB memfd gives ENOENT (no hugetlb handler in 7.2).',
    run(ctx) {
      let huge: OwnedFd | undefined;
      let why = '';
      try {
        huge = ctx.track(memfdCreate('huge', MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB));
      } catch (err) {
        why = (err as { code?: string }).code ?? String(err);
      }
      if (huge === undefined) return ctx.infra(`this host cannot create a MFD_HUGETLB memfd (${why})`);
      ctx.equal('the memfd is on hugetlbfs', filesystemOf(huge) === HUGETLBFS_MAGIC, true);
      const device = ctx.openDevice();
      const session = create(ctx, device, ctx.name('s'));
      ctx.expect('PRESERVE_FD a hugetlb memfd', () => session.preserveFd(huge, 1n), 'ENOENT');
    },
  },
  {
    id: 'preserve/one-preservation-per-inode',
    rule: "A preserved memfd gives EBUSY when preserved again under a new token, in the same or another session, through a dup'd fd or a second open of the same inode; a used token is reported (EEXIST) first.",
    run(ctx) {
      const device = ctx.openDevice();
      const one = create(ctx, device, ctx.name('1'));
      const two = create(ctx, device, ctx.name('2'));
      const file = memfd(ctx, 'guest', pageWithText('double'));
      ctx.expect('PRESERVE_FD in session 1 token 0x1111', () => one.preserveFd(file, 0x1111n), 'ok');
      ctx.expect('PRESERVE_FD in session 2 token 0x2222', () => two.preserveFd(file, 0x2222n), 'EBUSY');
      ctx.expect('PRESERVE_FD in session 1 token 0x3333', () => one.preserveFd(file, 0x3333n), 'EBUSY');
      ctx.expect(
        'PRESERVE_FD in session 1 with its used token 0x1111',
        () => one.preserveFd(file, 0x1111n),
        'EEXIST',
      );
      const copy = ctx.track(dup(file));
      ctx.expect("PRESERVE_FD a dup'd fd in session 2", () => two.preserveFd(copy, 0x4444n), 'EBUSY');
      const reopened = ctx.track(open(`/proc/self/fd/${file.fd}`, O_RDWR));
      ctx.expect(
        'PRESERVE_FD a second open file of the inode',
        () => two.preserveFd(reopened, 0x5555n),
        'EBUSY',
      );
      const fresh = memfd(ctx, 'fresh', pageWithText('fresh'));
      ctx.expect(
        'PRESERVE_FD another memfd in session 2 (control)',
        () => two.preserveFd(fresh, 0x2222n),
        'ok',
      );
    },
  },
  {
    id: 'preserve/all-seals-accepted',
    rule: 'A memfd carrying any of the seals memfd-v2 knows (SEAL, SHRINK, GROW, WRITE, FUTURE_WRITE, EXEC), or all of them, can be preserved.',
    run(ctx) {
      const device = ctx.openDevice();
      const session = create(ctx, device, ctx.name('s'));
      const seals: Array<[string, number]> = [
        ['SEAL', F_SEAL_SEAL],
        ['SHRINK', F_SEAL_SHRINK],
        ['GROW', F_SEAL_GROW],
        ['WRITE', F_SEAL_WRITE],
        ['FUTURE_WRITE', F_SEAL_FUTURE_WRITE],
        ['EXEC', F_SEAL_EXEC],
        ['all six', 0x3f],
      ];
      let token = 1n;
      for (const [what, seal] of seals) {
        const file = memfd(ctx, `seal-${what}`, pageWithText(what));
        addSeals(file, seal);
        ctx.equal(`F_GET_SEALS with ${what}`, getSeals(file) & seal, seal);
        ctx.expect(`PRESERVE_FD a memfd sealed ${what}`, () => session.preserveFd(file, token), 'ok');
        token++;
      }
    },
  },
  {
    id: 'preserve/seal-write-pinned-ebusy',
    rule: 'Adding F_SEAL_WRITE to a preserved non-empty memfd gives EBUSY (its pages are pinned), while it works on a preserved empty memfd and other seals work.',
    run(ctx) {
      const device = ctx.openDevice();
      const session = create(ctx, device, ctx.name('s'));
      const full = memfd(ctx, 'full', pattern('seal-write', 2 * PAGE));
      const empty = memfd(ctx, 'empty');
      ctx.expect('PRESERVE_FD the non-empty memfd', () => session.preserveFd(full, 1n), 'ok');
      ctx.expect('PRESERVE_FD the empty memfd', () => session.preserveFd(empty, 2n), 'ok');
      ctx.expect(
        'F_SEAL_WRITE on the preserved non-empty memfd',
        () => addSeals(full, F_SEAL_WRITE),
        'EBUSY',
      );
      ctx.expect('F_SEAL_WRITE on the preserved empty memfd', () => addSeals(empty, F_SEAL_WRITE), 'ok');
      ctx.expect(
        'F_SEAL_FUTURE_WRITE on the preserved non-empty memfd',
        () => addSeals(full, F_SEAL_FUTURE_WRITE),
        'ok',
      );
      ctx.equal('seals of the non-empty memfd', getSeals(full), F_SEAL_FUTURE_WRITE);
    },
  },
  {
    id: 'preserve/unpinned-at-close',
    requires: ['closeReleasesSynchronously'],
    rule: 'Closing the session unpreserves its memfd before close() returns: F_SEAL_WRITE, EBUSY while preserved, succeeds right after.',
    run(ctx) {
      const device = ctx.openDevice();
      const session = create(ctx, device, ctx.name('s'));
      const full = memfd(ctx, 'full', pattern('unpinned', 2 * PAGE));
      ctx.expect('PRESERVE_FD', () => session.preserveFd(full, 1n), 'ok');
      ctx.expect('F_SEAL_WRITE while preserved', () => addSeals(full, F_SEAL_WRITE), 'EBUSY');
      session.close();
      ctx.expect('F_SEAL_WRITE right after closing the session', () => addSeals(full, F_SEAL_WRITE), 'ok');
    },
  },
  {
    id: 'preserve/writes-inside-size',
    rule: 'Writes inside the size of a preserved memfd succeed and read back.',
    run(ctx) {
      const device = ctx.openDevice();
      const session = create(ctx, device, ctx.name('s'));
      const content = pattern('writes-inside', 3 * PAGE);
      const file = memfd(ctx, 'guest', content);
      ctx.expect('PRESERVE_FD', () => session.preserveFd(file, 1n), 'ok');
      const patch = Buffer.from('written after preserve');
      ctx.equal('pwrite inside the size', pwrite(file, patch, PAGE + 100), patch.length);
      ctx.equal('pwrite of the last byte', pwrite(file, Buffer.from([0xab]), 3 * PAGE - 1), 1);
      patch.copy(content, PAGE + 100);
      content[3 * PAGE - 1] = 0xab;
      ctx.sameBytes('contents', readAll(file, 3 * PAGE), content);
      ctx.equal('size unchanged', sizeOf(file), 3 * PAGE);
    },
  },
  {
    id: 'preserve/size-frozen',
    requires: ['sizeFreezeEnforced'],
    rule: 'A preserved memfd has a frozen size: ftruncate to another size and fallocate in any mode give EPERM, ftruncate to the same size succeeds, and the size is free again once the session is closed.',
    run(ctx) {
      const device = ctx.openDevice();
      const session = create(ctx, device, ctx.name('s'));
      const file = memfd(ctx, 'guest', pattern('frozen', 2 * PAGE));
      ctx.expect('PRESERVE_FD', () => session.preserveFd(file, 1n), 'ok');
      ctx.expect('ftruncate to a larger size', () => ftruncate(file, 4 * PAGE), 'EPERM');
      ctx.expect('ftruncate to a smaller size', () => ftruncate(file, PAGE), 'EPERM');
      ctx.expect('ftruncate to 0', () => ftruncate(file, 0), 'EPERM');
      ctx.expect('ftruncate to the same size', () => ftruncate(file, 2 * PAGE), 'ok');
      ctx.expect('fallocate beyond the size', () => fallocate(file, 0, 4 * PAGE), 'EPERM');
      ctx.expect('fallocate inside the size', () => fallocate(file, 0, PAGE), 'EPERM');
      ctx.expect('fallocate KEEP_SIZE', () => fallocate(file, 0, 4 * PAGE, FALLOC_FL_KEEP_SIZE), 'EPERM');
      ctx.expect(
        'fallocate PUNCH_HOLE',
        () => fallocate(file, 0, PAGE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE),
        'EPERM',
      );
      ctx.equal('size after the refused changes', sizeOf(file), 2 * PAGE);
      session.close();
      ctx.expect('ftruncate after the session is closed', () => ftruncate(file, 4 * PAGE), 'ok');
      ctx.equal('size after the session is closed', sizeOf(file), 4 * PAGE);
    },
  },
  {
    id: 'preserve/no-write-past-eof',
    requires: ['sizeFreezeEnforced'],
    rule: 'A write that would extend a preserved memfd does not: entirely past end-of-file it gives EPERM; straddling end-of-file it is short or EPERM, and the size never changes.',
    run(ctx) {
      const device = ctx.openDevice();
      const session = create(ctx, device, ctx.name('s'));
      const size = 2 * PAGE;
      const file = memfd(ctx, 'guest', pattern('past-eof', size));
      ctx.expect('PRESERVE_FD', () => session.preserveFd(file, 1n), 'ok');
      ctx.expect('pwrite at end-of-file', () => pwrite(file, Buffer.from('x'), size), 'EPERM');
      ctx.expect(
        'pwrite a page past end-of-file',
        () => pwrite(file, Buffer.from('x'), size + PAGE),
        'EPERM',
      );
      let written = -1;
      const outcome = ctx.expectOneOf('pwrite 2 pages from one page before end-of-file', () => {
        written = pwrite(file, Buffer.alloc(2 * PAGE, 0x5a), size - PAGE);
      }, ['ok', 'EPERM']);
      if (outcome.ok) {
        ctx.note(`straddling write was short: ${written} bytes`);
        ctx.equal('the straddling write stopped at end-of-file', written >= 0 && written <= PAGE, true);
      }
      ctx.equal('size unchanged', sizeOf(file), size);
    },
  },
];
