#!/usr/bin/env node
/**
 * luoctl, the operator's command line. This file is the composition root: it
 * builds the real environment (device, host files, systemctl) and registers one
 * module per command; commands get everything through that environment.
 */
import { readFileSync } from 'node:fs';
import { release } from 'node:os';
import { Command, CommanderError } from 'commander';
import { runSystemctlVersion } from '../host/systemd.js';
import { openRealDevice } from '../kernel/real/index.js';
import { probeKexecFileLoad } from '../sys/kexec.js';
import { register as registerDaemonCommands } from './daemon-commands.js';
import { register as registerDemo } from './demo.js';
import { register as registerDoctor } from './doctor.js';
import { register as registerEmu } from './emu.js';
import type { CliEnvironment, RegisterCommand } from './environment.js';
import { register as registerInspect } from './inspect.js';
import { register as registerKernelInfo } from './kernel-info.js';
import { ExitCode, Output } from './output.js';
import { register as registerQualify } from './qualify.js';
import { register as registerReport } from './report.js';

const COMMANDS: readonly RegisterCommand[] = [
  registerDoctor,
  registerEmu,
  registerDaemonCommands,
  registerDemo,
  registerInspect,
  registerReport,
  registerKernelInfo,
  registerQualify,
];

/** Read at run time so the version printed is the installed package's, from dist/ or from src/ alike. */
function packageVersion(): string {
  const manifest = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
  return String(manifest.version);
}

const environment: CliEnvironment = {
  host: {
    openDevice: () => openRealDevice(),
    probeKexecFileLoad,
    systemctlVersion: runSystemctlVersion,
    osRelease: release,
  },
  hostRoot: '/',
};

function buildProgram(env: CliEnvironment): Command {
  const program = new Command('luoctl')
    .description('userspace for Linux kernel Live Update (LUO/KHO)')
    .version(packageVersion())
    .option('--json', 'print results and errors as one JSON object on stdout')
    .configureHelp({ showGlobalOptions: true })
    // Throw instead of exiting, so that usage errors get exit status 2.
    .exitOverride();
  for (const register of COMMANDS) register(program, env);
  return program;
}

try {
  await buildProgram(environment).parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // Commander has already printed its message (or the help or version asked for).
    process.exitCode = err.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
  } else {
    new Output(false).error('luoctl', err);
    process.exitCode = ExitCode.failure;
  }
}
