/**
 * LuoClient.connectWithRetry after a reboot: a VMM started before luod connects as soon as
 * luod's socket appears, not a retry interval later (the wait is its VM's blackout).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { LuoClient } from '../src/client/index.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-connect-wait-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('a socket that appears wakes the waiting client long before its retry interval', async () => {
  const socket = path.join(dir, 'luod.sock');
  const server = net.createServer((c) => c.end());
  try {
    // An hour between attempts: only the socket's creation can wake the client in time.
    const connecting = LuoClient.connectWithRetry(socket, { intervalMs: 3_600_000, timeoutMs: 7_200_000 });
    await new Promise((r) => setTimeout(r, 200));
    await new Promise<void>((resolve) => server.listen(socket, resolve));
    const outcome = await Promise.race([
      connecting.then((client) => {
        client.close();
        return 'connected';
      }),
      new Promise((r) => setTimeout(r, 30_000, 'still waiting after 30 s')),
    ]);
    assert.equal(outcome, 'connected');
  } finally {
    server.close();
  }
});

test('a directory that does not exist yet: the plain interval, then the connection', async () => {
  const socket = path.join(dir, 'later', 'luod.sock');
  const server = net.createServer((c) => c.end());
  try {
    const connecting = LuoClient.connectWithRetry(socket, { intervalMs: 50, timeoutMs: 60_000 });
    await new Promise((r) => setTimeout(r, 200));
    fs.mkdirSync(path.dirname(socket));
    await new Promise<void>((resolve) => server.listen(socket, resolve));
    (await connecting).close();
  } finally {
    server.close();
  }
});

test('cancelled while waiting for the socket: ECANCELED, and no watcher keeps the process alive', async () => {
  const controller = new AbortController();
  const connecting = LuoClient.connectWithRetry(path.join(dir, 'never.sock'), {
    intervalMs: 3_600_000,
    timeoutMs: 7_200_000,
    signal: controller.signal,
  });
  setTimeout(() => controller.abort(), 100);
  await assert.rejects(connecting, (err: Error & { code?: string }) => err.code === 'ECANCELED');
});
