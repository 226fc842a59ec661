/**
 * Sample update records for tests, built with luod's own RecordBuilder (as
 * luod builds them, through the kexec) at known times, so a test states only
 * what it checks.
 */
import pino from 'pino';
import { RecordBuilder } from '../../src/daemon/record-builder.js';
import type { UpdateRecord } from '../../src/record/format.js';

const silent = pino({ level: 'silent' });

/**
 * A completed update of two clients, built as luod builds it, at known times. With
 * `resumed` (the default) both VMMs then report their blackout (RESUMED), after the
 * record closed, as they do: vm-a paused at +45 and resumed at +3510 (3465 ms), vm-b
 * paused at +190 and resumed at +3650 (3460 ms).
 */
export function completedRecord(
  update: string,
  t0 = 1_800_000_000_000,
  options: { resumed?: boolean } = {},
): UpdateRecord {
  const r = RecordBuilder.start(
    {
      update,
      backend: 'emulated',
      from: '7.2',
      to: '7.3',
      clients: [
        { id: 'vm-a', uid: 0, sessions: ['vm-a'] },
        { id: 'vm-b', uid: 0, sessions: ['vm-b', 'vm-b.1'] },
      ],
      load: { start: t0 - 5000, end: t0 - 4000 },
      at: t0,
    },
    silent,
  );
  r.begin('preserve', t0);
  r.preservationSent('vm-a', t0 + 10);
  r.preservationSent('vm-b', t0 + 10);
  r.end('preserve', t0 + 10);
  r.begin('barrier', t0 + 10);
  r.ready('vm-a', t0 + 50);
  r.ready('vm-b', t0 + 200);
  r.end('barrier', t0 + 200);
  r.span('freeze', t0 + 200, t0 + 210);
  r.begin('kexec', t0 + 210);
  // The carried draft, as the next kernel's luod resumes it.
  const next = RecordBuilder.resume(r.snapshot(), silent);
  next.end('kexec', t0 + 1210);
  next.span('boot', t0 + 1210, t0 + 3210);
  next.span('luod-ready', t0 + 3210, t0 + 3410);
  next.span('restore', t0 + 3410, t0 + 3420);
  next.begin('claims', t0 + 3420);
  next.claimStarted('vm-a', t0 + 3500);
  next.claimed('vm-a', t0 + 3502);
  next.claimStarted('vm-b', t0 + 3600);
  next.claimed('vm-b', t0 + 3605);
  next.end('claims', t0 + 3605);
  next.span('finish', t0 + 3605, t0 + 3606);
  const closed = next.finish('completed', null, t0 + 3606);
  if (options.resumed === false) return closed;
  next.blackout('vm-a', t0 + 45, t0 + 3510);
  next.blackout('vm-b', t0 + 190, t0 + 3650);
  return next.snapshot();
}

/** An update aborted at the barrier: one client failed, on the real backend; the other reports its blackout. */
export function abortedRecord(update: string, t0 = 1_800_000_100_000): UpdateRecord {
  const r = RecordBuilder.start(
    {
      update,
      backend: 'real',
      from: '7.2.0-luo',
      to: '/boot/vmlinuz-7.3',
      clients: [
        { id: 'vm-ok', uid: 0, sessions: ['vm-ok'] },
        { id: 'vm-bad', uid: 1000, sessions: ['vm-bad'] },
      ],
      load: null,
      at: t0,
    },
    silent,
  );
  r.begin('preserve', t0);
  r.end('preserve', t0 + 5);
  r.begin('barrier', t0 + 5);
  r.preservationSent('vm-ok', t0 + 5);
  r.preservationSent('vm-bad', t0 + 5);
  r.ready('vm-ok', t0 + 40);
  r.failure('vm-bad', 'vm-bad failed: no space for the device state', t0 + 90);
  r.end('barrier', t0 + 90, 'vm-bad failed: no space for the device state');
  r.span('finish', t0 + 90, t0 + 95);
  r.finish('aborted', 'vm-bad failed: no space for the device state', t0 + 95);
  // vm-ok paused before its READY and resumed on ABORTED: 59 ms.
  r.blackout('vm-ok', t0 + 38, t0 + 97);
  return r.snapshot();
}
