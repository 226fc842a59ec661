#!/usr/bin/env node
/**
 * luoctl, the operator's command line. This file is the composition root: it
 * builds the real environment (device, host files, systemctl) and registers one
 * module per command; commands get everything through that environment.
 *
 * Command modules are imported only when asked for: `luoctl status` loads the
 * daemon commands, not the demo, the inspector or the doctor's probes (every
 * call paid for all of them before; docs/performance.md). Help, and a word
 * luoctl does not know, load them all, so commander can list and suggest.
 */
import { release } from 'node:os';
import { Command, CommanderError } from 'commander';
import { packageVersion } from '../sys/package-version.js';
import type { CliEnvironment, RegisterCommand } from './environment.js';
import { ExitCode, Output } from './output.js';

/**
 * A command module: the top-level command names it registers, how to import
 * it, and whether it probes the host (the device, kexec_file_load, systemctl:
 * koffi and friends are imported only then).
 */
interface CommandModule {
  readonly names: readonly string[];
  readonly load: () => Promise<{ register: RegisterCommand }>;
  readonly probesHost?: true;
}

/** One line per module, in the order help lists them. */
const COMMANDS: readonly CommandModule[] = [
  { names: ['doctor'], load: () => import('./doctor.js'), probesHost: true },
  { names: ['emu'], load: () => import('./emu.js') },
  {
    names: ['status', 'clients', 'sessions', 'load', 'update', 'abort'],
    load: () => import('./daemon-commands.js'),
  },
  { names: ['demo'], load: () => import('./demo.js') },
  { names: ['inspect'], load: () => import('./inspect.js') },
  { names: ['report'], load: () => import('./report.js') },
  { names: ['kernel-info'], load: () => import('./kernel-info.js') },
  { names: ['qualify'], load: () => import('./qualify.js') },
  { names: ['rollout'], load: () => import('./rollout.js') },
  { names: ['fleet'], load: () => import('./fleet.js') },
];

/** Options of luoctl itself that take a value (so the word after them is not a command). */
const GLOBAL_VALUE_OPTIONS = new Set(['--socket']);

/**
 * The modules a command line needs: the one owning its first word; none for
 * --version alone; all for help, no command, or a word no module owns.
 */
function modulesFor(args: readonly string[]): readonly CommandModule[] {
  let word: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (GLOBAL_VALUE_OPTIONS.has(arg)) i++;
    else if (!arg.startsWith('-')) {
      word = arg;
      break;
    } else if (arg === '-h' || arg === '--help') return COMMANDS;
  }
  if (word === undefined) return args.some((a) => a === '-V' || a === '--version') ? [] : COMMANDS;
  const owner = COMMANDS.find((m) => m.names.includes(word));
  return owner ? [owner] : COMMANDS;
}

/** The real environment; the host probes only for a module that uses them. */
async function realEnvironment(modules: readonly CommandModule[]): Promise<CliEnvironment> {
  const unused = () => {
    throw new Error('host probes were not loaded for this command (luoctl.ts COMMANDS: probesHost)');
  };
  if (!modules.some((m) => m.probesHost)) {
    return {
      host: { openDevice: unused, systemctlVersion: unused, osRelease: unused },
      hostRoot: '/',
    };
  }
  const [{ openRealDevice }, { probeKexecFileLoad }, { runSystemctlVersion }] = await Promise.all([
    import('../kernel/real/index.js'),
    import('../sys/kexec.js'),
    import('../host/systemd.js'),
  ]);
  return {
    host: {
      openDevice: () => openRealDevice(),
      probeKexecFileLoad,
      systemctlVersion: runSystemctlVersion,
      osRelease: release,
    },
    hostRoot: '/',
  };
}

async function buildProgram(args: readonly string[]): Promise<Command> {
  const program = new Command('luoctl')
    .description('userspace for Linux kernel Live Update (LUO/KHO)')
    .version(packageVersion())
    .option('--json', 'print results and errors as one JSON object on stdout')
    .option('--socket <path>', "luod's socket (default $LUOD_SOCKET or /run/luod/liveupdate.sock)")
    .configureHelp({ showGlobalOptions: true })
    // Throw instead of exiting, so that usage errors get exit status 2.
    .exitOverride();
  const modules = modulesFor(args);
  const [env, loaded] = await Promise.all([
    realEnvironment(modules),
    Promise.all(modules.map((m) => m.load())),
  ]);
  for (const { register } of loaded) register(program, env);
  return program;
}

async function main(): Promise<void> {
  try {
    await (await buildProgram(process.argv.slice(2))).parseAsync(process.argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander has already printed its message (or the help or version asked for).
      process.exitCode = err.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
    } else {
      new Output(false).error('luoctl', err);
      process.exitCode = ExitCode.failure;
    }
  }
}

void main();
