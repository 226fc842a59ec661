/**
 * Hosts for the crash-safety tests: luod (dist/daemon/main.js, on the
 * emulated kernel) run either
 *  - with the holder process (no systemd), or
 *  - under FakeSystemd: a notify socket in the abstract namespace that
 *    implements systemd's fd store protocol (FDSTORE=1/FDNAME=,
 *    FDSTOREREMOVE=1, READY=1, STATUS=, WATCHDOG=1), starts luod with the
 *    stored fds as LISTEN_FDS at fd 3+ (LISTEN_FDNAMES, LISTEN_PID set to
 *    luod's pid through `sh -c 'export LISTEN_PID=$$; exec ...'`), and,
 *    when luod runs its systemctl double with `kexec`, does what systemd
 *    261+ does: stops luod, kexecs (the emulator), retrieves every stored
 *    LUO session by its name, and starts luod again with them.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { LuoClient } from '../../src/client/index.js';
import type { Session } from '../../src/kernel/device.js';
import { emulatorPid } from '../../src/kernel/emu/emulator-process.js';
import {
  emulatorKexec,
  emulatorStatus,
  openEmulatedDevice,
  statePaths,
  stopEmulator,
} from '../../src/kernel/emu/index.js';
import { adoptSession } from '../../src/kernel/index.js';
import { dup, type OwnedFd } from '../../src/sys/index.js';
import { bind, socket } from '../../src/sys/socket.js';
import { UnixSocket } from '../../src/sys/unix-socket.js';
import { ROOT } from '../support/luod.js';
import { reapOnExit } from '../support/reaper.js';
import { waitUntil } from '../support/wait.js';

export const MAIN = path.join(ROOT, 'dist/daemon/main.js');
const SYSTEMCTL_DOUBLE = path.join(ROOT, 'test/crash/fake-systemctl.mjs');

export interface Host {
  readonly kind: 'holder-process' | 'fake-systemd';
  readonly dir: string;
  readonly socket: string;
  readonly stateDir: string;
  /** Start luod and wait until it answers HELLO. */
  start(): Promise<void>;
  /** SIGKILL luod (a crash) and wait until it is gone. */
  kill(): Promise<void>;
  /** luod's output since the last start. */
  log(): string;
  /** The emulated kernel's sessions: what it still holds, whoever holds the fds. */
  sessions(): Promise<{ outgoing: string[]; incoming: string[] }>;
  emulatorPid(): number;
  stop(): Promise<void>;
}

interface LuodProcess {
  child: ChildProcess;
  output: string;
  exited: Promise<void>;
}

function spawnLuod(
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  extraFds: number[] = [],
): LuodProcess {
  const child = spawn(command, args, {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe', ...extraFds],
  });
  const proc: LuodProcess = {
    child,
    output: '',
    exited: new Promise((resolve) => child.once('exit', () => resolve())),
  };
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    proc.output += d;
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    proc.output += d;
  });
  return proc;
}

async function waitAnswering(socketPath: string, proc: LuodProcess): Promise<void> {
  const probe = await Promise.race([
    LuoClient.connectWithRetry(socketPath, { hello: true, timeoutMs: 30_000, intervalMs: 50 }),
    proc.exited.then(() => {
      const { exitCode, signalCode } = proc.child;
      throw new Error(`luod exited during startup (${exitCode ?? signalCode}):\n${proc.output}`);
    }),
  ]);
  probe.close();
}

abstract class BaseHost {
  readonly dir: string;
  readonly socket: string;
  readonly stateDir: string;
  protected proc: LuodProcess | null = null;
  protected readonly extraArgs: string[];

  /** `socket`: luod's socket, relative to the host's directory (its own directories are not made). */
  constructor(extraArgs: string[], options: { socket?: string } = {}) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-crash-'));
    reapOnExit(this.dir);
    this.socket = path.join(this.dir, options.socket ?? 'luod.sock');
    this.stateDir = path.join(this.dir, 'emu');
    this.extraArgs = extraArgs;
  }

  protected args(): string[] {
    return [MAIN, '--socket', this.socket, '--emulate', '--state', this.stateDir, ...this.extraArgs];
  }

  async kill(): Promise<void> {
    const proc = this.proc;
    if (!proc) return;
    proc.child.kill('SIGKILL');
    await proc.exited;
  }

  log(): string {
    return this.proc?.output ?? '';
  }

  /** The running luod's pid. */
  luodPid(): number {
    const pid = this.proc?.child.pid;
    if (pid === undefined || this.proc!.child.exitCode !== null || this.proc!.child.signalCode !== null)
      throw new Error(`luod is not running:\n${this.log().slice(-4000)}`);
    return pid;
  }

  async sessions(): Promise<{ outgoing: string[]; incoming: string[] }> {
    const status = (await emulatorStatus(statePaths(this.stateDir))) as {
      outgoing: { name: string }[];
      incoming: { name: string }[];
    };
    return {
      outgoing: status.outgoing.map((s) => s.name).sort(),
      incoming: status.incoming.map((s) => s.name).sort(),
    };
  }

  emulatorPid(): number {
    const pid = emulatorPid(statePaths(this.stateDir));
    if (pid === null) throw new Error('no emulator');
    return pid;
  }

  protected async stopLuod(): Promise<void> {
    const proc = this.proc;
    if (!proc || proc.child.exitCode !== null || proc.child.signalCode !== null) return;
    proc.child.kill('SIGTERM');
    const timer = setTimeout(() => proc.child.kill('SIGKILL'), 5000);
    await proc.exited;
    clearTimeout(timer);
  }

  protected async cleanup(): Promise<void> {
    await this.stopLuod();
    await stopEmulator(statePaths(this.stateDir)).catch(() => {});
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** luod and its holder process. */
export class HolderHost extends BaseHost implements Host {
  readonly kind = 'holder-process';

  async start(): Promise<void> {
    const env = { ...process.env };
    delete env.NOTIFY_SOCKET;
    this.proc = spawnLuod(process.execPath, this.args(), env);
    await waitAnswering(this.socket, this.proc);
  }

  /** The holder's pid (from /proc: the process listening next to luod's socket). */
  holderPids(): number[] {
    const pids: number[] = [];
    for (const entry of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const cmdline = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
        // Built luod starts the holder's bundle (holder-bin.cjs); holder-main.js when run unbundled.
        if (
          cmdline.some((a) => /holder-(main\.js|bin\.cjs)$/.test(a)) &&
          cmdline.includes(`${this.socket}.holder`)
        )
          pids.push(Number(entry));
      } catch {
        // gone
      }
    }
    return pids;
  }

  async stop(): Promise<void> {
    await this.cleanup();
    // The holder exits by itself once its fds are dead and no luod is connected.
    await waitUntil(() => this.holderPids().length === 0, 'the holder process exits', 20_000).catch(() => {
      for (const pid of this.holderPids()) process.kill(pid, 'SIGKILL');
    });
  }
}

interface StoredFd {
  name: string;
  fd: OwnedFd | Session;
  /** The LUO session's name (systemd reads it from the fd path), null for other fds. */
  session: string | null;
}

export type KexecBehaviour = 'kexec' | 'block' | 'fail';

/** systemd as far as luod can tell: notify socket, fd store, LISTEN_FDS, systemctl kexec. */
export class FakeSystemd extends BaseHost implements Host {
  readonly kind = 'fake-systemd';
  readonly notifyName = `luokit-fake-systemd-${randomBytes(6).toString('hex')}`;
  readonly store: StoredFd[] = [];
  /** Every notification luod sent, as key/value maps. */
  readonly messages: Record<string, string>[] = [];
  kexecBehaviour: KexecBehaviour = 'kexec';
  kexecs = 0;
  /** Stored sessions the next kernel did not give back (must stay empty). */
  readonly lostInKexec: string[] = [];
  readonly #notify: UnixSocket;
  readonly #control: net.Server;
  readonly #controlPath: string;
  readonly #wrapper: string;

  constructor(
    extraArgs: string[],
    readonly watchdogUsec?: number,
  ) {
    super(extraArgs);
    const fd = socket('dgram');
    bind(fd, `\0${this.notifyName}`);
    this.#notify = new UnixSocket(fd, 'dgram');
    this.#notify.on('data', (data, fds) => this.#onNotify(data.toString('utf8'), fds));
    this.#controlPath = path.join(this.dir, 'fake-systemctl.sock');
    this.#control = net.createServer((conn) => this.#onSystemctl(conn));
    this.#control.listen(this.#controlPath);
    this.#wrapper = path.join(this.dir, 'systemctl');
    fs.writeFileSync(
      this.#wrapper,
      `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(SYSTEMCTL_DOUBLE)} "$@"\n`,
      { mode: 0o755 },
    );
  }

  get systemctl(): string {
    return this.#wrapper;
  }

  protected override args(): string[] {
    return [...super.args(), '--systemctl', this.#wrapper];
  }

  /** Stored names that luod gave (luod.*). */
  storedNames(): string[] {
    return this.store.map((s) => s.name).sort();
  }

  async start(): Promise<void> {
    const fds = this.store.map((s) => s.fd.fd);
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      NOTIFY_SOCKET: `@${this.notifyName}`,
      FAKE_SYSTEMCTL_SOCKET: this.#controlPath,
    };
    delete env.LISTEN_PID;
    delete env.WATCHDOG_PID;
    if (fds.length > 0) {
      env.LISTEN_FDS = String(fds.length);
      env.LISTEN_FDNAMES = this.store.map((s) => s.name).join(':');
    } else {
      delete env.LISTEN_FDS;
      delete env.LISTEN_FDNAMES;
    }
    if (this.watchdogUsec !== undefined) env.WATCHDOG_USEC = String(this.watchdogUsec);
    this.proc = spawnLuod(
      '/bin/sh',
      ['-c', 'export LISTEN_PID=$$; exec "$0" "$@"', process.execPath, ...this.args()],
      env,
      fds,
    );
    await waitAnswering(this.socket, this.proc);
  }

  async stop(): Promise<void> {
    await this.cleanup();
    for (const conn of this.#blocked.splice(0)) conn.destroy();
    this.#notify.close();
    this.#control.close();
    for (const s of this.store.splice(0)) s.fd.close();
  }

  #onNotify(text: string, fds: OwnedFd[]): void {
    const fields: Record<string, string> = {};
    for (const line of text.split('\n')) {
      const eq = line.indexOf('=');
      if (eq > 0) fields[line.slice(0, eq)] = line.slice(eq + 1);
    }
    this.messages.push(fields);
    if (fields.FDSTOREREMOVE === '1' && fields.FDNAME !== undefined) {
      for (let i = this.store.length - 1; i >= 0; i--) {
        if (this.store[i]!.name === fields.FDNAME) this.store.splice(i, 1)[0]!.fd.close();
      }
    }
    if (fields.FDSTORE === '1') {
      for (const fd of fds)
        this.store.push({ name: fields.FDNAME ?? 'stored', fd, session: this.#sessionName(fd) });
    } else {
      for (const fd of fds) fd.close();
    }
  }

  /** systemd recognises a LUO session by its fd path; here: GET_NAME on a duplicate. */
  #sessionName(fd: OwnedFd): string | null {
    try {
      const probe = adoptSession(dup(fd), { name: 'probe' });
      const name = probe.name;
      probe.close();
      return name;
    } catch {
      return null;
    }
  }

  #onSystemctl(conn: net.Socket): void {
    let buffer = '';
    conn.setEncoding('utf8').on('data', (d: string) => {
      buffer += d;
      if (!buffer.includes('\n')) return;
      const args = JSON.parse(buffer) as string[];
      if (args[0] !== 'kexec') {
        conn.end(
          `${JSON.stringify({ code: 1, message: `fake systemctl: unsupported ${args.join(' ')}` })}\n`,
        );
        return;
      }
      if (this.kexecBehaviour === 'block') {
        this.#blocked.push(conn); // systemctl hangs; luod waits
        return;
      }
      if (this.kexecBehaviour === 'fail') {
        conn.end(`${JSON.stringify({ code: 1, message: 'Failed to start kexec.target: fake refusal' })}\n`);
        return;
      }
      // As systemd: the job is queued (systemctl returns), then units are stopped.
      conn.end(`${JSON.stringify({ code: 0 })}\n`);
      this.#kexecDone = new Promise<void>((resolve) => conn.once('close', () => resolve())).then(() =>
        this.#kexec(),
      );
      this.#kexecDone.catch(() => {}); // reported by kexecFinished()
    });
    conn.on('error', () => {});
  }

  #kexecDone: Promise<void> | null = null;
  readonly #blocked: net.Socket[] = [];

  /** systemctl kexec calls left hanging (kexecBehaviour 'block'). */
  get blockedCalls(): number {
    return this.#blocked.length;
  }

  /** Resolves when the last systemctl kexec is over and the next luod answers. */
  async kexecFinished(): Promise<void> {
    await waitUntil(() => this.#kexecDone !== null, 'systemctl kexec was called', 30_000);
    await this.#kexecDone;
  }

  /** What systemd 261+ does for `systemctl kexec` with FileDescriptorStorePreserve=yes. */
  async #kexec(): Promise<void> {
    this.kexecs++;
    await this.stopLuod();
    const paths = statePaths(this.stateDir);
    await emulatorKexec(paths);
    const device = openEmulatedDevice({ stateDir: this.stateDir, start: false });
    try {
      const kept: StoredFd[] = [];
      for (const stored of this.store.splice(0)) {
        stored.fd.close(); // the old kernel's file is gone
        if (stored.session === null) continue; // sockets and regular files are dropped
        try {
          const session = device.retrieveSession(stored.session);
          kept.push({ name: stored.name, fd: session, session: stored.session });
        } catch (err) {
          this.lostInKexec.push(`${stored.name}: ${(err as Error).message}`);
        }
      }
      this.store.push(...kept);
    } finally {
      device.close();
    }
    await this.start();
  }
}
