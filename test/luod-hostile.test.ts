/**
 * luod against a hostile or faulty local client (issue 11): each test is one
 * way a client crashed luod, lost memory, or starved everyone else before
 * the fix, run against a real `luod --emulate` with its holder process.
 * After each attack a bystander must still get its STATUS answered, and
 * luod's fds and memory must stay bounded.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { LuoClient } from '../src/client/index.js';
import { memfdCreate } from '../src/sys/index.js';
import { HolderHost } from './crash/hosts.js';
import { claimAndCheck, closeAllVms, startVm, status, waitSubscribed, withHost } from './crash/vms.js';
import { bystander, fdCount, RawPeer, rssBytes, sleep } from './hostile/peer.js';
import { waitUntil } from './support/wait.js';

after(closeAllVms);

/** A bystander's STATUS must come back within this (luod's watchdog is 30 s). */
const BYSTANDER_BOUND_MS = 5_000;

async function assertServing(host: HolderHost): Promise<void> {
  host.luodPid(); // throws with the log when luod died
  await bystander(host.socket, BYSTANDER_BOUND_MS);
}

describe('luod survives hostile clients', { concurrency: false }, () => {
  test('a deeply nested seq (or cmd) gets an error naming the field, not an echo; luod lives', async () => {
    await withHost(new HolderHost([]), async (host) => {
      await host.start();
      const peer = RawPeer.connect(host.socket);
      const deep = `${'['.repeat(5000)}${']'.repeat(5000)}`;
      await peer.send(`{"cmd":"STATUS","seq":${deep}}\n`);
      const first = await peer.reply();
      assert.equal((first.error as { code: string }).code, 'EINVAL');
      assert.match((first.error as { message: string }).message, /seq/);
      assert.equal(first.seq, undefined, 'the invalid seq is not echoed');
      await peer.send(`{"cmd":${deep}}\n`);
      const second = await peer.reply();
      assert.equal((second.error as { code: string }).code, 'ENOTSUP');
      assert.ok(JSON.stringify(second).length < 300, JSON.stringify(second).slice(0, 300));
      await peer.send('{"cmd":"STATUS","seq":7}\n');
      const third = await peer.reply();
      assert.equal(third.seq, 7);
      assert.equal(third.ok, true);
      peer.close();
      await assertServing(host);
    });
  });

  test('connection churn beyond the client limit: refusals to peers that hung up do not kill luod', async () => {
    await withHost(new HolderHost([]), async (host) => {
      await host.start();
      for (let round = 0; round < 3; round++) {
        // All connected before luod accepts any, then all gone: luod meets more than its
        // client limit (256) in one go and answers the surplus with EMFILE, to closed peers.
        const peers: RawPeer[] = [];
        for (let i = 0; i < 450; i++) {
          try {
            peers.push(RawPeer.connect(host.socket));
          } catch {
            break; // the backlog (512) is full
          }
        }
        assert.ok(peers.length > 300, `only ${peers.length} connects queued`);
        for (const p of peers) p.close();
        await sleep(200);
      }
      await assertServing(host);
      await waitUntil(
        async () => (await status(host)).clients === 1,
        'luod dropped every churned connection',
      );
    });
  });

  test('fds sent on a line that never ends are capped: the connection goes, the fds with it', async () => {
    await withHost(new HolderHost([]), async (host) => {
      await host.start();
      const pid = host.luodPid();
      const before = fdCount(pid);
      using devnull = memfdCreate('hoard');
      const fds = Array.from({ length: 250 }, () => devnull);
      const peers: RawPeer[] = [];
      for (let c = 0; c < 8; c++) {
        const peer = RawPeer.connect(host.socket);
        peers.push(peer);
        for (let i = 0; i < 10; i++) {
          if (peer.trySend('x', fds) < 0) break; // luod closed it, or stopped reading
        }
      }
      for (const peer of peers) assert.ok(await peer.closedByLuod(), 'luod closes a connection hoarding fds');
      for (const peer of peers) peer.close();
      await waitUntil(() => fdCount(pid) < before + 32, `luod's fds back near ${before}`).catch(() => {
        assert.fail(`luod holds ${fdCount(pid)} fds, ${before} before the attack`);
      });
      await assertServing(host);
    });
  });

  test('clients that pipeline STATUS and never read are throttled, not buffered or dropped', async () => {
    await withHost(new HolderHost([]), async (host) => {
      await host.start();
      const pid = host.luodPid();
      const rssBefore = rssBytes(pid);
      const block = Buffer.from('{"cmd":"STATUS"}\n'.repeat(4000));
      const peers = [
        RawPeer.connect(host.socket),
        RawPeer.connect(host.socket),
        RawPeer.connect(host.socket),
      ];
      let peak = rssBefore;
      let worstBystander = 0;
      let attacking = true;
      const watching = (async () => {
        while (attacking) {
          worstBystander = Math.max(worstBystander, await bystander(host.socket, BYSTANDER_BOUND_MS));
          await sleep(50);
        }
      })();
      const until = Date.now() + 3000;
      while (Date.now() < until) {
        for (const peer of peers) for (let i = 0; i < 16 && peer.trySend(block) > 0; i++);
        peak = Math.max(peak, rssBytes(pid));
        await sleep(1);
      }
      attacking = false;
      await watching;
      // Before back-pressure luod read 4 MB per turn of its loop and queued a reply
      // for each line: +600 MiB for one such client, then it dropped the client.
      const grown = peak - rssBefore;
      assert.ok(grown < 96 << 20, `luod grew by ${(grown / 2 ** 20).toFixed(0)} MiB`);
      assert.ok(worstBystander < BYSTANDER_BOUND_MS);
      // Throttled, not dropped: once a peer reads, its replies come, in order.
      for (const peer of peers) {
        const first = await peer.reply();
        assert.equal(first.ok, true, JSON.stringify(first).slice(0, 200));
        for (let i = 0; i < 100; i++) assert.equal((await peer.reply()).ok, true);
        peer.close();
      }
      await assertServing(host);
    });
  });

  test('two UPDATEs in one read: the second is refused with EBUSY, the first completes', async () => {
    await withHost(new HolderHost([]), async (host) => {
      await host.start();
      const vms = [await startVm(host, 'vm-a'), await startVm(host, 'vm-b')];
      await waitSubscribed(host, ['vm-a', 'vm-b']);
      const peer = RawPeer.connect(host.socket);
      await peer.send(
        '{"cmd":"UPDATE","seq":1,"timeout_ms":30000}\n{"cmd":"UPDATE","seq":2,"timeout_ms":30000}\n',
      );
      const finals = new Map<unknown, Record<string, unknown>>();
      while (finals.size < 2) {
        const reply = await peer.reply(60_000);
        if (reply.event === 'PROGRESS') continue;
        finals.set(reply.seq, reply);
      }
      assert.equal((finals.get(2)!.error as { code: string } | undefined)?.code, 'EBUSY');
      assert.equal(finals.get(1)!.outcome, 'rebooted', JSON.stringify(finals.get(1)));
      for (const vm of vms) await claimAndCheck(host, vm);
      peer.close();
    });
  });

  test('after the kexec, a fast CLAIM waits until every incoming session has its second holder', async () => {
    // Before: recover() answered CLAIMs while it handed the incoming sessions to the holder
    // one by one; a fast claim closed its session, the next hold failed, the rest stayed
    // with luod alone, and a luod killed then lost the slow VMs' memory.
    await withHost(new HolderHost(['--claim-timeout', '120']), async (host) => {
      await host.start();
      const ids = Array.from({ length: 10 }, (_, i) => `vm-${i}`);
      const vms = [];
      for (const id of ids) vms.push(await startVm(host, id));
      await waitSubscribed(host, ids);
      const fast = 'vm-0';
      const claimer = RawPeer.connect(host.socket);
      let claimed = false;
      const claiming = (async () => {
        for (let seq = 0; !claimed; seq++) {
          await claimer.send(`{"cmd":"CLAIM","id":"${fast}","seq":${seq}}\n`);
          const reply = await claimer.reply(60_000);
          if (reply.ok === true) claimed = true;
          else await sleep(1);
        }
      })();
      const admin = await LuoClient.connect(host.socket);
      const outcome = await admin.update({ timeoutMs: 30_000 });
      admin.close();
      assert.equal(outcome.outcome, 'rebooted');
      await claiming;
      claimer.close();
      await waitUntil(
        async () => ((await status(host)).pending_claims as string[]).length === ids.length - 1,
        'the fast claim counted',
      );
      assert.doesNotMatch(host.log(), /could not take the incoming sessions/);
      // luod dies before the slow VMMs claim: the holder has their sessions.
      await host.kill();
      await host.start();
      const pending = (await status(host)).pending_claims as string[];
      assert.deepEqual(pending.slice().sort(), ids.filter((id) => id !== fast).sort(), 'not offered again');
      for (const vm of vms.slice(1)) await claimAndCheck(host, vm);
    });
  });

  test('luod starts at once where its socket directory does not exist yet', async () => {
    const host = new HolderHost([], { socket: 'run/luod/luod.sock' });
    const nested = host.socket;
    await withHost(host, async (h) => {
      const start = Date.now();
      await h.start();
      assert.ok(Date.now() - start < 15_000, `luod took ${Date.now() - start} ms to start`);
      assert.equal(fs.statSync(path.dirname(nested)).mode & 0o777, 0o755);
      await assertServing(h);
    });
  });
});
