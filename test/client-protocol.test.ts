/**
 * The client against a fake luod that breaks the protocol: replies and
 * events that are malformed, or whose fds do not match their session names,
 * must be refused with a clear EPROTO error (and their fds closed), never
 * half-used. The fake speaks through LineChannel, so it can attach fds.
 * It also plays a luod older than RESUMED, which the client must live with.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { LuoClient, type LuoClientError } from '../src/client/index.js';
import { LineChannel } from '../src/protocol/lines.js';
import { Command, OPTIONAL_COMMANDS } from '../src/protocol/messages.js';
import { memfdCreate } from '../src/sys/index.js';
import { UnixServer } from '../src/sys/unix-socket.js';
import { waitUntil } from './support/wait.js';

type Script = (command: Record<string, unknown>, channel: LineChannel) => void;

/** A fake luod at a fresh path: `script` answers each command; the test swaps it per case. */
class FakeLuod {
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-fake-protocol-'));
  readonly path = path.join(this.dir, 'luod.sock');
  readonly #server = UnixServer.listen(this.path);
  readonly commands: Record<string, unknown>[] = [];
  script: Script = () => {};

  constructor() {
    this.#server.on('connection', (socket) => {
      const channel = new LineChannel(socket);
      channel.on('message', (value, fds) => {
        for (const fd of fds) fd.close();
        const command = value as Record<string, unknown>;
        this.commands.push(command);
        this.script(command, channel);
      });
    });
  }

  close(): void {
    this.#server.close();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** One fake luod for the whole file; each case sets its script. */
const luod = new FakeLuod();
after(() => luod.close());

/** How many fds this process has open: the client must close every fd of a message it refuses. */
function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

async function rejection(promise: Promise<unknown>): Promise<LuoClientError> {
  try {
    await promise;
  } catch (err) {
    return err as LuoClientError;
  }
  assert.fail('expected a rejection');
}

/** Send `fields` as the reply to `command`, with `fdCount` fresh memfds attached. */
function answer(channel: LineChannel, command: Record<string, unknown>, fields: object, fdCount = 0): void {
  const fds = Array.from({ length: fdCount }, (_, i) => memfdCreate(`fake-${i}`));
  void channel.send({ seq: command.seq, ok: true, ...fields }, fds).finally(() => {
    for (const fd of fds) fd.close();
  });
}

describe('a malformed CLAIM reply is refused', () => {
  async function claimAgainst(fields: object, fdCount: number): Promise<LuoClientError> {
    luod.script = (command, channel) => answer(channel, command, fields, fdCount);
    const client = await LuoClient.connect(luod.path);
    try {
      await client.status().catch(() => {}); // the connection is up and settled before counting
      const before = openFds();
      const err = await rejection(client.claim('vm-1'));
      assert.equal(openFds(), before, 'the fds of a refused CLAIM reply are closed');
      return err;
    } finally {
      client.close();
    }
  }

  test('fewer fds than session names', async () => {
    const err = await claimAgainst({ id: 'vm-1', update: 'u-1', sessions: ['vm-1', 'vm-1.1'] }, 1);
    assert.equal(err.code, 'EPROTO');
    assert.equal(err.command, 'CLAIM');
    assert.match(err.message, /CLAIM of vm-1: luod named 2 session\(s\) but sent 1 fd\(s\)/);
  });

  test('session names but no fds at all', async () => {
    const err = await claimAgainst({ id: 'vm-1', update: 'u-1', sessions: ['vm-1'] }, 0);
    assert.equal(err.code, 'EPROTO');
    assert.match(err.message, /named 1 session\(s\) but sent 0 fd\(s\)/);
  });

  test('a missing field', async () => {
    const err = await claimAgainst({ id: 'vm-1', sessions: ['vm-1'] }, 1);
    assert.equal(err.code, 'EPROTO');
    assert.equal(err.command, 'CLAIM');
    assert.match(err.message, /malformed CLAIM reply for vm-1: update: /);
  });

  test('session names that are not strings', async () => {
    const err = await claimAgainst({ id: 'vm-1', update: 'u-1', sessions: [7] }, 1);
    assert.equal(err.code, 'EPROTO');
    assert.match(err.message, /malformed CLAIM reply for vm-1: sessions\.0: /);
  });

  test('a SUBSCRIBE reply without its session names', async () => {
    luod.script = (command, channel) => answer(channel, command, { id: 'vm-1' });
    const client = await LuoClient.connect(luod.path);
    try {
      const err = await rejection(client.subscribe('vm-1'));
      assert.equal(err.code, 'EPROTO');
      assert.match(err.message, /malformed SUBSCRIBE reply: sessions: /);
    } finally {
      client.close();
    }
  });
});

describe('a malformed START_PRESERVATION is answered with FAILED, and the handler never runs', () => {
  const goodEvent = {
    event: 'START_PRESERVATION',
    update: 'u-1',
    id: 'vm-1',
    sessions: ['vm-1'],
    deadline: new Date(Date.now() + 30_000).toISOString(),
    deadline_ms: 30_000,
  };

  /** Subscribe, receive `event` with `fdCount` memfds, and return luod's FAILED and the client's warnings. */
  async function preservationOf(event: object, fdCount: number) {
    luod.commands.length = 0;
    luod.script = (command, channel) => {
      answer(channel, command, command.cmd === 'SUBSCRIBE' ? { id: 'vm-1', sessions: ['vm-1'] } : {});
      if (command.cmd !== 'SUBSCRIBE') return;
      const fds = Array.from({ length: fdCount }, (_, i) => memfdCreate(`fake-${i}`));
      void channel.send(event, fds).finally(() => {
        for (const fd of fds) fd.close();
      });
    };
    const client = await LuoClient.connect(luod.path);
    const warnings: LuoClientError[] = [];
    client.on('warning', (err) => warnings.push(err as LuoClientError));
    let handled = false;
    client.onPreserve(() => {
      handled = true;
    });
    try {
      await client.subscribe('vm-1');
      await waitUntil(() => luod.commands.some((c) => c.cmd === 'FAILED' || c.cmd === 'READY'), 'an answer');
      assert.equal(handled, false, 'the preserve handler must not run');
      assert.equal(client.currentUpdate, null);
      const failed = luod.commands.find((c) => c.cmd === 'FAILED');
      assert.ok(failed, `FAILED, not ${JSON.stringify(luod.commands.map((c) => c.cmd))}`);
      assert.equal(warnings[0]?.code, 'EPROTO');
      return { failed, warning: warnings[0]! };
    } finally {
      client.close();
    }
  }

  test('session names without their fds', async () => {
    const { failed, warning } = await preservationOf({ ...goodEvent, sessions: ['vm-1', 'vm-1.1'] }, 1);
    assert.equal(failed.update, 'u-1');
    assert.match(String(failed.reason), /START_PRESERVATION: luod named 2 session\(s\) but sent 1 fd\(s\)/);
    assert.match(warning.message, /named 2 session\(s\) but sent 1 fd\(s\)/);
  });

  test('no fds at all', async () => {
    const { failed } = await preservationOf(goodEvent, 0);
    assert.match(String(failed.reason), /named 1 session\(s\) but sent 0 fd\(s\)/);
  });

  test('missing fields', async () => {
    const { sessions: _s, deadline_ms: _d, ...partial } = goodEvent;
    const { failed, warning } = await preservationOf(partial, 0);
    assert.equal(failed.update, 'u-1', 'FAILED names the update when the event did');
    assert.match(warning.message, /malformed START_PRESERVATION: (sessions|deadline_ms): /);
    assert.match(String(failed.reason), /malformed START_PRESERVATION/);
  });

  test('a deadline that is not a time', async () => {
    const { warning } = await preservationOf({ ...goodEvent, deadline: 'soon' }, 1);
    assert.match(warning.message, /malformed START_PRESERVATION: deadline: /);
  });
});

describe('malformed ABORTED and KEXEC are still acted on, with a warning', () => {
  test('an ABORTED without a reason still reaches the handler', async () => {
    luod.script = (command, channel) => {
      answer(channel, command, { id: 'vm-1', sessions: ['vm-1'] });
      void channel.send({ event: 'ABORTED', update: 'u-1' });
      void channel.send({ event: 'KEXEC' });
    };
    const client = await LuoClient.connect(luod.path);
    const warnings: string[] = [];
    client.on('warning', (err) => warnings.push(err.message));
    const aborted: { update: string; reason: string }[] = [];
    const kexecs: string[] = [];
    client.onAborted((event) => {
      aborted.push(event);
    });
    client.onKexec((event) => {
      kexecs.push(event.update);
    });
    try {
      await client.subscribe('vm-1');
      await waitUntil(() => aborted.length === 1 && kexecs.length === 1, 'both handlers');
      assert.deepEqual(aborted, [{ update: '', reason: 'luod sent a malformed ABORTED' }]);
      assert.deepEqual(kexecs, ['']);
      assert.ok(
        warnings.some((w) => /malformed ABORTED: reason: /.test(w)),
        warnings.join('\n'),
      );
      assert.ok(
        warnings.some((w) => /malformed KEXEC: update: /.test(w)),
        warnings.join('\n'),
      );
    } finally {
      client.close();
    }
  });
});

describe('lines that are no message (framing is LineChannel, as in luod)', () => {
  test('a line that is not JSON is a warning; a line over 64 KiB ends the connection with E2BIG', async () => {
    luod.script = (command, channel) => {
      void channel.socket.send(Buffer.from('not json\n'));
      answer(channel, command, { phase: 'idle' });
      if (command.cmd === 'UNSUBSCRIBE') void channel.socket.send(Buffer.alloc(70_000, 0x61));
    };
    const client = await LuoClient.connect(luod.path);
    const warnings: LuoClientError[] = [];
    client.on('warning', (err) => warnings.push(err as LuoClientError));
    try {
      assert.equal((await client.status()).phase, 'idle');
      assert.equal(warnings[0]?.code, 'EPROTO');
      assert.match(warnings[0]!.message, /luod sent a malformed line: not JSON/);
      await client.unsubscribe().catch(() => {});
      const info = await client.closed;
      assert.equal(info.byClient, false);
      assert.equal(info.error?.code, 'E2BIG');
    } finally {
      client.close();
    }
  });
});

describe('RESUMED (optional): the schema, and a client talking to an older luod', () => {
  /** What luod before RESUMED answers a command it does not know (src/daemon/luod.ts then). */
  const olderLuod: Script = (command, channel) => {
    if (command.cmd === 'HELLO')
      answer(channel, command, {
        version: 1,
        server: 'luod/0.1.0',
        backend: 'emulated',
        limits: { max_line: 65536, max_fds: 16, max_clients: 1024, max_id: 48 },
      });
    else if (command.cmd === 'STATUS') answer(channel, command, { phase: 'idle' });
    else
      void channel.send({
        seq: command.seq,
        ok: false,
        error: { code: 'ENOTSUP', message: `unknown command ${String(command.cmd)}` },
      });
  };
  const report = { id: 'vm-1', update: 'u-1', pausedAt: 1_800_000_000_000, resumedAt: 1_800_000_001_500 };

  test('the schema: id, update and two epoch-ms times; anything else is invalid', () => {
    const ok = { cmd: 'RESUMED', id: 'vm-1', update: 'u-1', paused_at: 1, resumed_at: 2 };
    assert.equal(Command.safeParse(ok).success, true);
    for (const bad of [
      { ...ok, update: undefined },
      { ...ok, id: 'vm 1' },
      { ...ok, paused_at: -1 },
      { ...ok, resumed_at: '2' },
      { ...ok, paused_at: Number.POSITIVE_INFINITY },
      { ...ok, update: 'u'.repeat(65) },
    ])
      assert.equal(Command.safeParse(bad).success, false, JSON.stringify(bad));
    assert.ok(OPTIONAL_COMMANDS.includes('RESUMED'));
  });

  test("after a HELLO that does not list it, the client sends nothing and says 'not recorded' (null)", async () => {
    luod.script = olderLuod;
    const client = await LuoClient.connect(luod.path);
    try {
      const hello = await client.hello();
      assert.equal(hello.commands, undefined);
      const before = luod.commands.length;
      assert.equal(await client.resumed(report), null);
      assert.equal(
        luod.commands.slice(before).some((c) => c.cmd === 'RESUMED'),
        false,
        'an older luod is not sent a command it would count as unknown',
      );
    } finally {
      client.close();
    }
  });

  test("without HELLO, an older luod's ENOTSUP is 'not recorded' (null), not a failure; the connection goes on", async () => {
    luod.script = olderLuod;
    const client = await LuoClient.connect(luod.path);
    try {
      assert.equal(await client.resumed(report), null);
      const sent = luod.commands.filter((c) => c.cmd === 'RESUMED').at(-1);
      assert.deepEqual(
        { ...sent, seq: undefined },
        {
          cmd: 'RESUMED',
          id: 'vm-1',
          update: 'u-1',
          paused_at: report.pausedAt,
          resumed_at: report.resumedAt,
          seq: undefined,
        },
      );
      assert.equal((await client.status()).phase, 'idle');
      assert.equal(client.isClosed, false);
    } finally {
      client.close();
    }
  });

  test('a luod that knows RESUMED: its figure; its refusals and a malformed reply still reject', async () => {
    let answerWith: object = { blackout_ms: 1500 };
    luod.script = (command, channel) => {
      if (command.cmd !== 'RESUMED') return answer(channel, command, {});
      if ('error' in answerWith) void channel.send({ seq: command.seq, ok: false, ...answerWith });
      else answer(channel, command, answerWith);
    };
    const client = await LuoClient.connect(luod.path);
    try {
      assert.equal(await client.resumed(report), 1500);
      answerWith = {
        error: { code: 'EPERM', message: 'RESUMED of vm-1: subscribed by uid 0, you are uid 1000' },
      };
      const refused = await rejection(client.resumed(report));
      assert.equal(refused.code, 'EPERM');
      assert.equal(refused.command, 'RESUMED');
      answerWith = { blackout: 'long' };
      const malformed = await rejection(client.resumed(report));
      assert.equal(malformed.code, 'EPROTO');
      assert.match(malformed.message, /malformed RESUMED reply: blackout_ms/);
    } finally {
      client.close();
    }
  });
});
