/**
 * How every luoctl command talks to its user, so that all commands behave alike:
 *  - results go to stdout, as text for people or, with --json, as one JSON
 *    object on one line for scripts;
 *  - an error is one line `luoctl: <command>: <CODE>: <sentence>` on stderr (with
 *    --json, `{"ok":false,"error":{"code","message"}}` on stdout), never a stack
 *    trace: operators need the errno name, not our call graph (LUOKIT_DEBUG=1 adds it).
 */
import type { Command } from 'commander';
import { errorCode } from '../sys/error.js';

export const ExitCode = {
  ok: 0,
  /** The command ran and the answer is no (or it failed). */
  failure: 1,
  /** Unknown command or bad options. */
  usage: 2,
  /** Could not test (`luoctl qualify`: the guest could not run); neither a yes nor a no. */
  notRun: 3,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** Error code used when an error carries no errno-style code: such an error is a luokit bug. */
const UNCODED_ERROR = 'INTERNAL';

/** The errno-style code and a one-line sentence for any thrown value. */
export function describeError(err: unknown): { code: string; message: string } {
  const code = errorCode(err, UNCODED_ERROR);
  const text = err instanceof Error ? err.message : String(err);
  // Node's fs errors start with their own code ("ENOENT: no such file..."); say it once.
  const message = text
    .replace(new RegExp(`^${code}: `), '')
    .replace(/\s*\n\s*/g, ' ')
    .trim();
  return { code, message: message || code };
}

export class Output {
  constructor(
    readonly json: boolean,
    private readonly stdout: NodeJS.WritableStream = process.stdout,
    private readonly stderr: NodeJS.WritableStream = process.stderr,
  ) {}

  /** Print a command's result: `data` as JSON, or `text()` for people. */
  result(data: unknown, text: () => string): void {
    this.stdout.write(this.json ? `${JSON.stringify(data)}\n` : text().replace(/\n?$/, '\n'));
  }

  /** Report `err` from `command` (e.g. 'doctor') in the one shape users and scripts can rely on. */
  error(command: string, err: unknown): void {
    const { code, message } = describeError(err);
    if (this.json) this.stdout.write(`${JSON.stringify({ ok: false, error: { code, message } })}\n`);
    else this.stderr.write(`luoctl: ${command}: ${code}: ${message}\n`);
    if (process.env['LUOKIT_DEBUG'] === '1' && err instanceof Error && err.stack)
      this.stderr.write(`${err.stack}\n`);
  }
}

/** 'emu start' for a nested command: its names below the program. */
export function commandPath(command: Command): string {
  const names: string[] = [];
  for (let c: Command | null = command; c?.parent; c = c.parent) names.unshift(c.name());
  return names.join(' ') || command.name();
}

/**
 * Wrap a command's body as a commander action: the body gets its Command and
 * an Output honouring the global --json, returns the exit code, and anything it
 * throws is reported by `Output.error` with exit code 1.
 */
export function commandAction(
  body: (command: Command, out: Output) => ExitCode | Promise<ExitCode>,
): (...args: unknown[]) => Promise<void> {
  return async (...args) => {
    // Commander passes the Command itself as the last argument of every action.
    const command = args.at(-1) as Command;
    const out = new Output(command.optsWithGlobals<{ json?: boolean }>().json === true);
    try {
      process.exitCode = await body(command, out);
    } catch (err) {
      out.error(commandPath(command), err);
      process.exitCode = ExitCode.failure;
    }
  };
}
