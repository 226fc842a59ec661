/**
 * A private etcd for a test file: Debian's etcd-server (scripts/deps.sh), one member on
 * loopback with ports of its own and a data directory under a fresh temporary directory.
 *
 * The fleet's fault tests need etcd to go away and come back with the same data on the
 * same address ("etcd restarted mid-rollout", "network loss during the kexec"), so the
 * instance can be stopped (SIGTERM, or SIGKILL as a crash) and started again; the ports are
 * chosen once and kept. close() kills it and removes the directory; if the test file is
 * killed first, the reaper kills etcd (its command line names the directory).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { reapOnExit } from './reaper.js';

export interface EtcdInstance {
  /** The client URL, http://127.0.0.1:PORT. */
  readonly endpoint: string;
  readonly dir: string;
  running(): boolean;
  /** Start it again after stop(): same address, same data. Resolves once it serves. */
  start(): Promise<void>;
  /** SIGTERM (or SIGKILL with `crash`), and wait for the exit. */
  stop(options?: { crash?: boolean }): Promise<void>;
  restart(): Promise<void>;
  /** Its output so far (zap JSON lines), for a failing test's message. */
  log(): string;
  /** Stop it and remove its directory. */
  close(): Promise<void>;
}

/** A port nobody listens on now (the kernel's pick for port 0). */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export async function startEtcd(): Promise<EtcdInstance> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-etcd-'));
  reapOnExit(dir);
  const clientPort = await freePort();
  let peerPort = await freePort();
  while (peerPort === clientPort) peerPort = await freePort();
  const endpoint = `http://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const args = [
    '--name',
    'luokit-test',
    '--data-dir',
    path.join(dir, 'data'),
    '--listen-client-urls',
    endpoint,
    '--advertise-client-urls',
    endpoint,
    '--listen-peer-urls',
    peer,
    '--initial-advertise-peer-urls',
    peer,
    '--initial-cluster',
    `luokit-test=${peer}`,
    '--logger',
    'zap',
    '--log-outputs',
    'stderr',
    '--log-level',
    'warn',
  ];
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let output = '';

  const healthy = async (): Promise<boolean> => {
    try {
      const res = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(1000) });
      return res.ok && ((await res.json()) as { health?: string }).health === 'true';
    } catch {
      return false;
    }
  };

  const start = async (): Promise<void> => {
    if (child) throw new Error('etcd is already running');
    const proc = spawn('etcd', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
    child = proc;
    proc.stderr!.setEncoding('utf8').on('data', (d: string) => {
      output += d;
    });
    exited = new Promise((resolve) =>
      proc.once('exit', () => {
        if (child === proc) child = undefined;
        resolve();
      }),
    );
    const deadline = Date.now() + 30_000;
    while (!(await healthy())) {
      if (child !== proc) throw new Error(`etcd exited during startup:\n${output}`);
      if (Date.now() > deadline) throw new Error(`etcd not healthy within 30 s:\n${output}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  const stop = async (options: { crash?: boolean } = {}): Promise<void> => {
    const proc = child;
    if (!proc) return;
    proc.kill(options.crash ? 'SIGKILL' : 'SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  };

  await start().catch(async (err) => {
    await stop();
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  });
  return {
    endpoint,
    dir,
    running: () => child !== undefined,
    start,
    stop,
    restart: async () => {
      await stop();
      await start();
    },
    log: () => output,
    close: async () => {
      await stop({ crash: true });
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
