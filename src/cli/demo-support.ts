/** What both demos (example VMMs, QEMU VMs) need: this package's entries, luod, its record, bounded waits. */
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { UpdateRecord } from '../record/format.js';
import { readRecordFile, recordPath } from '../record/store.js';
import { reportHtml } from '../report/html.js';
import { writeFileAtomic } from '../sys/atomic-file.js';
import { Errno } from '../sys/errno.js';
import { SysError } from '../sys/error.js';
import { askLuod, checkReply } from './luod-connection.js';

/** A compiled entry of this package, or its TypeScript source when running under tsx. */
export function entry(relative: string): string[] {
  const self = fileURLToPath(import.meta.url);
  const file = fileURLToPath(
    new URL(relative.replace(/\.js$/, self.endsWith('.ts') ? '.ts' : '.js'), import.meta.url),
  );
  return self.endsWith('.ts') ? ['--import', 'tsx', file] : [file];
}

/**
 * A command of this package: its bin when built (which runs the command's bundle, the way
 * users run it), its TypeScript source under tsx.
 */
export function command(relativeModule: string, bin: string): string[] {
  if (fileURLToPath(import.meta.url).endsWith('.ts')) return entry(relativeModule);
  return [fileURLToPath(new URL(bin, import.meta.url))];
}

export async function waitFor<T>(
  what: string,
  timeoutMs: number,
  probe: () => Promise<T | undefined> | T | undefined,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new SysError('demo', Errno.ETIMEDOUT, `timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `luod --emulate` for a demo, its log in `dir/luod.log`; resolves once it answers STATUS. */
export async function startDemoLuod(options: {
  dir: string;
  socket: string;
  emuState: string;
  recordsDir: string;
}): Promise<ChildProcess> {
  const log = fs.openSync(path.join(options.dir, 'luod.log'), 'a');
  const luod = spawn(
    process.execPath,
    [
      ...command('../daemon/main.js', '../daemon/luod-bin.cjs'),
      '--socket',
      options.socket,
      '--emulate',
      '--state',
      options.emuState,
      '--records',
      options.recordsDir,
    ],
    { stdio: ['ignore', log, log] },
  );
  fs.closeSync(log);
  await waitFor('luod', 20_000, async () =>
    checkReply(await askLuod({ cmd: 'STATUS' }, { socket: options.socket })) ? true : undefined,
  );
  return luod;
}

/** The update's record once luod closed it (every claim in, or the update over), and its HTML page beside. */
export async function closedRecord(
  recordsDir: string,
  reportDir: string,
  update: string,
): Promise<{ record: UpdateRecord; recordFile: string; htmlFile: string }> {
  const recordFile = recordPath(recordsDir, update);
  const record = await waitFor<UpdateRecord>('the update record', 20_000, () => {
    const r = readRecordFile(recordFile);
    return r.outcome === 'in-progress' ? undefined : r;
  });
  const htmlFile = path.join(reportDir, `${record.update}.html`);
  writeFileAtomic(htmlFile, reportHtml(record));
  return { record, recordFile, htmlFile };
}

/** Where a demo works (a new directory, removed after it unless kept) and where its report stays. */
export function demoPlaces(prefix: string, reportDir: string | undefined) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const report = reportDir
    ? path.resolve(reportDir)
    : fs.mkdtempSync(path.join(os.tmpdir(), 'luokit-demo-report-'));
  return {
    dir,
    reportDir: report,
    recordsDir: path.join(report, 'updates'),
    socket: path.join(dir, 'luod.sock'),
    emuState: path.join(dir, 'emu'),
  };
}

/**
 * Runs a demo's cleanup (its luod, VMs and emulated kernel stopped, its directory removed)
 * when the demo is interrupted (Ctrl-C, or SIGTERM from a supervisor), then exits 130 or
 * 143. Without it an interrupted demo leaves luod and the emulated kernel running: they
 * are detached so that they can outlive their clients. Returns the unhook for the demo's
 * own `finally`; `cleanup` must be idempotent.
 */
export function cleanupOnSignal(cleanup: () => Promise<void>): () => void {
  const handler = (signal: NodeJS.Signals): void => {
    unhook();
    process.stderr.write(`luoctl demo: ${signal}: stopping the demo's luod, VMs and emulated kernel\n`);
    void cleanup()
      .catch(() => {})
      .finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
  };
  const unhook = (): void => {
    process.off('SIGINT', handler);
    process.off('SIGTERM', handler);
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return unhook;
}

/** SIGTERM, then SIGKILL if `child` has not exited within `graceMs`; resolves once it is gone. */
export async function terminate(child: ChildProcess, graceMs = 10_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}
