/**
 * The hostile-client fuzzer: seeded, property-based sequences of what a
 * hostile or faulty local client can do to luod, interleaved with real live
 * updates of real VMMs, against a real `luod --emulate` and its holder.
 *
 * A step is one of: garbage bytes, random JSON, a command with random
 * fields, deeply nested JSON, an oversized line, fds attached in random
 * counts, kinds and chunks, a slow reader that pipelines and never reads, a
 * half line then a hang-up, connection churn, or a live update (completed,
 * held at the barrier until it times out, or aborted by an operator), with
 * hostile steps running during it and, sometimes, luod killed after its
 * kexec. After every step:
 *  - luod is alive and answers a bystander within BYSTANDER_BOUND_MS;
 *  - its fd count and RSS are within fixed bounds of where they started;
 *  - its holder has a copy of every session luod has (never luod alone);
 * and after every update: it completed and every VMM claimed and verified
 * its memory, or it was called off and every VMM was told ABORTED and the
 * kernel keeps nothing preserved.
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { LuoClient } from '../../src/client/index.js';
import { memfdCreate, type OwnedFd } from '../../src/sys/index.js';
import { socketpair } from '../../src/sys/socket.js';
import { HolderHost } from '../crash/hosts.js';
import { claimAndCheck, startVm, status, type Vm, waitSubscribed } from '../crash/vms.js';
import { waitUntil } from '../support/wait.js';
import { bystander, fdCount, RawPeer, rssBytes, sleep } from './peer.js';

export const BYSTANDER_BOUND_MS = 5_000;
/** luod's fds may exceed their starting count by this much, plus one per open slow reader. */
const FD_SLACK = 48;
const RSS_SLACK = 256 << 20;

type FdKind = 'memfd' | 'socket' | 'self';

export type Step =
  | { kind: 'garbage'; bytes: Uint8Array }
  | { kind: 'json'; value: unknown }
  | { kind: 'command'; cmd: string; fields: Record<string, unknown> }
  | { kind: 'nested'; depth: number; field: 'seq' | 'cmd' | 'id' | 'extra' }
  | { kind: 'oversized'; bytes: number; newline: boolean }
  | { kind: 'fds'; count: number; chunks: number; finish: boolean; fdKind: FdKind }
  | { kind: 'slow-reader'; lines: number }
  | { kind: 'half-line'; text: string }
  | { kind: 'churn'; count: number }
  | { kind: 'update'; mode: 'complete' | 'hold' | 'operator-abort'; during: Step[]; killAfterKexec: boolean };

const ids = fc.constantFrom('vm-0', 'vm-1', 'vm-2', 'intruder', 'luod-internal', '', 'x'.repeat(49), 'a.b');
const anyValue = fc.oneof(
  fc.jsonValue(),
  fc.string(),
  fc.integer(),
  fc.constant(null),
  fc.constant(undefined),
);

/** Commands a root client may send that do not start an update of their own (that is the update step's). */
const command: fc.Arbitrary<Step> = fc.record({
  kind: fc.constant('command' as const),
  cmd: fc.constantFrom(
    'HELLO',
    'STATUS',
    'CLIENTS',
    'SESSIONS',
    'SUBSCRIBE',
    'UNSUBSCRIBE',
    'READY',
    'FAILED',
    'CLAIM',
    'LOAD',
    'ABORT',
    'UPDATE',
    'NOPE',
  ),
  fields: fc.record(
    {
      seq: fc.oneof(fc.integer(), fc.string({ maxLength: 80 }), fc.jsonValue()),
      id: fc.oneof(ids, anyValue),
      sessions: fc.oneof(fc.integer({ min: -1, max: 10 }), anyValue),
      update: fc.oneof(fc.string({ maxLength: 70 }), anyValue),
      reason: fc.oneof(fc.string({ maxLength: 2000 }), anyValue),
      versions: fc.oneof(fc.array(fc.integer(), { maxLength: 20 }), anyValue),
      force: fc.oneof(fc.boolean(), anyValue),
      timeout_ms: fc.oneof(fc.integer({ min: 0, max: 5000 }), anyValue),
      kernel: fc.oneof(fc.constantFrom('/nonexistent', '/etc/passwd', '/dev/zero'), anyValue),
    },
    { requiredKeys: [] },
  ),
});

const hostile: fc.Arbitrary<Step> = fc.oneof(
  { weight: 4, arbitrary: command },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('garbage' as const),
      bytes: fc.uint8Array({ maxLength: 4096 }),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('json' as const), value: fc.jsonValue() }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('nested' as const),
      depth: fc.integer({ min: 100, max: 30_000 }),
      field: fc.constantFrom('seq' as const, 'cmd' as const, 'id' as const, 'extra' as const),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('oversized' as const),
      bytes: fc.integer({ min: 60_000, max: 300_000 }),
      newline: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('fds' as const),
      count: fc.integer({ min: 1, max: 253 }),
      chunks: fc.integer({ min: 1, max: 40 }),
      finish: fc.boolean(),
      fdKind: fc.constantFrom('memfd' as const, 'socket' as const, 'self' as const),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('slow-reader' as const),
      lines: fc.integer({ min: 1000, max: 200_000 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('half-line' as const), text: fc.string({ maxLength: 200 }) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('churn' as const), count: fc.integer({ min: 10, max: 400 }) }),
  },
);

const update: fc.Arbitrary<Step> = fc.record({
  kind: fc.constant('update' as const),
  mode: fc.constantFrom('complete' as const, 'complete' as const, 'hold' as const, 'operator-abort' as const),
  during: fc.array(hostile, { maxLength: 4 }),
  killAfterKexec: fc.boolean(),
});

export const steps = (maxLength: number): fc.Arbitrary<Step[]> =>
  fc.array(fc.oneof({ weight: 5, arbitrary: hostile }, { weight: 1, arbitrary: update }), {
    minLength: Math.ceil(maxLength / 2),
    maxLength,
  });

/** A short, readable account of a step for a failure message. */
export function describe(step: Step): string {
  switch (step.kind) {
    case 'garbage':
      return `garbage(${step.bytes.length} bytes)`;
    case 'json':
      return `json(${JSON.stringify(step.value)?.slice(0, 60)})`;
    case 'command':
      return `${step.cmd}(${JSON.stringify(step.fields)?.slice(0, 80)})`;
    case 'nested':
      return `nested(${step.field}, depth ${step.depth})`;
    case 'oversized':
      return `oversized(${step.bytes}${step.newline ? ', with newline' : ''})`;
    case 'fds':
      return `fds(${step.count} ${step.fdKind} in ${step.chunks} chunks${step.finish ? ', line ended' : ''})`;
    case 'slow-reader':
      return `slow-reader(${step.lines} lines)`;
    case 'half-line':
      return `half-line(${JSON.stringify(step.text).slice(0, 40)})`;
    case 'churn':
      return `churn(${step.count})`;
    case 'update':
      return `update(${step.mode}${step.killAfterKexec ? ', luod killed after the kexec' : ''}; during: ${step.during.map(describe).join(', ')})`;
  }
}

/** One fuzz run's world: luod, its VMMs, and what the hostile clients left open. */
export class Arena {
  readonly host = new HolderHost(['--line-timeout', '2', '--claim-timeout', '60']);
  vms: Vm[] = [];
  readonly slowReaders: RawPeer[] = [];
  #generation = 0;
  #fdBase = 0;
  #rssBase = 0;
  readonly stats = { steps: 0, updates: { rebooted: 0, aborted: 0 }, kills: 0, checks: 0 };

  async start(): Promise<void> {
    await this.host.start();
    await this.#startVms();
    const pid = this.host.luodPid();
    this.#fdBase = fdCount(pid);
    this.#rssBase = rssBytes(pid);
  }

  async #startVms(): Promise<void> {
    const gen = this.#generation++;
    this.vms = [];
    for (let i = 0; i < 3; i++) this.vms.push(await startVm(this.host, `vm-${gen}-${i}`));
    await waitSubscribed(
      this.host,
      this.vms.map((v) => v.id),
    );
  }

  async stop(): Promise<void> {
    for (const peer of this.slowReaders.splice(0)) peer.close();
    for (const vm of this.vms) vm.close();
    await this.host.stop();
  }

  async run(step: Step): Promise<void> {
    this.stats.steps++;
    if (step.kind === 'update') await this.#update(step);
    else await this.#hostile(step);
    await this.check(describe(step));
  }

  /** The invariants that hold after every step. */
  async check(after: string): Promise<void> {
    this.stats.checks++;
    const pid = this.host.luodPid();
    await bystander(this.host.socket, BYSTANDER_BOUND_MS).catch((err) => {
      throw new Error(`after ${after}: ${(err as Error).message}`);
    });
    const fdBound = this.#fdBase + FD_SLACK + this.slowReaders.length;
    await waitUntil(() => fdCount(pid) <= fdBound, 'fds', 5000).catch(() => {
      assert.fail(`after ${after}: luod holds ${fdCount(pid)} fds, bound ${fdBound}`);
    });
    const rss = rssBytes(pid);
    assert.ok(
      rss <= this.#rssBase + RSS_SLACK,
      `after ${after}: luod's RSS is ${rss >> 20} MiB, ${this.#rssBase >> 20} MiB at the start`,
    );
    await this.#neverAlone(after);
  }

  /** Every session luod has (outgoing, or incoming not yet claimed) has a copy at the holder. */
  async #neverAlone(after: string): Promise<void> {
    const admin = await LuoClient.connect(this.host.socket);
    try {
      await waitUntil(
        async () => {
          const s = await admin.status();
          const sessions = (await admin.sessions()) as { direction: string; claimed?: boolean }[];
          const live = sessions.filter((x) => x.direction === 'outgoing' || x.claimed === false).length;
          const held = (s.holder as { held: number } | null)?.held ?? -1;
          // A session whose CLAIM reply just went out is closed by luod and released by the
          // holder one after the other: more held than live is a moment, fewer is the fault.
          return held >= live;
        },
        'held',
        5000,
      );
    } catch {
      const s = await admin.status();
      assert.fail(`after ${after}: luod has sessions its holder does not: ${JSON.stringify(s.holder)}`);
    } finally {
      admin.close();
    }
  }

  async #hostile(step: Exclude<Step, { kind: 'update' }>): Promise<void> {
    const socket = this.host.socket;
    const open: RawPeer[] = [];
    const connect = () => {
      const peer = RawPeer.connect(socket);
      open.push(peer);
      return peer;
    };
    try {
      switch (step.kind) {
        case 'garbage':
          await connect().send(Buffer.concat([step.bytes, Buffer.from('\n')]));
          break;
        case 'json':
          await connect().send(`${JSON.stringify(step.value) ?? 'null'}\n`);
          break;
        case 'command': {
          const fields = { ...step.fields };
          if (step.cmd === 'UPDATE') fields.dry_run = true; // a real one is the update step's
          if (step.cmd === 'LOAD') delete fields.emu_version;
          await connect().send(`${JSON.stringify({ cmd: step.cmd, ...fields })}\n`);
          break;
        }
        case 'nested': {
          const deep = `${'['.repeat(step.depth)}${']'.repeat(step.depth)}`;
          const line =
            step.field === 'extra'
              ? `{"cmd":"STATUS","x":${deep}}`
              : `{"cmd":"STATUS","${step.field}":${deep}}`;
          if (line.length < 64 << 10) await connect().send(`${line}\n`);
          else await connect().send(`${line.slice(0, 60_000)}\n`);
          break;
        }
        case 'oversized': {
          const peer = connect();
          const data = `{"cmd":"STATUS","pad":"${'x'.repeat(step.bytes)}"}${step.newline ? '\n' : ''}`;
          await peer.send(data).catch(() => {}); // luod hangs up part-way
          break;
        }
        case 'fds':
          await this.#fds(connect(), step);
          break;
        case 'slow-reader': {
          const peer = RawPeer.connect(socket);
          this.slowReaders.push(peer);
          const block = Buffer.from('{"cmd":"STATUS"}\n'.repeat(1000));
          for (let sent = 0; sent < step.lines; sent += 1000) if (peer.trySend(block) < 0) break;
          if (this.slowReaders.length > 4) this.slowReaders.shift()!.close();
          break;
        }
        case 'half-line': {
          const peer = connect();
          await peer.send(step.text.replace(/\n/g, ''));
          break;
        }
        case 'churn':
          for (let i = 0; i < step.count; i++) {
            try {
              RawPeer.connect(socket).close();
            } catch {
              break; // backlog full: luod is behind, which is the point
            }
          }
          break;
      }
      await sleep(20);
    } finally {
      for (const peer of open) peer.close();
    }
  }

  async #fds(peer: RawPeer, step: Extract<Step, { kind: 'fds' }>): Promise<void> {
    const made: OwnedFd[] = [];
    let fd: OwnedFd;
    if (step.fdKind === 'memfd') fd = memfdCreate('fuzz');
    else if (step.fdKind === 'socket') {
      const [a, b] = socketpair('stream');
      made.push(b);
      fd = a;
    } else fd = peer.fd;
    made.push(fd);
    try {
      // One byte per chunk, each with its share of the fds: leading blanks, then the line.
      const line = Buffer.from(`${' '.repeat(step.chunks)}{"cmd":"STATUS","seq":1}\n`);
      const per = Math.max(1, Math.ceil(step.count / step.chunks));
      let left = step.count;
      let i = 0;
      for (; i < step.chunks && left > 0; i++) {
        const n = Math.min(per, left);
        left -= n;
        if (
          peer.trySend(
            line.subarray(i, i + 1),
            Array.from({ length: n }, () => fd),
          ) < 0
        )
          break;
      }
      if (step.finish) peer.trySend(line.subarray(i));
    } finally {
      for (const f of made) if (f !== peer.fd) f.close();
    }
  }

  async #update(step: Extract<Step, { kind: 'update' }>): Promise<void> {
    const vms = this.vms;
    const abortedBefore = vms.map((vm) => vm.aborted.length);
    if (step.mode === 'hold') vms[1]!.answer = 'hold';
    const admin = await LuoClient.connect(this.host.socket);
    const timeoutMs = step.mode === 'hold' ? 1500 : 20_000;
    const running = admin.update({ timeoutMs });
    running.catch(() => {});
    for (const hostileStep of step.during)
      await this.#hostile(hostileStep as Exclude<Step, { kind: 'update' }>);
    if (step.mode === 'operator-abort') {
      const operator = await LuoClient.connect(this.host.socket);
      await operator.abort('fuzz').catch(() => {}); // may come after the barrier: then it is too late
      operator.close();
    }
    let outcome: Record<string, unknown>;
    try {
      outcome = await running;
    } finally {
      admin.close();
    }
    for (const vm of vms) vm.answer = 'ready';
    if (outcome.outcome === 'rebooted') {
      this.stats.updates.rebooted++;
      if (step.killAfterKexec) {
        this.stats.kills++;
        await this.host.kill();
        await this.host.start();
      }
      for (const vm of vms) await claimAndCheck(this.host, vm);
      for (const vm of vms) vm.close();
      await waitUntil(async () => (await status(this.host)).phase === 'idle', 'luod idle after the claims');
      const pid = this.host.luodPid();
      this.#fdBase = Math.min(this.#fdBase, fdCount(pid));
      await this.#startVms();
      return;
    }
    assert.equal(
      outcome.outcome,
      'aborted',
      `an update ends rebooted or aborted: ${JSON.stringify(outcome)}`,
    );
    this.stats.updates.aborted++;
    await waitUntil(
      () => vms.every((vm, i) => vm.aborted.length > abortedBefore[i]!),
      'every VMM was told ABORTED',
    );
    await waitUntil(() => vms.every((vm) => vm.openSessions() === 0), 'every VMM let go of its sessions');
    await waitUntil(async () => (await this.host.sessions()).outgoing.length === 0, 'nothing left preserved');
    await waitSubscribed(
      this.host,
      vms.map((v) => v.id),
    );
  }
}

/** Run `runs` seeded sequences of at most `maxSteps` steps; what ran comes back for the report. */
export async function fuzzLuod(options: {
  seed: number;
  runs: number;
  maxSteps: number;
}): Promise<Arena['stats'][]> {
  const all: Arena['stats'][] = [];
  await fc.assert(
    fc.asyncProperty(steps(options.maxSteps), async (sequence) => {
      const arena = new Arena();
      const done: string[] = [];
      try {
        await arena.start();
        for (const step of sequence) {
          done.push(describe(step));
          await arena.run(step);
        }
      } catch (err) {
        throw new Error(
          `${(err as Error).message}\nsteps:\n  ${done.join('\n  ')}\n--- luod log ---\n${arena.host.log().slice(-5000)}`,
        );
      } finally {
        all.push(arena.stats);
        await arena.stop();
      }
    }),
    { seed: options.seed, numRuns: options.runs, endOnFailure: true },
  );
  return all;
}
