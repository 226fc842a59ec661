/**
 * The update record written off the event loop (update-records.ts saveSoon),
 * as luod does when it restores an update while the VMMs claim: a write made
 * meanwhile (the closed record, after the last claim) must land after it,
 * never under it, or the records directory would keep "in-progress" for an
 * update that completed.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import pino from 'pino';
import type { LuodKernel } from '../src/daemon/kernel.js';
import { RecordBuilder } from '../src/daemon/record-builder.js';
import { UpdateRecords } from '../src/daemon/update-records.js';
import { RecordStore, readRecordFile } from '../src/record/store.js';
import { writeFileAtomicAsync } from '../src/sys/atomic-file.js';

const log = pino({ level: 'silent' });

function builder(update: string): RecordBuilder {
  return RecordBuilder.start(
    {
      update,
      backend: 'emulated',
      from: '7.2',
      to: '7.3',
      clients: [{ id: 'vm-a', uid: 0, sessions: ['vm-a'] }],
      load: null,
    },
    log,
  );
}

test('saveSoon then save: the later write lands last, and every write happens', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-records-order-'));
  try {
    const store = new RecordStore(dir);
    const records = new UpdateRecords({ store, metrics: null, log, kernel: {} as LuodKernel });
    for (let i = 0; i < 20; i++) {
      const update = `u-order-${i}`;
      const open = builder(update);
      records.saveSoon(open.snapshot());
      // The closed record, at once (a fast last claim): must not be overtaken.
      records.save(open.finish('completed', null));
      await records.idle();
      assert.equal(readRecordFile(path.join(dir, `${update}.json`)).outcome, 'completed', update);
    }
    // Several saveSoon in a row: the last wins, nothing is left half-written.
    const many = builder('u-order-many');
    for (let i = 0; i < 5; i++) records.saveSoon(many.snapshot());
    records.saveSoon(many.finish('failed', 'vm-a: gone'));
    await records.idle();
    assert.equal(readRecordFile(path.join(dir, 'u-order-many.json')).outcome, 'failed');
    assert.deepEqual(
      fs.readdirSync(dir).filter((f) => f.endsWith('.tmp')),
      [],
      'no temporary file left',
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('writeFileAtomicAsync: replaces whole, with its mode; a failure leaves the old file and no temporary', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-atomic-async-'));
  try {
    const target = path.join(dir, 'r.json');
    await writeFileAtomicAsync(target, 'old', { mode: 0o600 });
    await writeFileAtomicAsync(target, 'x'.repeat(1 << 16), { mode: 0o600 });
    assert.equal(fs.readFileSync(target, 'utf8'), 'x'.repeat(1 << 16));
    assert.equal(fs.statSync(target).mode & 0o777, 0o600);
    const occupied = path.join(dir, 'occupied');
    fs.mkdirSync(occupied);
    await assert.rejects(
      writeFileAtomicAsync(occupied, 'new'),
      (err: NodeJS.ErrnoException) => err.code === 'EISDIR',
    );
    await assert.rejects(
      writeFileAtomicAsync(path.join(dir, 'missing', 'x'), 'new'),
      (err: NodeJS.ErrnoException) => err.code === 'ENOENT',
    );
    assert.deepEqual(fs.readdirSync(dir).sort(), ['occupied', 'r.json']);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
