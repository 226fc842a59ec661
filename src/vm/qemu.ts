/**
 * One QEMU guest run (the real-kernel bench, docs/vm.md, and `luoctl qualify`,
 * docs/qualify.md): boot a kernel with the guest initramfs (vm/guest/init), stream the serial console (each line stamped with the
 * host's elapsed time, written to a log), follow the guest's LUOKIT-* markers
 * through any number of kexecs (one QEMU process spans them all), and return a
 * structured result. Every run is bounded by a timeout and QEMU is always
 * killed before this returns.
 *
 * Outcomes are three, never conflated:
 * - 'ok': the job in the guest returned (LUOKIT-EXIT), whatever its status;
 * - 'failed': the kernel booted but the run went wrong in a way the test is
 *   about (no next kernel after a kexec, a panic after a kexec, a timeout
 *   after /init started);
 * - 'infra': QEMU did not start, the kernel never reached /init, the guest
 *   could not mount its shares (LUOKIT-INFRA): the bench could not test.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as readline from 'node:readline';
import { ConsoleJoiner } from './console-lines.js';

export interface Share {
  /** The 9p mount tag the guest's /init knows ('host', 'out'). */
  tag: string;
  path: string;
  readonly: boolean;
}

export interface QemuOptions {
  kernel: string;
  initramfs: string;
  /** Appended to the base command line (console=ttyS0 liveupdate=on retain_initrd panic=-1). */
  append: string;
  shares: readonly Share[];
  /** The whole run, all boots together. */
  timeoutMs: number;
  /** Console lines with host timestamps go here. */
  consoleLog: string;
  memory?: string;
  smp?: number;
  /**
   * TCG's translated-code buffer in MiB (default 512). Translations outlive a kexec: a write
   * to a page that held code the previous kernel's processes ran invalidates them first.
   */
  tbSizeMb?: number;
  qemu?: string;
  /** A QMP socket to create (`-qmp unix:PATH,server=on,wait=off`): test/vm/qmp.ts talks to it. */
  qmpSocket?: string;
  /** Every console line, as it arrives (with its host time in ms since QEMU started). */
  onLine?: (line: string, atMs: number) => void;
  /**
   * Runs beside QEMU until it exits (`going()` turns false), writing lines into the console
   * log on the console's own clock: the bench's QEMU statistics sampler (test/vm/jit-stats.ts).
   */
  sampler?: ConsoleSampler;
  /** A read-only raw disk image on virtio-blk (/dev/vda in the guest: test/vm/guest-disk.ts). */
  disk?: string;
}

export interface Marker {
  /** 'BOOT', 'EXIT', 'KEXEC', 'RESULT', ... (the word after LUOKIT-). */
  kind: string;
  fields: Record<string, string>;
  atMs: number;
  line: string;
}

export interface BootRecord {
  boot: number;
  release: string;
  /** Host time (ms since QEMU started) of the kernel's first line ("Linux version ..."). */
  kernelAtMs: number | undefined;
  /** Host time /init started (its LUOKIT-BOOT marker). */
  initAtMs: number;
  /** The guest's uptime when /init started, in seconds (kernel boot time as the guest saw it). */
  guestUptimeS: number;
}

export interface KexecRecord {
  from: number;
  to: number;
  kernel: string;
  /** Host time of `kexec -e` (the LUOKIT-KEXEC marker, printed just before it). */
  atMs: number;
  /** From `kexec -e` to the next kernel's /init, host time; undefined when it never came. */
  blackoutMs: number | undefined;
}

export type QemuOutcome = 'ok' | 'failed' | 'infra';

export interface QemuResult {
  outcome: QemuOutcome;
  /** Why it is 'failed' or 'infra'. */
  reason?: string;
  /** The job's exit status (LUOKIT-EXIT), when it returned. */
  exitStatus?: number;
  boots: BootRecord[];
  kexecs: KexecRecord[];
  markers: Marker[];
  /** The first kernel panic line, if any. */
  panic?: string;
  timedOut: boolean;
  qemuExit: { code: number | null; signal: NodeJS.Signals | null };
  durationMs: number;
  consoleLog: string;
  command: string[];
}

export const BASE_CMDLINE = 'console=ttyS0 liveupdate=on retain_initrd panic=-1';

/** `LUOKIT-KIND a=1 b=two words?` -> { kind, fields }; a field's value runs to the next ` key=`. */
export function parseMarker(line: string, atMs = 0): Marker | undefined {
  const at = line.indexOf('LUOKIT-');
  if (at < 0) return undefined;
  const text = line.slice(at + 'LUOKIT-'.length).trim();
  const space = text.indexOf(' ');
  const kind = space < 0 ? text : text.slice(0, space);
  if (!/^[A-Z][A-Z-]*$/.test(kind)) return undefined;
  const fields: Record<string, string> = {};
  const rest = space < 0 ? '' : text.slice(space + 1);
  const re = /(?:^|\s)([a-z][a-z0-9_.-]*)=/g;
  const keys: { key: string; start: number; end: number }[] = [];
  for (let m = re.exec(rest); m !== null; m = re.exec(rest)) {
    keys.push({ key: m[1]!, start: m.index, end: m.index + m[0].length });
  }
  keys.forEach((k, i) => {
    fields[k.key] = rest.slice(k.end, keys[i + 1]?.start ?? rest.length).trim();
  });
  return { kind, fields, atMs, line };
}

export function qemuCommand(options: QemuOptions): string[] {
  const args = [
    options.qemu ?? 'qemu-system-x86_64',
    '-accel',
    `tcg,thread=multi,tb-size=${options.tbSizeMb ?? 512}`,
    '-cpu',
    'max',
    '-m',
    options.memory ?? '2G',
    '-smp',
    String(options.smp ?? 2),
    '-nographic',
    '-nic',
    'none',
    '-no-reboot',
    '-kernel',
    options.kernel,
    '-initrd',
    options.initramfs,
    '-append',
    // LUOKIT_VM_CMDLINE_EXTRA: for diagnosis, e.g. 'earlycon=uart8250,io,0x3f8,115200
    // memblock=debug' (docs/vm.md); the next kernels inherit it through /proc/cmdline.
    `${BASE_CMDLINE} ${process.env.LUOKIT_VM_CMDLINE_EXTRA ?? ''} ${options.append}`
      .replace(/ +/g, ' ')
      .trim(),
  ];
  if (options.qmpSocket !== undefined) args.push('-qmp', `unix:${options.qmpSocket},server=on,wait=off`);
  if (options.disk !== undefined)
    args.push('-drive', `file=${options.disk},format=raw,if=virtio,readonly=on`);
  for (const share of options.shares) {
    args.push(
      '-virtfs',
      `local,path=${share.path},mount_tag=${share.tag},security_model=none,multidevs=remap${share.readonly ? ',readonly=on' : ''}`,
    );
  }
  return args;
}

/** Something that watches a running QEMU and writes its findings into the console log. */
export type ConsoleSampler = (write: (text: string) => void, going: () => boolean) => Promise<void>;

function stamp(ms: number): string {
  return `[+${(ms / 1000).toFixed(3).padStart(8)}s]`;
}

/** Boot the guest and follow it to the end (job returned, QEMU exited, or the timeout). */
export async function runQemu(options: QemuOptions): Promise<QemuResult> {
  const command = qemuCommand(options);
  const log = fs.openSync(options.consoleLog, 'w');
  const started = performance.now();
  const now = (): number => Math.round(performance.now() - started);
  const write = (text: string): void => {
    fs.writeSync(log, text);
  };
  write(`# ${command.map((a) => (/[\s']/.test(a) ? `'${a}'` : a)).join(' ')}\n`);

  const markers: Marker[] = [];
  const boots: BootRecord[] = [];
  const kexecs: KexecRecord[] = [];
  const kernelStarts: number[] = [];
  /** How many kernels had started when the last kexec was issued. */
  let kernelStartsAtKexec = 0;
  let panic: string | undefined;
  let exitStatus: number | undefined;
  let guestInfra: string | undefined;
  let timedOut = false;
  let stderr = '';

  let child: ChildProcess;
  try {
    child = spawn(command[0]!, command.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (err) {
    fs.closeSync(log);
    return infraResult(`cannot start ${command[0]}: ${(err as Error).message}`);
  }
  const killer = (): void => {
    child.kill('SIGKILL');
  };
  process.once('exit', killer);

  function infraResult(reason: string): QemuResult {
    return {
      outcome: 'infra',
      reason,
      boots,
      kexecs,
      markers,
      timedOut,
      qemuExit: { code: null, signal: null },
      durationMs: now(),
      consoleLog: options.consoleLog,
      command,
    };
  }

  // Marks a printk split in two come back whole (console-lines.ts); the log keeps what arrived.
  const joiner = new ConsoleJoiner();
  const onLine = (raw: string): void => {
    // Serial output: CRLF, and SeaBIOS's terminal resets (ESC c, ESC [ ... ).
    const line = raw.replace(/\x1b\[[0-9;?]*[A-Za-z]|\x1b[a-zA-Z]|\r/g, '');
    const atMs = now();
    write(`${stamp(atMs)} ${line}\n`);
    options.onLine?.(line, atMs);
    for (const joined of joiner.push(line, atMs)) onJoinedLine(joined.text, joined.atMs);
  };
  const onJoinedLine = (line: string, atMs: number): void => {
    if (/Linux version \d/.test(line)) kernelStarts.push(atMs);
    if (panic === undefined && /Kernel panic - not syncing/.test(line)) panic = line.trim();
    const marker = parseMarker(line, atMs);
    if (marker === undefined) return;
    markers.push(marker);
    const f = marker.fields;
    switch (marker.kind) {
      case 'BOOT': {
        const boot = Number(f.boot ?? boots.length);
        boots.push({
          boot,
          release: f.release ?? '',
          kernelAtMs: kernelStarts.at(-1),
          initAtMs: atMs,
          guestUptimeS: Number(f.uptime ?? Number.NaN),
        });
        const pending = kexecs.at(-1);
        if (pending !== undefined && pending.blackoutMs === undefined && pending.to === boot) {
          pending.blackoutMs = atMs - pending.atMs;
        }
        break;
      }
      case 'KEXEC':
        kernelStartsAtKexec = kernelStarts.length;
        kexecs.push({
          from: Number(f.boot),
          to: Number(f.next),
          kernel: f.kernel ?? '',
          atMs,
          blackoutMs: undefined,
        });
        break;
      case 'INFRA':
        guestInfra ??= `boot ${f.boot}: ${f.reason ?? line}`;
        break;
      case 'EXIT':
        exitStatus = Number(f.status);
        // The guest reboots now, which ends QEMU (-no-reboot); give it a moment, then stop it.
        setTimeout(() => {
          if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
        }, 10_000).unref();
        break;
    }
  };

  readline.createInterface({ input: child.stdout! }).on('line', onLine);
  let sampling = true;
  const sampler = options.sampler
    ? options.sampler(
        (text) =>
          write(`${stamp(now())} ${text}
`),
        () => sampling,
      )
    : Promise.resolve();
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
    write(`${stamp(now())} [qemu stderr] ${chunk.toString().trimEnd()}\n`);
  });

  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>(
    (resolve) => {
      child.once('error', (error) => resolve({ code: null, signal: null, error }));
      child.once('exit', (code, signal) => resolve({ code, signal }));
    },
  );
  const timer = setTimeout(() => {
    timedOut = true;
    write(`${stamp(now())} [runner] timeout after ${options.timeoutMs} ms: stopping QEMU\n`);
    child.kill('SIGTERM');
    setTimeout(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }, 5_000).unref();
  }, options.timeoutMs);
  const result = await exited;
  sampling = false;
  await sampler;
  clearTimeout(timer);
  process.removeListener('exit', killer);
  // Let readline deliver the last lines.
  await new Promise((resolve) => setImmediate(resolve));
  for (const joined of joiner.flush()) onJoinedLine(joined.text, joined.atMs);
  const durationMs = now();
  write(`${stamp(durationMs)} [runner] qemu exited: code ${result.code} signal ${result.signal}\n`);
  fs.closeSync(log);

  const base = {
    boots,
    kexecs,
    markers,
    ...(panic !== undefined ? { panic } : {}),
    timedOut,
    qemuExit: { code: result.code, signal: result.signal },
    durationMs,
    consoleLog: options.consoleLog,
    command,
  };
  if (result.error !== undefined) {
    const missing = (result.error as NodeJS.ErrnoException).code === 'ENOENT';
    return {
      ...base,
      outcome: 'infra',
      reason: missing
        ? `${command[0]} is not installed (Debian: apt-get install qemu-system-x86)`
        : `cannot start ${command[0]}: ${result.error.message}`,
    };
  }
  if (guestInfra !== undefined) return { ...base, outcome: 'infra', reason: `guest setup: ${guestInfra}` };
  if (exitStatus !== undefined) return { ...base, outcome: 'ok', exitStatus };
  const tail = stderr.trim().split('\n').slice(-3).join(' | ');
  if (kernelStarts.length === 0) {
    return {
      ...base,
      outcome: 'infra',
      reason: timedOut
        ? 'the kernel printed nothing before the timeout'
        : `QEMU exited (code ${result.code}) before the kernel printed anything${tail ? `: ${tail}` : ''}`,
    };
  }
  if (boots.length === 0) {
    return {
      ...base,
      outcome: 'infra',
      reason: `the kernel did not reach /init${panic ? ` (${panic})` : timedOut ? ' before the timeout' : ''}`,
    };
  }
  const lastKexec = kexecs.at(-1);
  if (lastKexec !== undefined && lastKexec.blackoutMs === undefined) {
    const where =
      kernelStarts.length > kernelStartsAtKexec
        ? 'the next kernel started but did not reach /init'
        : 'no kernel started';
    return {
      ...base,
      outcome: 'failed',
      reason: `after kexec ${lastKexec.from} -> ${lastKexec.to}: ${where}${panic ? ` (${panic})` : ''}${timedOut ? ' (timeout)' : ''}`,
    };
  }
  return {
    ...base,
    outcome: 'failed',
    reason: timedOut
      ? `timeout after ${options.timeoutMs} ms in boot ${boots.at(-1)!.boot} (the job did not return)`
      : `QEMU exited (code ${result.code}, signal ${result.signal}) in boot ${boots.at(-1)!.boot} before the job returned${panic ? ` (${panic})` : ''}`,
  };
}
