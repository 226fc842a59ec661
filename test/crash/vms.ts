/**
 * Test VMs for the crash-safety tests: each subscribes through
 * LuoSubscription (so it reconnects when luod dies), preserves a memfd with
 * recognisable content, and answers START_PRESERVATION as the test says.
 */
import assert from 'node:assert/strict';
import { type AbortedEvent, claimAfterReboot, LuoClient, LuoSubscription } from '../../src/client/index.js';
import { fstat, memfdCreate, type OwnedFd, pread, pwriteAll } from '../../src/sys/index.js';
import { waitUntil } from '../support/wait.js';
import type { Host } from './hosts.js';

/** How a test VM answers START_PRESERVATION. */
export type Answer = 'ready' | 'hold' | 'ready-then-hold';

export interface Vm {
  readonly id: string;
  readonly content: Buffer;
  readonly sub: LuoSubscription;
  answer: Answer;
  preserved: number;
  readied: number;
  /** deadline_ms of each START_PRESERVATION, as luod sent it. */
  readonly deadlines: number[];
  readonly aborted: AbortedEvent[];
  rebooted: number;
  /** Handler sessions still open (closed by the client library on abort or disconnect). */
  openSessions(): number;
  close(): void;
}

const subscriptionFailures: string[] = [];
const handlerSessions = new Map<string, { closed: boolean }[]>();
const vms: Vm[] = [];

export async function startVm(host: Host, id: string, answer: Answer = 'ready'): Promise<Vm> {
  const content = Buffer.from(`${id}: guest memory ${'#'.repeat(4000)} ${Date.now()}`);
  const ram: OwnedFd = memfdCreate(id);
  pwriteAll(ram, content, 0);
  const sessions: { closed: boolean }[] = [];
  handlerSessions.set(id, sessions);
  const state: { vm: Vm | null } = { vm: null };
  // Filled from the first moment: an ABORTED luod owes this id comes right after the
  // SUBSCRIBE reply, and its handler can run before start() below has returned.
  const aborted: Vm['aborted'] = [];
  const sub = await LuoSubscription.start({
    id,
    path: host.socket,
    intervalMs: 50,
    onPreserve: async (got, request) => {
      const vm = state.vm!;
      sessions.push(...got);
      vm.deadlines.push(request.deadlineMs);
      got[0]!.preserveFd(ram, 1n);
      vm.preserved++;
      const cancelled = new Promise<void>((resolve) =>
        request.signal.addEventListener('abort', () => resolve()),
      );
      if (vm.answer === 'hold') {
        await cancelled; // never READY: the barrier waits for this VM
        return;
      }
      if (vm.answer === 'ready-then-hold') {
        await vm.sub.client!.ready();
        vm.readied++;
        await cancelled;
        return;
      }
      vm.readied++;
    },
    onAborted: (event) => {
      aborted.push(event);
    },
  });
  const vm: Vm = {
    id,
    content,
    sub,
    answer,
    preserved: 0,
    readied: 0,
    deadlines: [],
    aborted,
    rebooted: 0,
    openSessions: () => sessions.filter((s) => !s.closed).length,
    close: () => {
      sub.close();
      ram.close();
    },
  };
  sub.on('rebooted', () => {
    vm.rebooted++;
  });
  sub.on('failed', (err) => subscriptionFailures.push(`${id}: ${err.code}: ${err.message}`));
  state.vm = vm;
  vms.push(vm);
  return vm;
}

export function closeAllVms(): void {
  for (const vm of vms.splice(0)) vm.close();
}

export async function admin(host: Host): Promise<LuoClient> {
  return LuoClient.connectWithRetry(host.socket, { timeoutMs: 30_000, intervalMs: 50 });
}

export async function status(host: Host): Promise<Record<string, unknown>> {
  const a = await admin(host);
  try {
    return await a.status();
  } finally {
    a.close();
  }
}

/**
 * The bound is for a hung test, not a timing check: a VMM that starts QEMU first subscribes
 * only once QEMU answers on QMP, which takes tens of seconds on a loaded machine.
 */
export async function waitSubscribed(host: Host, ids: string[]): Promise<void> {
  const want = [...ids].sort().join(',');
  await waitUntil(
    async () => {
      const s = await status(host);
      return s.phase === 'idle' && ((s.subscribers as string[]) ?? []).slice().sort().join(',') === want;
    },
    `luod idle with subscribers ${want}`,
    120_000,
  );
}

/** Claim `vm`'s sessions after the reboot and check every byte. */
export async function claimAndCheck(host: Host, vm: Vm): Promise<void> {
  const sessions = await claimAfterReboot(vm.id, { path: host.socket, timeoutMs: 30_000, intervalMs: 50 });
  try {
    using file = sessions[0]!.retrieveFd(1n);
    const back = pread(file, fstat(file).size, 0);
    assert.ok(back.equals(vm.content), `${vm.id}: the claimed memory differs from what was preserved`);
    sessions[0]!.finish();
  } finally {
    for (const s of sessions) s.close();
  }
}

/**
 * A whole update that must succeed: every VM READY, kexec, each claims its
 * bytes back. In the systemd kexec mode (`systemd`), systemd may stop luod
 * before the UPDATE reply is out (ECONNRESET); the kexec is awaited instead.
 */
export async function fullUpdate(
  host: Host,
  list: Vm[],
  systemd?: { kexecFinished(): Promise<void> },
): Promise<void> {
  for (const vm of list) vm.answer = 'ready';
  await waitSubscribed(
    host,
    list.map((v) => v.id),
  );
  const outcome = await updateOnce(host, systemd !== undefined);
  if (outcome !== null)
    assert.equal(outcome.outcome, systemd ? 'kexec' : 'rebooted', JSON.stringify(outcome));
  await systemd?.kexecFinished();
  for (const vm of list) await claimAndCheck(host, vm);
  for (const vm of list) vm.sub.close();
}

/** UPDATE; null when luod was stopped by (fake) systemd before its reply went out. */
export async function updateOnce(host: Host, systemd: boolean): Promise<Record<string, unknown> | null> {
  const a = await admin(host);
  try {
    return await a.update({ timeoutMs: 30_000 });
  } catch (err) {
    if (systemd && (err as { code?: string }).code === 'ECONNRESET') return null;
    throw err;
  } finally {
    a.close();
  }
}

/** Start an update and leave it running (its reply never comes: luod is killed). */
export async function startUpdate(host: Host): Promise<LuoClient> {
  const a = await admin(host);
  a.update({ timeoutMs: 120_000 }).catch(() => {});
  return a;
}

/** A failure carries luod's log, the only witness of what it did. */
export function withLog(err: unknown, host: Host): unknown {
  if (err instanceof Error)
    err.message += `\nsubscription failures: ${subscriptionFailures.join('; ')}\n--- luod log ---\n${host.log().slice(-6000)}`;
  return err;
}

/** Runs `body` with `host`, adds luod's log to a failure, and always stops the host. */
export async function withHost<H extends Host>(host: H, body: (host: H) => Promise<void>): Promise<void> {
  try {
    await body(host);
  } catch (err) {
    throw withLog(err, host);
  } finally {
    await host.stop();
  }
}
