#!/usr/bin/env node
/**
 * `luo-qemu --id ID --ram SIZE [--socket PATH] [--state-dir DIR] -- QEMU ARGS...`:
 * run a QEMU VM that survives host live updates through luod (src/qemu/launcher.ts).
 * The same command before and after the reboot: it continues the VM when luod
 * has its sessions, else cold-boots it. Logs are JSON lines (pino) on stderr;
 * QEMU keeps stdin, stdout and stderr. With --json, luo-qemu's own errors are JSON
 * lines on stderr too (`{"ok":false,"error":{"code","message"}}`), so that a
 * supervisor reads one format; stdout stays QEMU's.
 */
import { Command, CommanderError } from 'commander';
import pino from 'pino';
import { clientId } from '../protocol/messages.js';
import { defaultStateDir, LuoQemu } from '../qemu/launcher.js';
import { Errno } from '../sys/errno.js';
import { errorCode, SysError } from '../sys/error.js';
import { parseSize } from '../sys/size.js';

const dash = process.argv.indexOf('--');
const own = dash < 0 ? process.argv : process.argv.slice(0, dash);
const qemu = dash < 0 ? [] : process.argv.slice(dash + 1);

const program = new Command('luo-qemu')
  .description('run a QEMU VM that survives host live updates (luod)')
  .requiredOption('--id <id>', "the VM's client id at luod (letters, digits, _ and -)")
  .requiredOption('--ram <size>', 'guest RAM, e.g. 64M or 2G (whole MiB)')
  .option('--socket <path>', "luod's socket (default $LUOD_SOCKET or /run/luod/liveupdate.sock)")
  .option('--state-dir <dir>', `where the private QMP socket goes (default ${defaultStateDir()})`)
  .option('--luod-timeout <seconds>', 'how long to wait for luod at start', '30')
  .option('--json', "luo-qemu's own errors as JSON lines on stderr, as its logs are")
  .usage('--id ID --ram SIZE [options] -- QEMU_BINARY ARGS...')
  .exitOverride()
  .configureOutput({
    // Commander's own errors (a missing option) in the format asked for.
    writeErr: (text) => {
      if (json) fail('EINVAL', text.replace(/^error: /, '').trim());
      else process.stderr.write(text);
    },
  });

/** --json, read before parsing: commander's own errors are written while it parses. */
const json = own.includes('--json');

function fail(code: string, message: string): void {
  process.stderr.write(
    json ? `${JSON.stringify({ ok: false, error: { code, message } })}\n` : `luo-qemu: ${code}: ${message}\n`,
  );
}

const log = pino({ base: { service: 'luo-qemu' } }, pino.destination(2));

/** In a function: the bundle (scripts/bundle.mjs) is a script, with no top-level await. */
async function main(): Promise<void> {
  try {
    program.parse(own);
    const opts = program.opts<{
      id: string;
      ram: string;
      socket?: string;
      stateDir?: string;
      luodTimeout: string;
    }>();
    if (opts.id === '') throw new SysError('luo-qemu', Errno.EINVAL, '--id must not be empty');
    const id = clientId.safeParse(opts.id);
    if (!id.success)
      throw new SysError('luo-qemu', Errno.EINVAL, `--id ${opts.id}: ${id.error.issues[0]?.message}`);
    const timeout = Number(opts.luodTimeout);
    if (!Number.isFinite(timeout) || timeout <= 0)
      throw new SysError('luo-qemu', Errno.EINVAL, '--luod-timeout must be a positive number of seconds');
    const [binary, ...args] = qemu;
    if (!binary) throw new SysError('luo-qemu', Errno.EINVAL, 'no QEMU command: put it after --');
    const vm = new LuoQemu({
      id: opts.id,
      ramBytes: parseSize(opts.ram),
      ...(opts.socket !== undefined && { socket: opts.socket }),
      ...(opts.stateDir !== undefined && { stateDir: opts.stateDir }),
      qemu: binary,
      qemuArgs: args,
      log,
      luodTimeoutMs: timeout * 1000,
    });
    for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => void vm.stop());
    process.exitCode = await vm.run();
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode === 0 ? 0 : 2;
    } else {
      fail(errorCode(err), (err as Error).message);
      if (process.env.LUOKIT_DEBUG === '1') process.stderr.write(`${(err as Error).stack}\n`);
      process.exitCode = 1;
    }
  }
}

void main();
