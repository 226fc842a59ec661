/**
 * luod's limits for clients of other uids (issue 11's weaknesses), against a
 * real `luod --emulate --group 65534`, with the other uid played by child
 * processes running as nobody:
 *  - an id belongs to the uid that first subscribed it, across restarts;
 *  - STATUS shows a non-admin only its own ids;
 *  - a line left unfinished closes its connection (--line-timeout);
 *  - a uid's connections that have not subscribed are capped, and the last
 *    slots are kept for root;
 *  - a state file that cannot be written (full disk) calls the update off
 *    before anything is at risk, and every VM resumes.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { LuoClient } from '../src/client/index.js';
import { MAX_ANONYMOUS_PER_UID, RESERVED_SLOTS } from '../src/daemon/luod.js';
import { DEFAULT_MAX_CLIENTS } from '../src/protocol/messages.js';
import { HolderHost } from './crash/hosts.js';
import { closeAllVms, fullUpdate, startVm, status, waitSubscribed, withHost } from './crash/vms.js';
import { RawPeer, sleep } from './hostile/peer.js';
import { waitUntil } from './support/wait.js';

after(closeAllVms);

const NOBODY = 65534;

/**
 * Runs `body` (the inside of an async function) as uid nobody, in plain
 * Node: `open()` gives a connection with `ask(message)` (its reply),
 * `next()` (the next line luod sends, or `{closed: true}`), `unasked(ms)`
 * (a line luod sent within `ms` without being asked, or null) and `socket`.
 * What `body` returns comes back as `result`; the child then keeps its
 * connections open until `finish()`.
 */
function startNobody(socket: string, body: string): { result: Promise<unknown>; finish(): Promise<void> } {
  const script = `
    const net = require('node:net');
    function open() {
      return new Promise((resolve, reject) => {
        const s = net.connect(${JSON.stringify(socket)});
        let buf = '';
        const lines = [];
        const waiters = [];
        let closed = false;
        const wake = () => { for (const w of waiters.splice(0)) w(); };
        s.on('data', (d) => {
          buf += d;
          const parts = buf.split('\\n');
          buf = parts.pop();
          for (const p of parts) lines.push(JSON.parse(p));
          wake();
        });
        s.on('close', () => { closed = true; wake(); });
        s.on('error', reject);
        s.on('connect', () => resolve({
          socket: s,
          next: async () => {
            for (;;) {
              if (lines.length) return lines.shift();
              if (closed) return { closed: true };
              await new Promise((r) => waiters.push(r));
            }
          },
          ask: async function (message) { s.write(JSON.stringify(message) + '\\n'); return this.next(); },
          unasked: async (ms) => {
            await new Promise((r) => setTimeout(r, ms));
            return lines.shift() ?? null;
          },
        }));
      });
    }
    (async () => { ${body} })().then(
      (out) => {
        process.stdout.write(JSON.stringify(out) + '\\n');
        process.stdin.on('data', () => {}).on('end', () => process.exit(0));
      },
      (err) => { process.stderr.write(String((err && err.stack) || err)); process.exit(1); });`;
  const child = spawn(process.execPath, ['-e', script], {
    uid: NOBODY,
    gid: NOBODY,
    stdio: ['pipe', 'pipe', 'pipe'],
    cwd: '/',
  });
  let out = '';
  let err = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    err += d;
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  const result = new Promise<unknown>((resolve, reject) => {
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.includes('\n')) resolve(JSON.parse(out.slice(0, out.indexOf('\n'))));
    });
    void exited.then((code) => reject(new Error(`the nobody client exited (${code}) first: ${err}`)));
  });
  return {
    result,
    finish: async () => {
      child.stdin.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

async function asNobody(socket: string, body: string): Promise<unknown> {
  const run = startNobody(socket, body);
  try {
    return await run.result;
  } finally {
    await run.finish();
  }
}

/** A host whose socket nobody (group 65534) can reach. */
function sharedHost(extra: string[] = []): HolderHost {
  const host = new HolderHost(['--group', String(NOBODY), ...extra]);
  fs.chmodSync(host.dir, 0o755);
  return host;
}

describe('luod limits for other uids', { concurrency: false }, () => {
  test('an id belongs to the uid that first subscribed it, across luod restarts; root may use any', async () => {
    await withHost(sharedHost(), async (host) => {
      await host.start();
      const root = await LuoClient.connect(host.socket);
      await root.subscribe('vm-root');
      root.close();
      const squat = `const c = await open(); return [await c.ask({cmd:'SUBSCRIBE',id:'vm-root'}), await c.ask({cmd:'SUBSCRIBE',id:'vm-own'})];`;
      const [refused, own] = (await asNobody(host.socket, squat)) as Record<string, unknown>[];
      assert.equal((refused!.error as { code: string }).code, 'EPERM', JSON.stringify(refused));
      assert.match((refused!.error as { message: string }).message, /belongs to uid 0/);
      assert.equal(own!.ok, true, JSON.stringify(own));
      await host.kill();
      await host.start();
      const [again] = (await asNobody(host.socket, squat)) as Record<string, unknown>[];
      assert.equal((again!.error as { code: string }).code, 'EPERM', 'still bound after a restart');
      const rootAgain = await LuoClient.connect(host.socket);
      await rootAgain.subscribe('vm-own'); // root is not refused
      rootAgain.close();
    });
  });

  test("STATUS shows a non-admin only its own ids; an admin sees everyone's", async () => {
    await withHost(sharedHost(), async (host) => {
      await host.start();
      const root = await LuoClient.connect(host.socket);
      await root.subscribe('vm-secret');
      const seen = (await asNobody(
        host.socket,
        `const a = await open(); await a.ask({cmd:'SUBSCRIBE',id:'vm-mine'});
         const b = await open(); return await b.ask({cmd:'STATUS'});`,
      )) as Record<string, unknown>;
      assert.equal(seen.ok, true);
      assert.deepEqual(seen.subscribers, ['vm-mine']);
      assert.equal(JSON.stringify(seen).includes('vm-secret'), false);
      const full = await status(host);
      assert.ok((full.subscribers as string[]).includes('vm-secret'));
      root.close();
    });
  });

  test('a line left unfinished closes its connection after --line-timeout; finished lines are served', async () => {
    await withHost(sharedHost(['--line-timeout', '1']), async (host) => {
      await host.start();
      const slow = RawPeer.connect(host.socket);
      await slow.send('{"cmd":"STA');
      const steady = RawPeer.connect(host.socket);
      const started = Date.now();
      for (let i = 0; i < 4; i++) {
        await steady.send('{"cmd":"STATUS"}\n');
        assert.equal((await steady.reply()).ok, true);
        await sleep(500);
      }
      assert.ok(await slow.closedByLuod(5000), 'the half-line connection was closed');
      assert.ok(Date.now() - started < 8000);
      assert.equal((slow.replies[0]?.error as { code: string } | undefined)?.code, 'ETIMEDOUT');
      assert.equal(steady.poll(), false, 'the steady client is still connected');
      slow.close();
      steady.close();
    });
  });

  test("one uid's connections that have not subscribed are capped; the last slots are root's", async () => {
    // --max-clients sets the limit (the default, DEFAULT_MAX_CLIENTS, is for 1000 VMs).
    const MAX_CLIENTS = 80;
    await withHost(sharedHost(['--max-clients', String(MAX_CLIENTS)]), async (host) => {
      await host.start();
      // 32 idle connections are fine, the 33rd is refused; subscribed ones count only
      // against the total, whose last 16 slots only root (or a claimant) may take.
      const nobody = startNobody(
        host.socket,
        `const idle = [];
         for (let i = 0; i < ${MAX_ANONYMOUS_PER_UID}; i++) idle.push(await open());
         const refusedIdle = await (await open()).next();
         for (const c of idle) c.socket.destroy();
         await new Promise((r) => setTimeout(r, 300));
         const subscribed = [];
         let refusal = null;
         for (let i = 0; i < ${MAX_CLIENTS}; i++) {
           const c = await open();
           // A refusal comes unasked, before luod closes the connection.
           const unasked = await c.unasked(50);
           if (unasked) { refusal = unasked; break; }
           const reply = await c.ask({ cmd: 'SUBSCRIBE', id: 'vm-' + i });
           if (reply.ok !== true) { refusal = reply; break; }
           subscribed.push(c);
         }
         return { refusedIdle, refusal, subscribed: subscribed.length };`,
      );
      try {
        const got = (await nobody.result) as {
          refusedIdle: { error?: { code: string; message: string } };
          refusal: { error?: { code: string; message: string } } | null;
          subscribed: number;
        };
        assert.equal(got.refusedIdle.error?.code, 'EMFILE', JSON.stringify(got.refusedIdle));
        assert.match(got.refusedIdle.error!.message, /have not subscribed/);
        assert.equal(got.subscribed, MAX_CLIENTS - RESERVED_SLOTS);
        assert.equal(got.refusal?.error?.code, 'EMFILE', JSON.stringify(got.refusal));
        assert.match(got.refusal!.error!.message, /kept for root/);
        // Root still gets in, and is served.
        const root = await LuoClient.connect(host.socket);
        const status = await root.status();
        assert.equal(status.phase, 'idle');
        assert.equal(status.capacity?.max_clients, MAX_CLIENTS);
        assert.equal(status.capacity?.listen_backlog, 2 * MAX_CLIENTS);
        assert.equal(status.capacity?.open_files_needed, MAX_CLIENTS * 9 + 64);
        assert.ok((status.capacity?.open_files ?? 0) > 0, 'luod reads its RLIMIT_NOFILE');
        root.close();
      } finally {
        await nobody.finish();
      }
    });
  });

  test('a state file that cannot be written (full disk) calls the update off; every VM resumes', async () => {
    const host = new HolderHost([], { socket: 'full/luod.sock' });
    const full = path.dirname(host.socket);
    fs.mkdirSync(full);
    await withHost(host, async (h) => {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0755', 'luokit-full-disk', full]);
      try {
        await h.start();
        const vms = [await startVm(h, 'vm-a'), await startVm(h, 'vm-b')];
        await waitSubscribed(h, ['vm-a', 'vm-b']);
        const filler = path.join(full, 'filler');
        const fd = fs.openSync(filler, 'w');
        try {
          for (;;) fs.writeSync(fd, Buffer.alloc(64 << 10));
        } catch (err) {
          assert.equal((err as NodeJS.ErrnoException).code, 'ENOSPC');
        } finally {
          fs.closeSync(fd);
        }
        const admin = await LuoClient.connect(h.socket);
        const outcome = await admin.update({ timeoutMs: 30_000 });
        admin.close();
        assert.equal(outcome.outcome, 'aborted', JSON.stringify(outcome));
        assert.match(String(outcome.reason), /state file .* cannot be written \(ENOSPC\)/);
        await waitUntil(() => vms.every((vm) => vm.aborted.length === 1), 'every VM was told ABORTED');
        await waitUntil(() => vms.every((vm) => vm.openSessions() === 0), 'every VM let go of its sessions');
        await waitUntil(async () => (await h.sessions()).outgoing.length === 0, 'the kernel holds nothing');
        // Space again: the next update goes through.
        fs.rmSync(filler);
        await fullUpdate(h, vms);
      } finally {
        await h.kill();
        execFileSync('umount', ['-l', full]);
      }
    });
  });
});

test('--max-clients: at least 1024 by default; a value that leaves no slot to VMMs is refused', () => {
  assert.ok(DEFAULT_MAX_CLIENTS >= 1024);
  for (const bad of ['16', '-1', 'many', '1.5']) {
    const run = spawnSync(
      process.execPath,
      ['--import', 'tsx', 'src/daemon/main.ts', '--emulate', '--max-clients', bad],
      {
        encoding: 'utf8',
        timeout: 60_000,
      },
    );
    assert.equal(run.status, 1, run.stderr);
    assert.match(run.stderr, /^luod: EINVAL: --max-clients must be an integer above 16$/m);
  }
});
