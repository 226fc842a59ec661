/**
 * `luoctl emu`: the emulated kernel, for hosts without LUO.
 *
 *   emu start [--state DIR] [--kernel 7.2]   start it (returns once it listens)
 *   emu stop [--state DIR]                   stop it
 *   emu status [--state DIR]                 what it holds
 *   emu kexec [--state DIR] [--to 7.3]       emulated kexec with the real handover format
 *   emu exec [--state DIR] -- CMD ARGS...    run an unmodified program against it
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import {
  checkEmulatedVersion,
  defaultStateDir,
  emulatorKexec,
  emulatorStatus,
  ensureEmulator,
  statePaths,
  stopEmulator,
} from '../kernel/emu/index.js';
import { Errno } from '../sys/errno.js';
import { SysError } from '../sys/error.js';
import type { RegisterCommand } from './environment.js';
import { commandAction, ExitCode } from './output.js';

/** The preload shim built by scripts/build-native.sh, relative to the package root. */
export function shimPath(): string {
  return fileURLToPath(new URL('../../build/native/libluoemu.so', import.meta.url));
}

function pathsOf(command: Command) {
  const { state } = command.opts<{ state?: string }>();
  return statePaths(state ?? defaultStateDir());
}

export const register: RegisterCommand = (program) => {
  const emu = program
    .command('emu')
    .description("luokit's emulated kernel (same LUO semantics, for hosts without /dev/liveupdate)");
  const stateOption = ['--state <dir>', 'state directory of the emulated kernel'] as const;

  emu
    .command('start')
    .description('start the emulated kernel for a state directory')
    .option(...stateOption)
    .option('--kernel <version>', 'emulated kernel version', '7.2')
    .action(
      commandAction((command, out) => {
        const paths = pathsOf(command);
        const kernel = checkEmulatedVersion(command.opts<{ kernel: string }>().kernel);
        ensureEmulator(paths, { kernel });
        const pid = Number.parseInt(fs.readFileSync(paths.pidFile, 'utf8'), 10);
        out.result(
          { ok: true, state: paths.dir, pid },
          () => `emulated kernel running in ${paths.dir} (pid ${pid})`,
        );
        return ExitCode.ok;
      }),
    );

  emu
    .command('stop')
    .description('stop the emulated kernel')
    .option(...stateOption)
    .action(
      commandAction(async (command, out) => {
        const paths = pathsOf(command);
        await stopEmulator(paths);
        out.result({ ok: true, state: paths.dir }, () => `emulated kernel in ${paths.dir} stopped`);
        return ExitCode.ok;
      }),
    );

  emu
    .command('status')
    .description('show the emulated kernel and the sessions it holds')
    .option(...stateOption)
    .action(
      commandAction(async (command, out) => {
        const status = await emulatorStatus(pathsOf(command));
        out.result(status, () => JSON.stringify(status, null, 2));
        return ExitCode.ok;
      }),
    );

  emu
    .command('kexec')
    .description('emulated kexec: freeze, write the handover, boot the next kernel from it')
    .option(...stateOption)
    .option('--to <version>', 'the next kernel version (6.19, 7.0, 7.1, 7.2, 7.3)')
    .action(
      commandAction(async (command, out) => {
        const { to } = command.opts<{ to?: string }>();
        if (to) checkEmulatedVersion(to);
        const result = await emulatorKexec(pathsOf(command), to);
        out.result(result, () =>
          [
            `kexec into ${result.kernel.version} (boot ${result.kernel.bootId}): ${result.boot.outcome}`,
            `  ${result.boot.detail}`,
            `  ${result.boot.sessions} incoming session(s)`,
          ].join('\n'),
        );
        return result.boot.outcome === 'restored' || result.boot.outcome === 'cold'
          ? ExitCode.ok
          : ExitCode.failure;
      }),
    );

  emu
    .command('exec')
    .description('run an unmodified program against the emulated kernel (LD_PRELOAD shim)')
    .option(...stateOption)
    .argument('<command...>', 'the program and its arguments (after --)')
    .action(
      commandAction(async (command) => {
        const paths = pathsOf(command);
        const argv = command.args;
        const shim = shimPath();
        if (!fs.existsSync(shim)) {
          throw new SysError(
            'emu exec',
            Errno.ENOENT,
            `the preload shim ${shim} is not built: run npm run build`,
          );
        }
        ensureEmulator(paths);
        const preload = [shim, process.env.LD_PRELOAD].filter(Boolean).join(' ');
        const child = spawn(argv[0]!, argv.slice(1), {
          stdio: 'inherit',
          env: { ...process.env, LD_PRELOAD: preload, LUOKIT_EMU_STATE: paths.dir },
        });
        return (await new Promise<number>((resolve, reject) => {
          child.on('error', (err) => reject(err));
          child.on('exit', (code, signal) =>
            resolve(code ?? 128 + (signal ? (constants.signals[signal] ?? 0) : 0)),
          );
        })) as ExitCode;
      }),
    );
};
