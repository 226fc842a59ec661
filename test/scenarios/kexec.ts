/**
 * Rules that need a kexec: what the next kernel gets back (the selftests'
 * luo_kexec_simple, luo_multi_session, luo_stress_sessions, luo_stress_files
 * flows, then the observed details of retrieve, finish and release).
 *
 * Each flow is a group of stages (`<group>/before`, `<group>/after`, and for
 * one rule `<group>/after-second`). A stage that runs after a kexec may run in
 * another process than the one before it (the real-kernel bench), so
 * everything it checks is recomputed from constants: names from the group,
 * contents from `pattern()`. What a stage must keep open across the kexec it
 * hands to `ctx.hold()` (the selftests fork a holder; the emulator's test
 * process survives its emulated kexec and simply keeps the fds).
 */
import * as fs from 'node:fs';
import type { Session } from '../../src/kernel/device.js';
import {
  addSeals,
  F_SEAL_EXEC,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  fstat,
  ftruncate,
  getSeals,
  isCloseOnExec,
  lseek,
  MFD_ALLOW_SEALING,
  MFD_CLOEXEC,
  MFD_NOEXEC_SEAL,
  type OwnedFd,
  pwrite,
  pwriteAll,
} from '../../src/sys/index.js';
import {
  LIVEUPDATE_SESSION_FINISH,
  LIVEUPDATE_SESSION_PRESERVE_FD,
  LIVEUPDATE_SESSION_RETRIEVE_FD,
} from '../../src/uapi/index.js';
import { ScenarioAssertion } from './context.js';
import {
  create,
  fdArg,
  filesystemOf,
  finishArg,
  linkedTmpfsFile,
  memfd,
  needOpenFiles,
  PAGE,
  pageWithText,
  pattern,
  poke,
  position,
  raw,
  readAll,
  retrieve,
  sized,
  TMPFS_MAGIC,
  tmpfile,
} from './helpers.js';
import { MANY_FILES, MANY_SESSIONS } from './limits.js';
import type { CapabilityName, Scenario, ScenarioContext, Stage } from './types.js';

const MAX_TOKEN = (1n << 64n) - 1n;

type Run = (ctx: ScenarioContext) => Promise<void> | void;

/** The stages of one flow as scenarios `<group>/before`, `<group>/after`, `<group>/after-second`. */
function flow(
  group: string,
  rule: string,
  stages: { before: Run; after: Run; afterSecond?: Run },
  requires?: readonly CapabilityName[],
): Scenario[] {
  const make = (tag: string, stage: Stage, run: Run): Scenario => ({
    id: `${group}/${tag}`,
    group,
    stage,
    rule,
    run,
    ...(requires ? { requires } : {}),
  });
  const out = [make('before', 'before-kexec', stages.before), make('after', 'after-kexec', stages.after)];
  if (stages.afterSecond) out.push(make('after-second', 'after-second-kexec', stages.afterSecond));
  return out;
}

/** The selftests' create_and_preserve_memfd: a one-page memfd holding `text`, preserved, its fd closed. */
function preserveText(ctx: ScenarioContext, session: Session, token: bigint, text: string): void {
  const file = memfd(ctx, 'test_mfd', pageWithText(text));
  ctx.expect(`PRESERVE_FD token ${token} ("${text}")`, () => session.preserveFd(file, token), 'ok');
  file.close();
}

/** The selftests' restore_and_verify_memfd: retrieve `token` and compare its page with `text`. */
function verifyText(ctx: ScenarioContext, session: Session, token: bigint, text: string): OwnedFd {
  const file = ctx.expect(`RETRIEVE_FD token ${token}`, () => session.retrieveFd(token), 'ok');
  ctx.sameBytes(`contents of token ${token}`, readAll(file, PAGE + 1), pageWithText(text));
  return file;
}

/** Assert inside a loop without recording every iteration (the loop is one recorded step). */
function check(condition: boolean, message: string): void {
  if (!condition) throw new ScenarioAssertion(message);
}

function finishAndClose(ctx: ScenarioContext, session: Session, what: string): void {
  ctx.expect(`FINISH ${what}`, () => session.finish(), 'ok');
  session.close();
}

const MODE_BITS = 0o7777;

export const kexecScenarios: Scenario[] = [
  ...flow(
    'kexec/simple',
    'A memfd preserved under a token, its own fd closed (LUO holds a reference), comes back after kexec with the same bytes (selftest luo_kexec_simple).',
    {
      before(ctx) {
        const device = ctx.openDevice();
        const session = ctx.hold(create(ctx, device, ctx.name('test-session')));
        preserveText(ctx, session, 0x1an, 'hello kexec world');
      },
      after(ctx) {
        const device = ctx.openDevice();
        const session = retrieve(ctx, device, ctx.name('test-session'));
        verifyText(ctx, session, 0x1an, 'hello kexec world');
        finishAndClose(ctx, session, 'the session');
      },
    },
  ),

  ...flow(
    'kexec/multi-session',
    'Empty sessions and sessions with one or two memfds all come back, each file with its own contents (selftest luo_multi_session).',
    {
      before(ctx) {
        const device = ctx.openDevice();
        ctx.hold(create(ctx, device, ctx.name('empty-1')));
        ctx.hold(create(ctx, device, ctx.name('empty-2')));
        const files1 = ctx.hold(create(ctx, device, ctx.name('files-1')));
        preserveText(ctx, files1, 0x1001n, 'Data for session files 1');
        const files2 = ctx.hold(create(ctx, device, ctx.name('files-2')));
        preserveText(ctx, files2, 0x2002n, 'First file for session files 2');
        preserveText(ctx, files2, 0x3003n, 'Second file for session files 2');
      },
      after(ctx) {
        const device = ctx.openDevice();
        const empty1 = retrieve(ctx, device, ctx.name('empty-1'));
        const empty2 = retrieve(ctx, device, ctx.name('empty-2'));
        const files1 = retrieve(ctx, device, ctx.name('files-1'));
        const files2 = retrieve(ctx, device, ctx.name('files-2'));
        verifyText(ctx, files1, 0x1001n, 'Data for session files 1');
        verifyText(ctx, files2, 0x2002n, 'First file for session files 2');
        verifyText(ctx, files2, 0x3003n, 'Second file for session files 2');
        ctx.expect(
          'RETRIEVE_FD token 0x1001 in an empty session',
          () => empty1.retrieveFd(0x1001n),
          'ENOENT',
        );
        finishAndClose(ctx, empty1, 'empty-1');
        finishAndClose(ctx, empty2, 'empty-2');
        finishAndClose(ctx, files1, 'files-1');
        finishAndClose(ctx, files2, 'files-2');
      },
    },
  ),

  ...flow(
    'kexec/stress-sessions',
    `${MANY_SESSIONS} sessions come back across a kexec and can each be retrieved and finished (selftest luo_stress_sessions).`,
    {
      before(ctx) {
        needOpenFiles(ctx, MANY_SESSIONS);
        const device = ctx.openDevice();
        ctx.expect(
          `CREATE_SESSION x ${MANY_SESSIONS}`,
          () => {
            for (let i = 0; i < MANY_SESSIONS; i++) ctx.hold(device.createSession(ctx.name(`${i}`)));
          },
          'ok',
        );
      },
      after(ctx) {
        const device = ctx.openDevice();
        ctx.expect(
          `RETRIEVE_SESSION + FINISH + close x ${MANY_SESSIONS}`,
          () => {
            for (let i = 0; i < MANY_SESSIONS; i++) {
              const session = device.retrieveSession(ctx.name(`${i}`));
              try {
                session.finish();
              } finally {
                session.close();
              }
            }
          },
          'ok',
        );
      },
    },
  ),

  ...flow(
    'kexec/stress-files',
    `${MANY_FILES} memfds in one session come back byte for byte (selftest luo_stress_files).`,
    {
      before(ctx) {
        needOpenFiles(ctx, 16);
        const device = ctx.openDevice();
        const session = ctx.hold(create(ctx, device, ctx.name('many-files')));
        ctx.expect(
          `PRESERVE_FD x ${MANY_FILES}`,
          () => {
            for (let i = 0; i < MANY_FILES; i++) {
              const file = memfd(ctx, 'test_mfd', pageWithText(`file-data-${i}`));
              session.preserveFd(file, BigInt(i));
              file.close();
            }
          },
          'ok',
        );
      },
      after(ctx) {
        const device = ctx.openDevice();
        const session = retrieve(ctx, device, ctx.name('many-files'));
        ctx.expect(
          `RETRIEVE_FD + verify x ${MANY_FILES}`,
          () => {
            for (let i = 0; i < MANY_FILES; i++) {
              const file = session.retrieveFd(BigInt(i));
              try {
                const bytes = readAll(file, PAGE + 1);
                check(bytes.equals(pageWithText(`file-data-${i}`)), `token ${i}: contents differ`);
              } finally {
                file.close();
              }
            }
          },
          'ok',
        );
        finishAndClose(ctx, session, 'the session');
      },
    },
  ),

  ...flow(
    'kexec/retrieved-memfd-properties',
    'A retrieved memfd has the preserved size, file position, seals and bytes (holes read as zeros), is close-on-exec, mode 0777, unlinked, on tmpfs, and no longer size-frozen.',
    {
      before(ctx) {
        const device = ctx.openDevice();
        const session = ctx.hold(create(ctx, device, ctx.name('props')));
        const odd = memfd(ctx, 'odd', pattern('props-odd', 10_000));
        lseek(odd, 1234);
        addSeals(odd, F_SEAL_SHRINK | F_SEAL_GROW);
        ctx.expect(
          'PRESERVE_FD 10000-byte memfd, position 1234, seals SHRINK|GROW',
          () => session.preserveFd(odd, 1n),
          'ok',
        );
        const empty = memfd(ctx, 'empty');
        ctx.expect('PRESERVE_FD empty memfd', () => session.preserveFd(empty, 2n), 'ok');
        const sparse = memfd(ctx, 'sparse', 3 * PAGE);
        pwriteAll(sparse, Buffer.from('middle'), PAGE + 7);
        ctx.expect('PRESERVE_FD sparse 3-page memfd', () => session.preserveFd(sparse, 3n), 'ok');
      },
      after(ctx) {
        const device = ctx.openDevice();
        const session = retrieve(ctx, device, ctx.name('props'));
        ctx.equal('retrieved session fd is close-on-exec', isCloseOnExec(session.fd), true);

        const odd = ctx.expect('RETRIEVE_FD 1', () => session.retrieveFd(1n), 'ok');
        const st = fstat(odd);
        ctx.equal('size', st.size, 10_000);
        ctx.equal('position', position(odd), 1234);
        ctx.equal('seals', getSeals(odd), F_SEAL_SHRINK | F_SEAL_GROW);
        ctx.equal('close-on-exec', isCloseOnExec(odd), true);
        ctx.equal('mode', st.mode & MODE_BITS, 0o777);
        ctx.equal('links', st.nlink, 0);
        ctx.equal('regular file', st.isFile, true);
        ctx.equal('on tmpfs', filesystemOf(odd) === TMPFS_MAGIC, true);
        ctx.sameBytes('contents', readAll(odd, 20_000), pattern('props-odd', 10_000));

        const empty = ctx.expect('RETRIEVE_FD 2', () => session.retrieveFd(2n), 'ok');
        ctx.equal('empty: size', fstat(empty).size, 0);
        ctx.equal('empty: position', position(empty), 0);
        ctx.equal('empty: seals', getSeals(empty), 0);
        ctx.expect(
          'empty: ftruncate works on the retrieved file (not frozen)',
          () => ftruncate(empty, PAGE),
          'ok',
        );
        ctx.equal('empty: size after ftruncate', fstat(empty).size, PAGE);

        const sparse = ctx.expect('RETRIEVE_FD 3', () => session.retrieveFd(3n), 'ok');
        const expected = Buffer.alloc(3 * PAGE);
        expected.write('middle', PAGE + 7);
        ctx.sameBytes('sparse: contents (holes are zeros)', readAll(sparse, 4 * PAGE), expected);
        finishAndClose(ctx, session, 'the session');
      },
    },
  ),

  ...flow(
    'kexec/changes-after-preserve',
    'Contents and file position changed after PRESERVE_FD (even a position past end-of-file) are carried across the kexec; seals added after PRESERVE_FD are not.',
    {
      before(ctx) {
        const device = ctx.openDevice();
        const session = ctx.hold(create(ctx, device, ctx.name('late')));
        const file = memfd(ctx, 'late', pattern('late', 2 * PAGE));
        ctx.expect('PRESERVE_FD', () => session.preserveFd(file, 1n), 'ok');
        ctx.equal('pwrite after preserve', pwrite(file, Buffer.from('written after preserve'), 100), 22);
        ctx.equal('lseek past end-of-file after preserve', lseek(file, 2 * PAGE + 5000), 2 * PAGE + 5000);
        ctx.expect('F_SEAL_GROW after preserve', () => addSeals(file, F_SEAL_GROW), 'ok');
        ctx.equal('seals now', getSeals(file), F_SEAL_GROW);
      },
      after(ctx) {
        const device = ctx.openDevice();
        const session = retrieve(ctx, device, ctx.name('late'));
        const file = ctx.expect('RETRIEVE_FD 1', () => session.retrieveFd(1n), 'ok');
        const expected = pattern('late', 2 * PAGE);
        expected.write('written after preserve', 100);
        ctx.sameBytes('contents include the late write', readAll(file, 3 * PAGE), expected);
        ctx.equal('position past end-of-file carried', position(file), 2 * PAGE + 5000);
        ctx.equal('size', fstat(file).size, 2 * PAGE);
        ctx.equal('seals as at PRESERVE_FD (the late GROW seal is gone)', getSeals(file), 0);
        finishAndClose(ctx, session, 'the session');
      },
    },
  ),

  ...flow(
    'kexec/retrieve-twice-same-file',
    'A second RETRIEVE_FD of a token returns a new fd for the same open file: same inode, shared file position.',
    {
      before(ctx) {
        const device = ctx.openDevice();
        const session = ctx.hold(create(ctx, device, ctx.name('twice')));
        const file = memfd(ctx, 'twice', pattern('twice', 3 * PAGE));
        ctx.expect('PRESERVE_FD token 7', () => session.preserveFd(file, 7n), 'ok');
      },
      after(ctx) {
        const device = ctx.openDevice();
        const session = retrieve(ctx, device, ctx.name('twice'));
        const first = ctx.expect('RETRIEVE_FD 7 (first)', () => session.retrieveFd(7n), 'ok');
        const second = ctx.expect('RETRIEVE_FD 7 (second)', () => session.retrieveFd(7n), 'ok');
        ctx.equal('two different fd numbers', first.fd !== second.fd, true);
        ctx.equal(
          'same inode',
          fstat(first).ino === fstat(second).ino && fstat(first).dev === fstat(second).dev,
          true,
        );
        lseek(first, 4321);
        ctx.equal('position moved through the first fd, read through the second', position(second), 4321);
        ctx.sameBytes(
          'contents through the second fd',
          readAll(second, 4 * PAGE),
          pattern('twice', 3 * PAGE),
        );
        finishAndClose(ctx, session, 'the session');
      },
    },
  ),

  ...flow(
    'kexec/retrieve-failure-permanent',
    'When retrieving a file fails, every later RETRIEVE_FD of that token fails with the same errno (failed retrieves are not retried); other tokens and FINISH are unaffected.',
    {
      before(ctx) {
        const device = ctx.openDevice();
        const session = ctx.hold(create(ctx, device, ctx.name('fail')));
        const doomed = memfd(ctx, 'doomed', pattern('doomed', 64 * PAGE));
        ctx.expect('PRESERVE_FD token 1', () => session.preserveFd(doomed, 1n), 'ok');
        preserveText(ctx, session, 2n, 'control');
      },
      async after(ctx) {
        const faults = ctx.faults ?? ctx.infra('this host cannot inject a retrieve failure');
        const device = ctx.openDevice();
        const session = retrieve(ctx, device, ctx.name('fail'));
        let first: string | undefined;
        await faults.withFailingRetrieve(() => {
          try {
            ctx.track(session.retrieveFd(1n));
            ctx.record('RETRIEVE_FD 1 under the fault', { ok: true });
          } catch (err) {
            first = (err as { code?: string }).code;
            ctx.record('RETRIEVE_FD 1 under the fault', { ok: false, code: String(first) });
          }
        });
        if (first === undefined) ctx.infra('the injected fault did not make the retrieve fail');
        ctx.expect(
          'RETRIEVE_FD 1 again, without the fault',
          () => session.retrieveFd(1n),
          first as `E${string}`,
        );
        ctx.expect('RETRIEVE_FD 1 a third time', () => session.retrieveFd(1n), first as `E${string}`);
        verifyText(ctx, session, 2n, 'control');
        ctx.expect('FINISH', () => session.finish(), 'ok');
        ctx.expect('RETRIEVE_FD 1 after FINISH', () => session.retrieveFd(1n), 'ENOENT');
      },
    },
    ['retrieveFaults'],
  ),

  ...flow(
    'kexec/retrieved-busy-until-finish',
    'A retrieved memfd cannot be preserved into a new outgoing session (EBUSY) until its incoming session is finished, explicitly or by closing it.',
    {
      before(ctx) {
        const device = ctx.openDevice();
        const explicit = ctx.hold(create(ctx, device, ctx.name('explicit')));
        preserveText(ctx, explicit, 1n, 'finished explicitly');
        const implicit = ctx.hold(create(ctx, device, ctx.name('implicit')));
        preserveText(ctx, implicit, 1n, 'finished by close');
      },
      after(ctx) {
        const device = ctx.openDevice();
        const next = create(ctx, device, ctx.name('next'));
        const explicit = retrieve(ctx, device, ctx.name('explicit'));
        const a = verifyText(ctx, explicit, 1n, 'finished explicitly');
        ctx.expect('PRESERVE_FD the retrieved memfd before FINISH', () => next.preserveFd(a, 1n), 'EBUSY');
        ctx.expect('FINISH', () => explicit.finish(), 'ok');
        ctx.expect('PRESERVE_FD the retrieved memfd after FINISH', () => next.preserveFd(a, 1n), 'ok');

        const implicit = retrieve(ctx, device, ctx.name('implicit'));
        const b = verifyText(ctx, implicit, 1n, 'finished by close');
        ctx.expect(
          'PRESERVE_FD the other retrieved memfd before its session is closed',
          () => next.preserveFd(b, 2n),
          'EBUSY',
        );
        implicit.close();
        ctx.expect(
          'PRESERVE_FD it after closing its session (implicit FINISH)',
          () => next.preserveFd(b, 2n),
          'ok',
        );
        // `next` is closed when the stage ends, so nothing of it reaches a later kernel.
      },
    },
  ),

  ...flow(
    'kexec/retrieve-session-rules',
    'RETRIEVE_SESSION of a session that is retrieved and still open gives EINVAL; once that fd is closed (implicit FINISH) it gives ENOENT; GET_NAME works on incoming sessions.',
    {
      before(ctx) {
        const device = ctx.openDevice();
        const session = ctx.hold(create(ctx, device, ctx.name('once')));
        preserveText(ctx, session, 1n, 'retrieve once');
      },
      after(ctx) {
        const device = ctx.openDevice();
        const name = ctx.name('once');
        const session = retrieve(ctx, device, name);
        ctx.equal('GET_NAME on the incoming session', session.getName(), name);
        ctx.expect('RETRIEVE_SESSION again while it is open', () => device.retrieveSession(name), 'EINVAL');
        session.close();
        ctx.expect('RETRIEVE_SESSION after closing it', () => device.retrieveSession(name), 'ENOENT');
      },
    },
  ),

  ...flow(
    'kexec/shared-name',
    'An incoming and an outgoing session may have the same name, whichever is created first; names stay unique among outgoing sessions.',
    {
      before(ctx) {
        const device = ctx.openDevice();
        preserveText(ctx, ctx.hold(create(ctx, device, ctx.name('x'))), 1n, 'incoming x');
        preserveText(ctx, ctx.hold(create(ctx, device, ctx.name('y'))), 1n, 'incoming y');
      },
      after(ctx) {
        const device = ctx.openDevice();
        const x = ctx.name('x');
        const y = ctx.name('y');
        const outX = create(ctx, device, x, `CREATE_SESSION ${x} before retrieving it`);
        const inX = retrieve(ctx, device, x, `RETRIEVE_SESSION ${x} while an outgoing ${x} exists`);
        verifyText(ctx, inX, 1n, 'incoming x');
        ctx.expect(`CREATE_SESSION ${x} a second time`, () => device.createSession(x), 'EEXIST');
        const inY = retrieve(ctx, device, y);
        const outY = create(ctx, device, y, `CREATE_SESSION ${y} after retrieving it`);
        ctx.equal('GET_NAME of outgoing x', outX.getName(), x);
        ctx.equal('GET_NAME of outgoing y', outY.getName(), y);
        const file = memfd(ctx, 'new', pageWithText('new'));
        ctx.expect('PRESERVE_FD into outgoing x', () => outX.preserveFd(file, 1n), 'ok');
        finishAndClose(ctx, inX, 'incoming x');
        finishAndClose(ctx, inY, 'incoming y');
      },
    },
  ),

  ...flow(
    'kexec/incoming-ioctl-rules',
    'On an incoming session, PRESERVE_FD gives EINVAL (after the NULL check), and RETRIEVE_FD and FINISH check their structs: size below the struct EINVAL, non-zero tail E2BIG, FINISH reserved != 0 EINVAL, zero-padded larger structs work.',
    {
      before(ctx) {
        const device = ctx.openDevice();
        const session = ctx.hold(create(ctx, device, ctx.name('in')));
        preserveText(ctx, session, 1n, 'incoming rules');
      },
      after(ctx) {
        const device = ctx.openDevice();
        const session = retrieve(ctx, device, ctx.name('in'));
        const fd = session.fd;
        const file = memfd(ctx, 'new', pageWithText('new'));
        ctx.expect('PRESERVE_FD on the incoming session', () => session.preserveFd(file, 2n), 'EINVAL');
        raw(
          ctx,
          'PRESERVE_FD with NULL',
          { fd, request: LIVEUPDATE_SESSION_PRESERVE_FD, arg: null },
          'EFAULT',
        );
        raw(
          ctx,
          'PRESERVE_FD size 24 with a non-zero tail (direction first)',
          { fd, request: LIVEUPDATE_SESSION_PRESERVE_FD, arg: poke(sized(fdArg(file.fd, 2n), 24), 20) },
          'EINVAL',
        );
        const RETRIEVE_FD = LIVEUPDATE_SESSION_RETRIEVE_FD;
        raw(
          ctx,
          'RETRIEVE_FD size 15',
          { fd, request: RETRIEVE_FD, arg: sized(fdArg(0, 1n), 15, 16), outFd: true },
          'EINVAL',
        );
        raw(
          ctx,
          'RETRIEVE_FD size 24 with a non-zero tail',
          { fd, request: RETRIEVE_FD, arg: poke(sized(fdArg(0, 1n), 24), 20), outFd: true },
          'E2BIG',
        );
        const got = raw(
          ctx,
          'RETRIEVE_FD size 24 zero-padded',
          { fd, request: RETRIEVE_FD, arg: sized(fdArg(0, 1n), 24), outFd: true },
          'ok',
        );
        if (got) ctx.sameBytes('contents', readAll(got, PAGE + 1), pageWithText('incoming rules'));
        const FINISH = LIVEUPDATE_SESSION_FINISH;
        raw(ctx, 'FINISH reserved 1', { fd, request: FINISH, arg: finishArg(1) }, 'EINVAL');
        raw(ctx, 'FINISH size 7', { fd, request: FINISH, arg: sized(finishArg(), 7, 8) }, 'EINVAL');
        raw(
          ctx,
          'FINISH size 16 with a non-zero tail',
          { fd, request: FINISH, arg: poke(sized(finishArg(), 16), 12) },
          'E2BIG',
        );
        raw(ctx, 'FINISH with NULL', { fd, request: FINISH, arg: null }, 'EFAULT');
        raw(ctx, 'FINISH size 16 zero-padded', { fd, request: FINISH, arg: sized(finishArg(), 16) }, 'ok');
        raw(ctx, 'FINISH again (no-op)', { fd, request: FINISH, arg: finishArg() }, 'ok');
        ctx.expect('RETRIEVE_FD after FINISH', () => session.retrieveFd(1n), 'ENOENT');
      },
    },
  ),

  ...flow(
    'kexec/finish-rules',
    'FINISH succeeds with files never retrieved (they are destroyed), a second FINISH is a no-op, every token then gives ENOENT, and files retrieved before FINISH stay usable.',
    {
      before(ctx) {
        const device = ctx.openDevice();
        const session = ctx.hold(create(ctx, device, ctx.name('fin')));
        preserveText(ctx, session, 1n, 'retrieved before finish');
        preserveText(ctx, session, 2n, 'never retrieved');
        preserveText(ctx, session, 3n, 'never retrieved either');
      },
      after(ctx) {
        const device = ctx.openDevice();
        const session = retrieve(ctx, device, ctx.name('fin'));
        ctx.expect('RETRIEVE_FD unknown token 99', () => session.retrieveFd(99n), 'ENOENT');
        const kept = verifyText(ctx, session, 1n, 'retrieved before finish');
        ctx.expect('FINISH', () => session.finish(), 'ok');
        ctx.expect('FINISH again', () => session.finish(), 'ok');
        for (const token of [1n, 2n, 3n]) {
          ctx.expect(`RETRIEVE_FD ${token} after FINISH`, () => session.retrieveFd(token), 'ENOENT');
        }
        ctx.sameBytes(
          'the file retrieved before FINISH still reads',
          readAll(kept, PAGE + 1),
          pageWithText('retrieved before finish'),
        );
        ctx.equal('and takes writes', pwrite(kept, Buffer.from('after finish'), 0), 12);
        session.close();
        ctx.expect(
          'RETRIEVE_SESSION after FINISH and close',
          () => device.retrieveSession(ctx.name('fin')),
          'ENOENT',
        );
      },
    },
  ),

  ...flow(
    'kexec/aborted-session',
    'A session closed before the kexec is not handed over (ENOENT after), and its memfd, unpreserved, can go into another session that is.',
    {
      before(ctx) {
        const device = ctx.openDevice();
        const aborted = create(ctx, device, ctx.name('aborted'));
        const file = memfd(ctx, 'moved', pageWithText('moved to the kept session'));
        ctx.expect('PRESERVE_FD in the session to abort', () => aborted.preserveFd(file, 1n), 'ok');
        aborted.close();
        create(ctx, device, ctx.name('empty-aborted')).close();
        const kept = ctx.hold(create(ctx, device, ctx.name('kept')));
        ctx.expect('PRESERVE_FD the same memfd in the kept session', () => kept.preserveFd(file, 1n), 'ok');
      },
      after(ctx) {
        const device = ctx.openDevice();
        ctx.expect(
          'RETRIEVE_SESSION of the aborted session',
          () => device.retrieveSession(ctx.name('aborted')),
          'ENOENT',
        );
        ctx.expect(
          'RETRIEVE_SESSION of the aborted empty session',
          () => device.retrieveSession(ctx.name('empty-aborted')),
          'ENOENT',
        );
        const kept = retrieve(ctx, device, ctx.name('kept'));
        verifyText(ctx, kept, 1n, 'moved to the kept session');
        finishAndClose(ctx, kept, 'the kept session');
      },
    },
  ),

  ...flow(
    'kexec/unretrieved-dropped',
    'Incoming sessions never retrieved are not handed over again: after a second kexec they give ENOENT, while sessions created in between arrive.',
    {
      before(ctx) {
        const device = ctx.openDevice();
        preserveText(ctx, ctx.hold(create(ctx, device, ctx.name('a'))), 1n, 'session a');
        preserveText(ctx, ctx.hold(create(ctx, device, ctx.name('b'))), 1n, 'session b');
      },
      after(ctx) {
        const device = ctx.openDevice();
        const a = retrieve(ctx, device, ctx.name('a'));
        verifyText(ctx, a, 1n, 'session a');
        finishAndClose(ctx, a, 'a');
        // b is left alone: neither retrieved nor finished.
        const c = ctx.hold(create(ctx, device, ctx.name('c')));
        preserveText(ctx, c, 1n, 'session c');
      },
      afterSecond(ctx) {
        const device = ctx.openDevice();
        ctx.expect(
          'RETRIEVE_SESSION b (never retrieved)',
          () => device.retrieveSession(ctx.name('b')),
          'ENOENT',
        );
        ctx.expect('RETRIEVE_SESSION a (finished)', () => device.retrieveSession(ctx.name('a')), 'ENOENT');
        const c = retrieve(ctx, device, ctx.name('c'), 'RETRIEVE_SESSION c (created after the first kexec)');
        verifyText(ctx, c, 1n, 'session c');
        finishAndClose(ctx, c, 'c');
      },
    },
  ),

  ...flow(
    'kexec/tmpfs-files-come-back-as-memfds',
    'An O_TMPFILE file and an unlinked tmpfs file are preserved and come back as memfds with their contents and their seals (F_SEAL_SEAL, which every tmpfs file has).',
    {
      before(ctx) {
        const device = ctx.openDevice();
        const session = ctx.hold(create(ctx, device, ctx.name('tmpfs')));
        const tmp = tmpfile(ctx, pattern('o-tmpfile', 5000));
        ctx.equal('seals of the O_TMPFILE file', getSeals(tmp), F_SEAL_SEAL);
        ctx.expect('PRESERVE_FD the O_TMPFILE file', () => session.preserveFd(tmp, 1n), 'ok');
        const { fd, path } = linkedTmpfsFile(ctx, 'unlinked', pattern('unlinked', 3000));
        fs.unlinkSync(path);
        ctx.expect('PRESERVE_FD the unlinked tmpfs file', () => session.preserveFd(fd, 2n), 'ok');
      },
      after(ctx) {
        const device = ctx.openDevice();
        const session = retrieve(ctx, device, ctx.name('tmpfs'));
        for (const [token, seed, size] of [
          [1n, 'o-tmpfile', 5000],
          [2n, 'unlinked', 3000],
        ] as const) {
          const file = ctx.expect(`RETRIEVE_FD ${token}`, () => session.retrieveFd(token), 'ok');
          const st = fstat(file);
          ctx.equal(`${seed}: size`, st.size, size);
          ctx.equal(`${seed}: seals`, getSeals(file), F_SEAL_SEAL);
          ctx.equal(`${seed}: mode`, st.mode & MODE_BITS, 0o777);
          ctx.equal(`${seed}: links`, st.nlink, 0);
          ctx.sameBytes(`${seed}: contents`, readAll(file, 2 * size), pattern(seed, size));
        }
        finishAndClose(ctx, session, 'the session');
      },
    },
  ),

  ...flow(
    'kexec/exec-seal-implies-write-seals',
    'A MFD_NOEXEC_SEAL memfd sealed SHRINK (seals 0x22) comes back with mode 0777 and seals 0x3e: re-adding F_SEAL_EXEC to the new executable-mode file implies the write and size seals.',
    {
      before(ctx) {
        const device = ctx.openDevice();
        const session = ctx.hold(create(ctx, device, ctx.name('noexec')));
        const file = memfd(
          ctx,
          'noexec',
          pageWithText('noexec'),
          MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL,
        );
        addSeals(file, F_SEAL_SHRINK);
        ctx.equal('seals before preserve', getSeals(file), F_SEAL_EXEC | F_SEAL_SHRINK);
        ctx.equal('mode before preserve', fstat(file).mode & MODE_BITS, 0o666);
        ctx.expect('PRESERVE_FD', () => session.preserveFd(file, 1n), 'ok');
      },
      after(ctx) {
        const device = ctx.openDevice();
        const session = retrieve(ctx, device, ctx.name('noexec'));
        const file = verifyText(ctx, session, 1n, 'noexec');
        ctx.equal('seals after retrieve', getSeals(file), 0x3e);
        ctx.equal('mode after retrieve', fstat(file).mode & MODE_BITS, 0o777);
        ctx.expect('pwrite into the write-sealed file', () => pwrite(file, Buffer.from('x'), 0), 'EPERM');
        finishAndClose(ctx, session, 'the session');
      },
    },
  ),

  ...flow(
    'kexec/extreme-tokens-and-names',
    'Tokens 0 and 2^64-1 and a 63-byte session name survive the kexec exactly.',
    {
      before(ctx) {
        const device = ctx.openDevice();
        const session = ctx.hold(create(ctx, device, longName(ctx)));
        preserveText(ctx, session, 0n, 'token zero');
        preserveText(ctx, session, MAX_TOKEN, 'token max');
      },
      after(ctx) {
        const device = ctx.openDevice();
        const name = longName(ctx);
        const session = retrieve(ctx, device, name, 'RETRIEVE_SESSION 63-byte name');
        ctx.equal('GET_NAME', session.getName(), name);
        verifyText(ctx, session, 0n, 'token zero');
        verifyText(ctx, session, MAX_TOKEN, 'token max');
        finishAndClose(ctx, session, 'the session');
      },
    },
  ),
];

function longName(ctx: ScenarioContext): string {
  const prefix = ctx.name('63-');
  return prefix + 'y'.repeat(63 - Buffer.byteLength(prefix));
}
