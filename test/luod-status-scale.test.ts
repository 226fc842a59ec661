/**
 * STATUS at 1000+ clients (issue #15): a reply longer than the protocol's
 * 64 KiB line is sent in pages (src/protocol/status-page.ts), and luoctl and
 * the client library join them.
 *  - the paging itself, on a STATUS as large as a thousand VMMs' update makes
 *    it (ids of the longest length, a READY and a CLAIM mark each, failures
 *    with long reasons): every page fits the line, and the pages join back to
 *    the whole, in order;
 *  - against luod (its bundle) with 1400 subscribed connections: a raw STATUS
 *    is one page that fits the line and says how many there are, and
 *    `luoctl status --json` (and LuoClient.status()) list every subscriber;
 *  - CLIENTS and SESSIONS likewise (src/protocol/list-page.ts): pages that fit
 *    the line and join back to the whole; `luoctl clients --json` and
 *    LuoClient.clients() list all 1400.
 */
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { after, test } from 'node:test';
import { LuoClient } from '../src/client/index.js';
import { MAX_LINE_BYTES } from '../src/protocol/lines.js';
import { LIST_PAGE_LIMIT, pageList } from '../src/protocol/list-page.js';
import { MAX_ID_LENGTH } from '../src/protocol/messages.js';
import type { StatusReply } from '../src/protocol/replies.js';
import { pageStatus, STATUS_PAGE_LIMIT, wholeStatus } from '../src/protocol/status-page.js';
import { cliHost } from './support/cli-host.js';

const CLIENTS = 1400;
const host = cliHost('luokit-status-scale-', () => ['--max-clients', String(CLIENTS + 64)]);

/** An id of the longest length allowed, unique per `i`. */
const longId = (i: number) => `vm-${String(i).padStart(6, '0')}-`.padEnd(MAX_ID_LENGTH, 'x');

function bigStatus(n: number): StatusReply {
  const ids = Array.from({ length: n }, (_, i) => longId(i));
  const t0 = 1_800_000_000_000;
  const marks: { phase: string; at: number; client?: string }[] = [
    { phase: 'update-start', at: t0 },
    { phase: 'barrier-start', at: t0 + 1 },
  ];
  for (const [i, id] of ids.entries()) marks.push({ phase: 'ready', at: t0 + 2 + i, client: id });
  marks.push({ phase: 'barrier-done', at: t0 + 2 + n }, { phase: 'kexec', at: t0 + 3 + n });
  for (const [i, id] of ids.entries()) marks.push({ phase: 'claim', at: t0 + 4 + n + i, client: id });
  marks.push({ phase: 'all-claimed', at: t0 + 4 + 2 * n });
  return {
    phase: 'claiming',
    backend: 'emulated',
    update: null,
    loaded: null,
    clients: n,
    subscribers: ids,
    pending_claims: ids.slice(0, n / 2),
    kexec_mode: 'standalone',
    holder: { kind: 'holder-process', held: n },
    last_update: {
      update: 'u-20261206T000000-abcd',
      outcome: 'rebooted',
      timeline: marks,
      claims: ids,
      failed: ids.slice(0, 100).map((id) => ({ id, reason: 'r'.repeat(1024) })),
    },
    records_dir: '/var/lib/luokit/records',
    last_record: null,
  };
}

const bytes = (value: unknown) => Buffer.byteLength(JSON.stringify(value));

test('a STATUS longer than a line goes in pages that fit it, and the pages join back to the whole', async () => {
  const full = bigStatus(1000);
  const max = MAX_LINE_BYTES - 256;
  assert.ok(bytes(full) > MAX_LINE_BYTES, `the whole is ${bytes(full)} bytes`);
  const asked: { offset: number; limit: number }[] = [];
  const joined = await wholeStatus(async (page) => {
    if (page) asked.push(page);
    const reply = pageStatus(full, page ?? {}, max);
    assert.ok(bytes(reply) <= max, `a page of ${bytes(reply)} bytes`);
    assert.deepEqual(reply.counts, {
      subscribers: 1000,
      pending_claims: 500,
      claims: 1000,
      failed: 100,
      client_marks: 2000,
    });
    return reply;
  });
  assert.ok(asked.length >= 9, `${asked.length} more pages asked for`);
  const { counts, ...rest } = joined;
  assert.ok(counts);
  assert.equal(joined.page, undefined);
  assert.deepEqual(rest, full);
  // A small STATUS stays whole, as from a luod older than pages (plus its counts).
  const small = bigStatus(10);
  const whole = pageStatus(small, {}, max);
  assert.equal(whole.page, undefined);
  assert.deepEqual(whole.subscribers, small.subscribers);
  assert.equal(whole.counts?.client_marks, 20);
  // An explicit page of a small one is a page.
  const second = pageStatus(small, { offset: 4, limit: 3 }, max);
  assert.deepEqual(second.subscribers, small.subscribers.slice(4, 7));
  assert.deepEqual(second.page, { offset: 4, limit: 3, next: 7 });
  assert.equal(STATUS_PAGE_LIMIT, 100);
});

const sockets: net.Socket[] = [];
after(() => {
  for (const s of sockets) s.destroy();
});

/** `n` connections, each subscribed with a long id; resolves once every reply came. */
async function subscribeMany(socket: string, n: number): Promise<void> {
  const one = (i: number) =>
    new Promise<void>((resolve, reject) => {
      const s = net.connect(socket);
      sockets.push(s);
      let text = '';
      s.on('error', reject);
      s.on('data', (d) => {
        text += d;
        if (!text.includes('\n')) return;
        const reply = JSON.parse(text.slice(0, text.indexOf('\n')));
        if (reply.ok === true) resolve();
        else reject(new Error(`SUBSCRIBE ${longId(i)}: ${JSON.stringify(reply)}`));
      });
      s.on('connect', () => s.write(`${JSON.stringify({ cmd: 'SUBSCRIBE', id: longId(i) })}\n`));
    });
  for (let i = 0; i < n; i += 100) {
    await Promise.all(Array.from({ length: Math.min(100, n - i) }, (_, j) => one(i + j)));
  }
}

/** The first line luod answers to a bare `{"cmd": CMD}`, read with node:net (no client library). */
function firstLine(socket: string, cmd: string): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const s = net.connect(socket);
    let text = '';
    s.on('error', reject);
    s.on('data', (d) => {
      text += d;
      if (text.includes('\n')) {
        s.destroy();
        resolve(text.slice(0, text.indexOf('\n')));
      }
    });
    s.on('connect', () => s.write(`${JSON.stringify({ cmd })}\n`));
  });
}

test(`luoctl status --json lists all of ${CLIENTS} subscribers; a raw STATUS is a page that fits the line`, async () => {
  await subscribeMany(host.socket, CLIENTS);
  // Raw: one line, within the limit, saying how many there are and where the next page starts.
  const raw = await firstLine(host.socket, 'STATUS');
  assert.ok(Buffer.byteLength(raw) <= MAX_LINE_BYTES, `${Buffer.byteLength(raw)} bytes`);
  const first = JSON.parse(raw);
  assert.equal(first.ok, true);
  assert.equal(first.counts.subscribers, CLIENTS);
  assert.ok(first.page && first.page.next !== null, JSON.stringify(first.page));
  assert.ok(first.subscribers.length < CLIENTS);

  const expected = Array.from({ length: CLIENTS }, (_, i) => longId(i)).sort();
  const run = host.luoctl('status', '--json');
  assert.equal(run.status, 0, run.stderr);
  const status = JSON.parse(run.stdout);
  assert.equal(status.ok, true);
  assert.equal(status.page, undefined);
  assert.ok(status.clients >= CLIENTS, `${status.clients} clients`); // luoctl counts itself
  assert.deepEqual([...status.subscribers].sort(), expected);
  // For people: the count and the first few, not 1400 ids.
  const human = host.luoctl('status');
  assert.equal(human.status, 0, human.stderr);
  assert.match(human.stdout, new RegExp(`subscribed: ${CLIENTS}: vm-\\d{6}-x+, .*--json lists all`));
  // The client library joins the pages too.
  const admin = await LuoClient.connect(host.socket);
  try {
    const viaLibrary = await admin.status();
    assert.deepEqual([...viaLibrary.subscribers].sort(), expected);
  } finally {
    admin.close();
  }
});

test('CLIENTS and SESSIONS longer than a line go in pages that fit it, and join back to the whole', () => {
  const max = MAX_LINE_BYTES - 256;
  const sessions = Array.from({ length: 1400 * 2 }, (_, i) => ({
    name: `${longId(i >> 1)}.${i & 1}`,
    client: longId(i >> 1),
    direction: 'incoming' as const,
    claimed: false,
  }));
  assert.ok(bytes({ sessions }) > MAX_LINE_BYTES, `the whole is ${bytes({ sessions })} bytes`);
  const first = pageList('sessions', sessions, {}, max);
  assert.ok(bytes(first) <= max, `${bytes(first)} bytes`);
  assert.equal(first.count, sessions.length);
  assert.deepEqual(first.sessions, sessions.slice(0, first.page!.limit));
  assert.equal(first.page!.next, first.page!.limit);
  // Every page fits; joined, they are the whole, in order.
  const pages: (typeof first)[] = [first];
  for (let next: number | null = first.page!.next; next !== null; ) {
    const page: typeof first = pageList(
      'sessions',
      sessions,
      { offset: next, limit: first.page!.limit },
      max,
    );
    assert.ok(bytes(page) <= max, `${bytes(page)} bytes`);
    pages.push(page);
    next = page.page!.next;
  }
  assert.deepEqual(
    pages.flatMap((p) => p.sessions),
    sessions,
  );
  // A short list stays whole, with its count.
  assert.deepEqual(pageList('sessions', sessions.slice(0, 3), {}, max), {
    sessions: sessions.slice(0, 3),
    count: 3,
  });
  assert.equal(LIST_PAGE_LIMIT, 500);
});

test(`luoctl clients --json lists all of ${CLIENTS} clients; a raw CLIENTS is a page that fits the line`, async () => {
  // The connections of the test before are still subscribed.
  const raw = await firstLine(host.socket, 'CLIENTS');
  assert.ok(Buffer.byteLength(raw) <= MAX_LINE_BYTES, `${Buffer.byteLength(raw)} bytes`);
  const first = JSON.parse(raw);
  assert.equal(first.ok, true);
  assert.ok(first.count > CLIENTS, `${first.count} clients`); // this connection counts too
  assert.ok(first.page && first.page.next !== null, JSON.stringify(first.page));
  assert.ok(first.clients.length < CLIENTS);

  const expected = Array.from({ length: CLIENTS }, (_, i) => longId(i)).sort();
  const ids = (list: { id: string | null }[]) =>
    list
      .map((c) => c.id)
      .filter((id): id is string => id !== null)
      .sort();
  const run = host.luoctl('clients', '--json');
  assert.equal(run.status, 0, run.stderr);
  const reply = JSON.parse(run.stdout);
  assert.equal(reply.ok, true);
  assert.equal(reply.page, undefined);
  assert.deepEqual(ids(reply.clients), expected);
  const admin = await LuoClient.connect(host.socket);
  try {
    assert.deepEqual(ids(await admin.clients()), expected);
    // No update: no sessions, and the reply says how many there are.
    assert.deepEqual(await admin.sessions(), []);
  } finally {
    admin.close();
  }
  const sessions = host.luoctl('sessions', '--json');
  assert.equal(sessions.status, 0, sessions.stderr);
  assert.equal(JSON.parse(sessions.stdout).count, 0);
});
