/**
 * Scale, as the kernel selftests exercise it (preserve_many_sessions,
 * preserve_many_files): session and file metadata live in chains of blocks
 * (51 sessions or 63 files per 4 KiB block), grown and shrunk on demand.
 */
import type { Session } from '../../src/kernel/device.js';
import type { OwnedFd } from '../../src/sys/index.js';
import { create, memfd, needOpenFiles } from './helpers.js';
import type { Scenario } from './types.js';

export const MANY_SESSIONS = 2000;
export const MANY_FILES = 500;

export const limitScenarios: Scenario[] = [
  {
    id: 'limits/2000-sessions',
    rule: `${MANY_SESSIONS} outgoing sessions can exist at once, and all of them can be closed again.`,
    run(ctx) {
      needOpenFiles(ctx, MANY_SESSIONS);
      const device = ctx.openDevice();
      const sessions: Session[] = [];
      ctx.expect(
        `CREATE_SESSION x ${MANY_SESSIONS}`,
        () => {
          for (let i = 0; i < MANY_SESSIONS; i++)
            sessions.push(ctx.track(device.createSession(ctx.name(`${i}`))));
        },
        'ok',
      );
      ctx.equal('sessions created', sessions.length, MANY_SESSIONS);
      ctx.expect(
        'close them all',
        () => {
          for (const s of sessions) s.close();
        },
        'ok',
      );
      create(ctx, device, ctx.name('0'), 'CREATE_SESSION of the first name again');
    },
  },
  {
    id: 'limits/500-files',
    rule: `${MANY_FILES} memfds can be preserved in one session, and closing it releases them all.`,
    run(ctx) {
      needOpenFiles(ctx, MANY_FILES + 10);
      const device = ctx.openDevice();
      const session = create(ctx, device, ctx.name('s'));
      const files: OwnedFd[] = [];
      ctx.expect(
        `PRESERVE_FD x ${MANY_FILES}`,
        () => {
          for (let i = 0; i < MANY_FILES; i++) {
            const file = memfd(ctx, 'test-memfd');
            session.preserveFd(file, BigInt(i));
            files.push(file);
          }
        },
        'ok',
      );
      ctx.equal('files preserved', files.length, MANY_FILES);
      session.close();
      const other = create(ctx, device, ctx.name('other'));
      ctx.expect(
        `PRESERVE_FD x ${MANY_FILES} again in another session after closing the first`,
        () => {
          for (const [i, file] of files.entries()) other.preserveFd(file, BigInt(i));
        },
        'ok',
      );
    },
  },
];
