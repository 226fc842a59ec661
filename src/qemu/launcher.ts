/**
 * luo-qemu: an unmodified QEMU whose VM survives a host live update.
 *
 * QEMU already has what it takes: guest RAM from a file we own
 * (`memory-backend-file,mem-path=/proc/self/fd/3,share=on`), and a device-
 * state-only migration (`x-ignore-shared`: RAM in a named shared file is not
 * copied) to an fd and back into a fresh QEMU (`-incoming defer`). luo-qemu
 * owns the RAM memfd, talks to QEMU over a private QMP socket and to luod as
 * client `id`. One command serves before and after the reboot:
 *
 *  start:   CLAIM `id` from luod. Nothing to claim: cold boot with a new RAM
 *           memfd. Sessions to claim (after a live update): RETRIEVE the RAM
 *           (token 1), the device state (token 2) and what luo-qemu noted
 *           (token 3), FINISH the session, start QEMU paused with
 *           `-incoming defer`, load the state, `cont`: the same guest goes on.
 *  START_PRESERVATION:  preserve the RAM while the guest still runs, then
 *           `stop` (the blackout starts), save the device state into a memfd
 *           and preserve it with the notes; READY. Any failure: `cont`, and
 *           FAILED with QEMU's own reason (luod aborts the update).
 *  ABORTED: `cont` the same QEMU: nothing is lost but the pause (RESUMED too).
 *  KEXEC:   QEMU quits (its state is in the kernel's hands now) and luo-qemu
 *           exits 0; the host reboots, and the same command claims the VM.
 *  QEMU exits on its own: luo-qemu unsubscribes and exits with its status;
 *           nothing is left preserved.
 *  luod goes away during an update: `cont` at once (nothing can carry the
 *           VM without luod; the kernel drops the sessions with its copies).
 *  luo-qemu itself died (QEMU, its child, lives on, maybe stopped by an
 *           update): the same command finds QEMU at the QMP socket and adopts
 *           it, `cont` included, instead of booting a second VM; after a
 *           kexec the old QEMU is the pre-reboot one: it is told to quit, and
 *           the claimed state continues the VM.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { type ClaimedSessions, LuoClient, LuoClientError, LuoSubscription } from '../client/index.js';
import type { Session } from '../kernel/index.js';
import { Errno } from '../sys/errno.js';
import { errorCode, SysError } from '../sys/error.js';
import type { OwnedFd } from '../sys/fd.js';
import { fstat, ftruncate, lseek, O_RDWR, open, read, write } from '../sys/file.js';
import { memfdCreate } from '../sys/memfd.js';
import { checkQemuArgs, guestArgs } from './args.js';
import { QmpClient, QmpError } from './qmp.js';

/** Tokens of the files in a VM's session. */
export const RAM_TOKEN = 1n;
export const STATE_TOKEN = 2n;
export const NOTES_TOKEN = 3n;
export const NOTES_FORMAT = 'luo-qemu-v1';

/** What luo-qemu keeps beside the device state, for the luo-qemu after the reboot. */
export interface VmNotes {
  format: typeof NOTES_FORMAT;
  id: string;
  ramBytes: number;
  /** When the guest was stopped (epoch ms): the blackout's start. */
  stoppedAt: number;
  stateBytes: number;
  qemuArgs: string[];
}

export interface LuoQemuOptions {
  id: string;
  ramBytes: number;
  /** luod's socket (default $LUOD_SOCKET, else /run/luod/liveupdate.sock). */
  socket?: string;
  /** Where the private QMP socket goes. */
  stateDir?: string;
  qemu: string;
  qemuArgs: string[];
  log: Logger;
  /** How long to wait for luod at start (a host just rebooted starts luod first). */
  luodTimeoutMs?: number;
}

/** Where luo-qemu keeps its QMP sockets unless told. */
export function defaultStateDir(): string {
  if (process.env.XDG_RUNTIME_DIR) return path.join(process.env.XDG_RUNTIME_DIR, 'luo-qemu');
  return process.getuid?.() === 0
    ? '/run/luo-qemu'
    : path.join(os.tmpdir(), `luo-qemu-${process.getuid?.()}`);
}

const MIB = 1 << 20;

export class LuoQemu {
  readonly #o: LuoQemuOptions;
  readonly #log: Logger;
  #qemu: ChildProcess | null = null;
  #qemuExit: Promise<{ code: number | null; signal: NodeJS.Signals | null }> | null = null;
  #qmp: QmpClient | null = null;
  #ram: OwnedFd | null = null;
  #sub: LuoSubscription | null = null;
  /** Set while the guest is stopped by an update: when (epoch ms). */
  #pausedAt: number | null = null;
  #kexec = false;

  constructor(options: LuoQemuOptions) {
    if (options.ramBytes <= 0 || options.ramBytes % MIB !== 0)
      throw new SysError(
        'luo-qemu',
        Errno.EINVAL,
        `--ram must be a positive number of MiB, got ${options.ramBytes} bytes`,
      );
    checkQemuArgs(options.qemuArgs);
    this.#o = options;
    this.#log = options.log.child({ vm: options.id });
  }

  /** Run the VM until QEMU exits or the host kexecs; resolves with the exit status for luo-qemu. */
  async run(): Promise<number> {
    const claimed = await this.#claim();
    try {
      const left = await this.#leftBehind();
      try {
        if (claimed) {
          if (left) await this.#retire(left);
          const resumed = await this.#restore(claimed.sessions);
          await this.#reportResumed(claimed.client, {
            update: claimed.sessions.update,
            pausedAt: resumed.stoppedAt,
            resumedAt: resumed.at,
          });
        } else if (left) await this.#adopt(left);
        else await this.#coldBoot();
      } catch (err) {
        await this.#stopQemu();
        throw err;
      }
    } finally {
      claimed?.client.close();
    }
    this.#sub = await LuoSubscription.start({
      id: this.#o.id,
      ...(this.#o.socket !== undefined && { path: this.#o.socket }),
      onPreserve: (sessions, request) => this.#preserve(sessions, request.signal),
      onAborted: (event) => this.#resume(`the update was aborted: ${event.reason}`, event.update),
      onKexec: () => {
        this.#kexec = true;
      },
    });
    this.#sub.on('rebooted', () => {
      this.#kexec = true;
      void this.#stopQemu();
    });
    this.#sub.on('lost', () => void this.#resume('luod went away during the update'));
    this.#log.info({ event: 'subscribed', socket: this.#sub.path }, 'subscribed to luod');
    const exit = await this.#qemuExit!;
    this.#sub.close();
    this.#qmp?.close();
    this.#ram?.close();
    if (this.#kexec) {
      this.#log.info(
        { event: 'kexec' },
        'the host kexecs: QEMU stopped, the VM is preserved; run the same command after the reboot to continue it',
      );
      return 0;
    }
    const status = exit.code ?? 128 + (os.constants.signals[exit.signal ?? 'SIGTERM'] ?? 15);
    this.#log.info({ event: 'qemu-exit', code: exit.code, signal: exit.signal }, 'QEMU exited');
    return status;
  }

  /** SIGTERM: QEMU quits, luo-qemu unsubscribes; nothing stays preserved. */
  async stop(): Promise<void> {
    await this.#stopQemu();
  }

  /**
   * Sessions luod kept for this VM across a live update, and the connection that claimed
   * them (for RESUMED, once the VM runs), or null (cold boot).
   */
  async #claim(): Promise<{ sessions: ClaimedSessions; client: LuoClient } | null> {
    const timeoutMs = this.#o.luodTimeoutMs ?? 30_000;
    let client: LuoClient;
    try {
      client = await LuoClient.connectWithRetry(this.#o.socket, { timeoutMs, intervalMs: 100 });
    } catch (err) {
      throw new SysError(
        'luo-qemu',
        Errno.ECONNREFUSED,
        `cannot reach luod (${(err as Error).message}); a VM started without it could not survive a live update`,
      );
    }
    try {
      const sessions = await client.claim(this.#o.id);
      this.#log.info({ event: 'claimed', sessions: sessions.length }, 'luod had this VM: continuing it');
      return { sessions, client };
    } catch (err) {
      client.close();
      if (err instanceof LuoClientError && err.code === 'ENOENT') return null;
      throw err;
    }
  }

  /**
   * RESUMED: the VM's blackout (`stop` to `cont`) into luod's record of the update. Never
   * fatal: the VM runs; an older luod, or a refusal, only leaves the record without it.
   */
  async #reportResumed(
    client: LuoClient,
    report: { update: string; pausedAt: number; resumedAt: number },
  ): Promise<void> {
    try {
      const recorded = await client.resumed({ id: this.#o.id, ...report });
      this.#log.info(
        {
          event: 'resumed-reported',
          blackout_ms: report.resumedAt - report.pausedAt,
          recorded: recorded !== null,
        },
        recorded === null
          ? 'this luod does not record blackouts (no RESUMED)'
          : "the VM's blackout is in luod's record of the update",
      );
    } catch (err) {
      this.#log.warn(
        { err: { code: errorCode(err), message: (err as Error).message } },
        'luod did not record the blackout (RESUMED)',
      );
    }
  }

  get #qmpPath(): string {
    return path.join(this.#o.stateDir ?? defaultStateDir(), `${this.#o.id}.qmp`);
  }

  /** A QEMU of this VM that outlived an earlier luo-qemu, answering on the QMP socket. */
  async #leftBehind(): Promise<QmpClient | null> {
    if (!fs.existsSync(this.#qmpPath)) return null;
    try {
      return await QmpClient.connect(this.#qmpPath, { timeoutMs: 1000 });
    } catch {
      return null; // a stale socket: nobody there
    }
  }

  /** The pre-reboot QEMU of a VM whose state was claimed: it must not run beside its successor. */
  async #retire(qmp: QmpClient): Promise<void> {
    this.#log.warn(
      { event: 'retire', pid: qmp.peerPid },
      'a QEMU from before the update still runs; it quits',
    );
    await qmp.execute('quit', undefined, 5000).catch(() => {});
    await Promise.race([qmp.whenClosed(), new Promise((resolve) => setTimeout(resolve, 5000))]);
    qmp.close();
  }

  /** Take over a QEMU an earlier luo-qemu started: its RAM (fd 3), and a guest an update stopped. */
  async #adopt(qmp: QmpClient): Promise<void> {
    const pid = qmp.peerPid;
    this.#ram = open(`/proc/${pid}/fd/3`, O_RDWR);
    this.#qmp = qmp;
    this.#qemuExit = qmp.whenClosed().then(() => ({ code: 0, signal: null }));
    const status = (await qmp.execute('query-status')) as { status?: string };
    this.#log.warn(
      { event: 'adopted', pid, status: status.status },
      'took over the QEMU an earlier luo-qemu left running',
    );
    await this.#setCapabilities();
    if (status.status === 'paused' || status.status === 'postmigrate') {
      await qmp.execute('cont');
      this.#log.warn({ event: 'resumed', why: 'adopted stopped' }, 'VM resumed');
    }
  }

  async #coldBoot(): Promise<void> {
    const ram = memfdCreate(`luo-qemu:${this.#o.id}`);
    ftruncate(ram, this.#o.ramBytes);
    this.#ram = ram;
    await this.#startQemu(false);
    this.#log.info({ event: 'cold-boot', ram: this.#o.ramBytes }, 'VM booted');
  }

  /** Continue the claimed VM; resolves with when it was stopped (its notes) and when it went on. */
  async #restore(sessions: Session[]): Promise<{ stoppedAt: number; at: number }> {
    const session = sessions[0];
    if (!session) throw new SysError('luo-qemu', Errno.ENOENT, 'luod handed back no session for this VM');
    let state: OwnedFd | null = null;
    try {
      const notes = readNotes(session.retrieveFd(NOTES_TOKEN));
      this.#ram = session.retrieveFd(RAM_TOKEN);
      state = session.retrieveFd(STATE_TOKEN);
      const size = fstat(this.#ram).size;
      if (size !== this.#o.ramBytes)
        throw new SysError(
          'luo-qemu',
          Errno.EINVAL,
          `the preserved RAM is ${size} bytes, but --ram says ${this.#o.ramBytes}`,
        );
      // Only what shapes the guest counts: a new serial file is the documented way to run
      // the same command after the update.
      if (JSON.stringify(guestArgs(notes.qemuArgs)) !== JSON.stringify(guestArgs(this.#o.qemuArgs)))
        this.#log.warn(
          { before: notes.qemuArgs, now: this.#o.qemuArgs },
          'the guest’s QEMU arguments differ from before the update; QEMU decides whether the state still fits',
        );
      session.finish();
      const start = Date.now();
      await this.#startQemu(true);
      const qmp = this.#qmp!;
      lseek(state, 0);
      await qmp.execute('getfd', { fdname: 'luo-state' }, 10_000, [state]);
      await qmp.execute('migrate-incoming', { uri: 'fd:luo-state' });
      const done = await qmp.waitEvent(
        (e) => e.event === 'MIGRATION' && ['completed', 'failed'].includes(String(e.data?.status)),
        60_000,
        'the end of loading the device state',
      );
      if (done.data?.status !== 'completed')
        throw new SysError(
          'luo-qemu',
          Errno.EIO,
          `QEMU could not load the device state: ${await migrationError(qmp)}`,
        );
      const loaded = Date.now();
      await qmp.execute('cont');
      const resumed = Date.now();
      this.#log.info(
        {
          event: 'continued',
          blackout_ms: resumed - notes.stoppedAt,
          qemu_start_ms: loaded - start,
          state_bytes: notes.stateBytes,
        },
        'the VM continues where it stopped before the live update',
      );
      return { stoppedAt: notes.stoppedAt, at: resumed };
    } finally {
      state?.close();
      for (const s of sessions) s.close();
    }
  }

  async #startQemu(incoming: boolean): Promise<void> {
    const qmpPath = this.#qmpPath;
    fs.mkdirSync(path.dirname(qmpPath), { recursive: true, mode: 0o700 });
    fs.rmSync(qmpPath, { force: true });
    const mib = this.#o.ramBytes / MIB;
    const args = [
      ...this.#o.qemuArgs,
      '-m',
      `${mib}M`,
      '-object',
      `memory-backend-file,id=luo-ram,size=${mib}M,mem-path=/proc/self/fd/3,share=on`,
      '-machine',
      'memory-backend=luo-ram',
      '-qmp',
      `unix:${qmpPath},server=on,wait=off`,
      ...(incoming ? ['-S', '-incoming', 'defer'] : []),
    ];
    this.#log.info({ event: 'qemu-start', qemu: this.#o.qemu, args }, 'starting QEMU');
    const child = spawn(this.#o.qemu, args, { stdio: ['inherit', 'inherit', 'inherit', this.#ram!.fd] });
    this.#qemu = child;
    let gone: string | null = null;
    this.#qemuExit = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        gone = signal ? `killed by ${signal}` : `exited with status ${code}`;
        resolve({ code, signal });
      });
      child.once('error', (err) => {
        gone = `could not be started: ${(err as NodeJS.ErrnoException).code ?? err.message}`;
        resolve({ code: 127, signal: null });
      });
    });
    this.#qmp = await QmpClient.connect(qmpPath, { timeoutMs: 30_000, gone: () => gone });
    await this.#setCapabilities();
  }

  /** Device state only (RAM stays in the memfd), with MIGRATION events; refused by a QEMU too old. */
  async #setCapabilities(): Promise<void> {
    const caps = (await this.#qmp!.execute('query-migrate-capabilities')) as { capability: string }[];
    for (const needed of ['x-ignore-shared', 'events']) {
      if (!caps.some((c) => c.capability === needed))
        throw new SysError(
          'luo-qemu',
          Errno.EOPNOTSUPP,
          `this QEMU has no migration capability ${needed}: it is too old for luo-qemu`,
        );
    }
    await this.#qmp!.execute('migrate-set-capabilities', {
      capabilities: [
        { capability: 'x-ignore-shared', state: true },
        { capability: 'events', state: true },
      ],
    });
  }

  /** START_PRESERVATION: RAM preserved running, then stop, save, preserve the state; READY on return. */
  async #preserve(sessions: Session[], cancelled: AbortSignal): Promise<void> {
    const session = sessions[0]!;
    const qmp = this.#qmp!;
    session.preserveFd(this.#ram!, RAM_TOKEN);
    const state = memfdCreate(`luo-qemu-state:${this.#o.id}`);
    try {
      await qmp.execute('stop');
      this.#pausedAt = Date.now();
      // Called off (ABORTED, luod gone) while QEMU was stopping: nobody else would resume it.
      if (cancelled.aborted) throw new Error('the update was called off while the VM was stopping');
      const since = qmp.eventCount; // only this migration's events, not an earlier update's
      await qmp.execute('getfd', { fdname: 'luo-state' }, 10_000, [state]);
      await qmp.execute('migrate', { uri: 'fd:luo-state' });
      const done = await qmp.waitEvent(
        (e) =>
          e.event === 'MIGRATION' && ['completed', 'failed', 'cancelled'].includes(String(e.data?.status)),
        60_000,
        'the end of saving the device state',
        since,
      );
      if (done.data?.status !== 'completed') throw new Error(await migrationError(qmp));
      if (cancelled.aborted) throw new Error('the update was called off while the device state was saved');
      const stateBytes = fstat(state).size;
      const notes: VmNotes = {
        format: NOTES_FORMAT,
        id: this.#o.id,
        ramBytes: this.#o.ramBytes,
        stoppedAt: this.#pausedAt,
        stateBytes,
        qemuArgs: this.#o.qemuArgs,
      };
      const notesFd = memfdCreate(`luo-qemu-notes:${this.#o.id}`);
      try {
        write(notesFd, Buffer.from(JSON.stringify(notes)));
        session.preserveFd(state, STATE_TOKEN);
        session.preserveFd(notesFd, NOTES_TOKEN);
      } finally {
        notesFd.close();
      }
      this.#log.info(
        { event: 'saved', state_bytes: stateBytes, save_ms: Date.now() - this.#pausedAt },
        'device state saved and preserved; READY',
      );
    } catch (err) {
      const reason =
        err instanceof QmpError
          ? `QEMU refused to save its state: ${err.desc}`
          : `QEMU could not save its state: ${(err as Error).message}`;
      await this.#resume(reason);
      throw new Error(reason);
    } finally {
      state.close();
    }
  }

  /** The update is off: the same QEMU goes on (and, after ABORTED of `update`, luod records the pause). */
  async #resume(why: string, update?: string): Promise<void> {
    if (this.#pausedAt === null || this.#kexec) return;
    const pausedAt = this.#pausedAt;
    this.#pausedAt = null;
    try {
      await this.#qmp!.execute('cont');
      const resumedAt = Date.now();
      this.#log.warn({ event: 'resumed', paused_ms: resumedAt - pausedAt, why }, 'VM resumed');
      const client = this.#sub?.client;
      if (update && client) await this.#reportResumed(client, { update, pausedAt, resumedAt });
    } catch (err) {
      this.#log.error({ err, why }, 'the VM could not be resumed');
    }
  }

  async #stopQemu(): Promise<void> {
    const child = this.#qemu;
    if (!child) {
      // An adopted QEMU: not our child, only QMP reaches it.
      if (this.#qmp && !this.#qmp.closed) await this.#qmp.execute('quit', undefined, 5000).catch(() => {});
      return;
    }
    if (child.exitCode !== null || child.signalCode !== null) return;
    try {
      await this.#qmp?.execute('quit', undefined, 5000);
    } catch {
      // QMP gone: the signal below
    }
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await this.#qemuExit;
    clearTimeout(timer);
  }
}

function readNotes(fd: OwnedFd): VmNotes {
  try {
    const text = read(fd, fstat(fd).size, 0).toString('utf8');
    const notes = JSON.parse(text) as VmNotes;
    if (notes.format !== NOTES_FORMAT) throw new Error(`format ${String(notes.format)}`);
    return notes;
  } catch (err) {
    throw new SysError(
      'luo-qemu',
      Errno.EINVAL,
      `the preserved notes are not luo-qemu's: ${(err as Error).message}`,
    );
  } finally {
    fd.close();
  }
}

async function migrationError(qmp: QmpClient): Promise<string> {
  try {
    const info = (await qmp.execute('query-migrate')) as { status?: string; 'error-desc'?: string };
    return info['error-desc'] ?? `migration ${info.status ?? 'failed'}`;
  } catch (err) {
    return (err as Error).message;
  }
}
