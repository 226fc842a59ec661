/**
 * luod after a reboot, while the VMMs claim their sessions: the update is
 * over ("all-claimed", phase idle, the claim deadline disarmed) only once
 * every client HAS its fds, not when the last reply is merely on its way.
 * Found on the real kernel (npm run test:vm): three VMMs claimed at once and
 * luod marked all-claimed twice, the first time while a reply was in flight.
 *
 * luod runs in this process with a scripted kernel and scripted connections,
 * so a CLAIM reply can be held in flight and then made to fail.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import pino from 'pino';
import type { SessionKeeper } from '../src/daemon/keeper.js';
import { emulatedFormats, type LuodKernel } from '../src/daemon/kernel.js';
import { Luod, type PhaseEvent } from '../src/daemon/luod.js';
import type { LiveUpdateDevice, Session } from '../src/kernel/device.js';
import type { LineChannel } from '../src/protocol/lines.js';
import { RecordStore, readRecordFile } from '../src/record/store.js';
import { ftruncate, memfdCreate, pwriteAll } from '../src/sys/index.js';
import { waitUntil } from './support/wait.js';

const UID = process.getuid?.() ?? 0;

/** A session luod "retrieved": closes are counted, nothing else happens. */
function fakeSession(name: string, closes: string[], payload?: Buffer): Session {
  return {
    name,
    origin: 'retrieved',
    backend: 'emulated',
    fd: -1,
    closed: false,
    preserveFd: () => {},
    retrieveFd: () => {
      const fd = memfdCreate(name);
      ftruncate(fd, payload!.length);
      pwriteAll(fd, payload!, 0);
      return fd;
    },
    finish: () => {},
    getName: () => name,
    close: () => closes.push(name),
    [Symbol.dispose]: () => {},
  } as unknown as Session;
}

/** The previous kernel's luod left two clients, vm-a and vm-b. */
function kernelAfterReboot(closes: string[]): LuodKernel {
  const state = Buffer.from(
    JSON.stringify({
      // The state an older luod carried (no update record): the smallest valid one.
      format: 'luod-state-v1',
      update: 'u-test',
      from: 'old',
      to: 'new',
      clients: [
        { id: 'vm-a', uid: UID, sessions: ['vm-a'] },
        { id: 'vm-b', uid: UID, sessions: ['vm-b'] },
      ],
      timeline: [{ phase: 'update-start', at: 1 }],
    }),
  );
  return {
    backend: 'emulated',
    release: async () => 'new',
    openDevice: () =>
      ({
        retrieveSession: (name: string) =>
          fakeSession(name, closes, name === 'luod-internal' ? state : undefined),
        close: () => {},
      }) as unknown as LiveUpdateDevice,
    load: async () => ({ kernel: 'k', cmdline: '' }),
    currentFormats: async () => emulatedFormats('7.2'),
    nextFormats: async () => emulatedFormats('7.2'),
    kexec: async () => {},
  };
}

/** A connection whose replies the test delivers, holds or fails. */
class ScriptedChannel extends EventEmitter {
  readonly sent: Record<string, unknown>[] = [];
  readonly socket = Object.assign(new EventEmitter(), {
    peerCredentials: () => ({ uid: UID, gid: 0, pid: 1 }),
    pendingBytes: 0,
  });
  paused = false;
  pause(): void {
    this.paused = true;
  }
  resume(): void {
    this.paused = false;
  }
  /** When set, the next send waits for this. */
  hold: Promise<void> | null = null;
  send(value: Record<string, unknown>): Promise<void> {
    this.sent.push(value);
    const held = this.hold;
    this.hold = null;
    return held ?? Promise.resolve();
  }
  close(): void {
    this.emit('close');
  }
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 20));

test('all-claimed only once every CLAIM reply has arrived; a failed reply keeps the sessions waiting', async () => {
  const closes: string[] = [];
  const phases: PhaseEvent[] = [];
  const luod = new Luod({
    kernel: kernelAfterReboot(closes),
    log: pino({ level: 'silent' }),
    onPhase: (m) => phases.push(m),
  });
  luod.recover();
  assert.deepEqual(luod.status().pending_claims, ['vm-a', 'vm-b']);
  assert.deepEqual(
    phases.map((p) => p.phase),
    ['luod-ready'],
  );
  const a = new ScriptedChannel();
  const b = new ScriptedChannel();
  luod.accept(a as unknown as LineChannel);
  luod.accept(b as unknown as LineChannel);

  // vm-a's reply is in flight; vm-b's arrives.
  let failA!: (err: Error) => void;
  a.hold = new Promise<void>((_, reject) => {
    failA = reject;
  });
  a.emit('message', { cmd: 'CLAIM', id: 'vm-a', seq: 1 }, []);
  b.emit('message', { cmd: 'CLAIM', id: 'vm-b', seq: 1 }, []);
  await settle();
  assert.equal(b.sent.at(-1)?.ok, true);
  assert.equal(luod.phase, 'claiming', 'vm-a does not have its fds yet');
  assert.deepEqual(
    phases.map((p) => p.phase),
    ['luod-ready', 'claim'],
  );
  assert.deepEqual(closes.sort(), ['luod-internal', 'vm-b'], "luod still holds vm-a's session");

  // The reply to vm-a fails: vm-a may claim again, its session still waits.
  failA(new Error('EPIPE'));
  await settle();
  assert.equal(luod.phase, 'claiming');
  assert.deepEqual(luod.status().pending_claims, ['vm-a']);

  a.emit('message', { cmd: 'CLAIM', id: 'vm-a', seq: 2 }, []);
  await settle();
  assert.equal(a.sent.at(-1)?.ok, true);
  assert.equal(luod.phase, 'idle');
  assert.deepEqual(luod.status().pending_claims, []);
  assert.deepEqual(
    phases.map((p) => `${p.phase}${p.client ? `:${p.client}` : ''}`),
    ['luod-ready', 'claim:vm-b', 'claim:vm-a', 'all-claimed'],
  );
  assert.ok(phases.every((p) => p.update === 'u-test'));
  const timeline = (luod.status().last_update as { timeline: { phase: string }[] }).timeline;
  assert.equal(timeline.filter((m) => m.phase === 'all-claimed').length, 1);
  luod.close();
});

test('at its start luod listens while the holder takes the incoming sessions: queries are answered, CLAIM waits', async () => {
  const closes: string[] = [];
  let give!: () => void;
  const taken = new Promise<void>((resolve) => {
    give = resolve;
  });
  const kept: string[][] = [];
  const keeper = {
    holder: { kind: 'holder-process', warm: () => {} },
    heldCount: 0,
    claiming: async (_update: unknown, clients: { id: string }[]) => {
      kept.push(clients.map((c) => c.id));
      await taken;
    },
    done: async () => {},
  };
  const records = new RecordStore(fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-claims-records-')));
  const luod = new Luod({
    kernel: kernelAfterReboot(closes),
    log: pino({ level: 'silent' }),
    keeper: keeper as unknown as SessionKeeper,
    records,
  });
  try {
    await luod.restore(); // resolves with the holder still busy
    assert.deepEqual(kept, [['vm-a', 'vm-b']], 'the holder was given every incoming session');
    const a = new ScriptedChannel();
    luod.accept(a as unknown as LineChannel);
    a.emit('message', { cmd: 'STATUS', seq: 1 }, []);
    a.emit('message', { cmd: 'CLAIM', id: 'vm-a', seq: 2 }, []);
    a.emit('message', { cmd: 'UPDATE', seq: 3 }, []);
    await settle();
    assert.deepEqual(
      a.sent.map((m) => m.seq),
      [1],
      'STATUS answered, CLAIM and UPDATE not while the holder takes the sessions',
    );
    assert.deepEqual(a.sent[0]!.pending_claims, ['vm-a', 'vm-b']);
    assert.deepEqual(closes, ['luod-internal'], 'luod holds every incoming session meanwhile');
    give();
    // Answered once the holder has them and the record is on disk (an fsync: no fixed wait).
    await waitUntil(() => a.sent.length >= 3, 'the CLAIM and UPDATE answered');
    const bySeq = new Map(a.sent.map((m) => [m.seq, m]));
    assert.deepEqual([...bySeq.keys()].sort(), [1, 2, 3]);
    assert.equal(bySeq.get(2)!.ok, true, 'the CLAIM answered once the holder has the sessions');
    assert.deepEqual(bySeq.get(2)!.sessions, ['vm-a']);
    assert.equal(bySeq.get(3)!.ok, false, 'UPDATE refused then (nothing loaded), not before');
    // The record in progress was written meanwhile, off the event loop.
    await luod.recordsWritten();
    const record = readRecordFile(path.join(records.dir, 'u-test.json'));
    assert.equal(record.outcome, 'in-progress');
  } finally {
    luod.close();
    fs.rmSync(records.dir, { recursive: true, force: true });
  }
});
