/**
 * What luoctl's commands need from the world outside the process. luoctl.ts
 * builds the real one; a test can build another, so no command reaches for
 * devices or host files on its own.
 */
import type { Command } from 'commander';
import type { HostProbes } from '../host/probe.js';
import type { LuodFacts } from './doctor-report.js';

export interface CliEnvironment {
  readonly host: HostProbes;
  /** Where host files (/proc, /sys, /boot) are read from: '/' outside tests. */
  readonly hostRoot: string;
  /** What the running luod says about itself (doctor); default: ask it over its socket. */
  readonly luodFacts?: () => Promise<LuodFacts>;
}

/** Each luoctl command is one module exporting a `register` of this type. */
export type RegisterCommand = (program: Command, env: CliEnvironment) => void;
