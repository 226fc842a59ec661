/**
 * The id owners table on disk (src/daemon/id-owners.ts): a snapshot and an
 * append log, read back by a restarted luod. Every binding survives a
 * restart, the log is compacted into the snapshot in proportion to the
 * table, and a line torn by a crash costs only its own id.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import pino from 'pino';
import { IdOwners, MAX_IDS_PER_UID, OWNER_TTL_MS, ownersLogPath } from '../src/daemon/id-owners.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-id-owners-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

let files = 0;
const freshFile = () => path.join(dir, `ids-${++files}.json`);
const silent = pino({ level: 'silent' });
const free = () => false;
const lines = (file: string) => fs.readFileSync(file, 'utf8').split('\n').filter(Boolean);

function capturedLog(): { log: pino.Logger; said: { msg: string; [k: string]: unknown }[] } {
  const said: { msg: string }[] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => said.push(JSON.parse(line)) });
  return { log, said };
}

test('a thousand bindings are a thousand appended lines, and a restarted luod refuses every squatter', () => {
  const file = freshFile();
  const owners = new IdOwners(file, silent, 1000);
  for (let i = 0; i < 1000; i++)
    assert.deepEqual(owners.claim(`vm-${i}`, 1000 + (i % 3), free, 1000), { ok: true });
  owners.close();
  assert.equal(fs.existsSync(file), false, 'no rewrite of the whole table while it grows');
  assert.equal(lines(ownersLogPath(file)).length, 1000);

  const restarted = new IdOwners(file, silent, 2000);
  assert.equal(restarted.size, 1000);
  for (let i = 0; i < 1000; i++) {
    assert.equal(restarted.owner(`vm-${i}`), 1000 + (i % 3));
    assert.deepEqual(restarted.claim(`vm-${i}`, 4242, free, 2000), { ok: false, owner: 1000 + (i % 3) });
  }
  assert.deepEqual(restarted.claim('vm-7', 0, free, 2000), { ok: true }, 'root may use any id');
  assert.equal(restarted.owner('vm-7'), 1001, 'and the owner stays the owner');
  restarted.close();
});

test('the log is folded into the snapshot once it outgrows the table; a crash between the two reads the same', () => {
  const file = freshFile();
  const owners = new IdOwners(file, silent, 0);
  for (let i = 0; i < 10; i++) owners.claim(`vm-${i}`, 7, free, 0);
  // Ids handed over after kexecs to other uids, again and again: changes, not growth.
  // The log is compacted at its 266th line (10 ids + 256), in round 26.
  let stale = '';
  for (let round = 1; round <= 40; round++) {
    if (round === 21) stale = fs.readFileSync(ownersLogPath(file), 'utf8');
    for (let i = 0; i < 10; i++) owners.adopt(`vm-${i}`, 100 + ((round + i) % 5), round);
  }
  owners.close();
  assert.ok(fs.existsSync(file), 'the snapshot was written');
  const logged = lines(ownersLogPath(file)).length;
  assert.equal(logged, 10 + 40 * 10 - 267, 'the changes after the one that compacted it');
  const expect = (o: IdOwners) => {
    for (let i = 0; i < 10; i++) assert.equal(o.owner(`vm-${i}`), 100 + ((40 + i) % 5), `vm-${i}`);
    assert.equal(o.size, 10);
  };
  const restarted = new IdOwners(file, silent, 41);
  expect(restarted);
  restarted.close();

  // A luod killed after the snapshot's rename, before the log was emptied, left
  // lines the snapshot holds already; the lines after them are newer.
  assert.equal(lines(file).length, 1);
  fs.writeFileSync(ownersLogPath(file), stale + fs.readFileSync(ownersLogPath(file), 'utf8'));
  const crashed = new IdOwners(file, silent, 41);
  expect(crashed);
  crashed.close();
});

test('a line torn by a crash, or damaged, is skipped and said; every other binding holds', () => {
  const file = freshFile();
  const owners = new IdOwners(file, silent, 0);
  for (let i = 0; i < 5; i++) owners.claim(`vm-${i}`, 1000, free, 0);
  owners.close();
  const log = ownersLogPath(file);
  const text = fs.readFileSync(log, 'utf8').split('\n');
  text[2] = '{"id":"vm-2","uid":"1000","seen":0}'; // damaged: a uid is a number
  fs.writeFileSync(log, `${text.join('\n')}{"id":"vm-5","ui`); // and a torn last line
  const { log: logger, said } = capturedLog();
  const restarted = new IdOwners(file, logger, 1);
  assert.deepEqual(
    ['vm-0', 'vm-1', 'vm-2', 'vm-3', 'vm-4', 'vm-5'].map((id) => restarted.owner(id)),
    [1000, 1000, undefined, 1000, 1000, undefined],
  );
  const warning = said.find((l) => /torn or damaged/.test(l.msg));
  assert.ok(warning, 'the skipped lines are said');
  assert.equal(warning.skipped, 2);
  // Appending goes on after the torn line: a new binding starts on a line of its own.
  restarted.claim('vm-6', 1001, free, 1);
  restarted.close();
  const again = new IdOwners(file, silent, 2);
  assert.equal(again.owner('vm-6'), 1001);
  again.close();
});

test('a full uid makes room by forgetting its least recently used idle id, and a restarted luod forgets it too', () => {
  const file = freshFile();
  const owners = new IdOwners(file, silent, 0);
  for (let i = 0; i < MAX_IDS_PER_UID; i++) owners.claim(`vm-${i}`, 1000, free, 1 + i);
  owners.claim('other', 1001, free, 5000);
  // vm-0 is the oldest but busy (subscribed): vm-1 goes.
  owners.claim('newcomer', 1000, (id) => id === 'vm-0', 6000);
  owners.close();
  const restarted = new IdOwners(file, silent, 7000);
  assert.equal(restarted.owner('vm-0'), 1000);
  assert.equal(restarted.owner('vm-1'), undefined, 'forgotten, also on disk');
  assert.equal(restarted.owner('newcomer'), 1000);
  assert.equal(restarted.owner('other'), 1001);
  assert.equal(restarted.size, MAX_IDS_PER_UID + 1);
  restarted.close();
});

test('an id unused for 30 days is forgotten when the table is read', () => {
  const file = freshFile();
  const owners = new IdOwners(file, silent, 0);
  owners.claim('old', 1000, free, 0);
  owners.claim('recent', 1000, free, OWNER_TTL_MS);
  owners.close();
  const restarted = new IdOwners(file, silent, OWNER_TTL_MS + 1);
  assert.equal(restarted.owner('old'), undefined);
  assert.equal(restarted.owner('recent'), 1000);
  restarted.close();
});

test('a table that cannot be written is kept in memory and said once', () => {
  const file = path.join(dir, 'missing-dir', 'ids.json');
  const { log, said } = capturedLog();
  const owners = new IdOwners(file, log, 0);
  for (let i = 0; i < 3; i++) assert.deepEqual(owners.claim(`vm-${i}`, 1000, free, 0), { ok: true });
  assert.deepEqual(owners.claim('vm-1', 1001, free, 0), { ok: false, owner: 1000 });
  assert.equal(said.filter((l) => /cannot write the id owners file/.test(l.msg)).length, 1);
  owners.close();
});
