/** What /proc says about this process's fds. */
import * as fs from 'node:fs';
import { fromNodeError } from './error.js';
import { type FdLike, rawFd } from './fd.js';

/** readlink /proc/self/fd/N: e.g. 'anon_inode:[luo_session] vm-42', '/memfd:guest (deleted)', 'socket:[123]'. */
export function fdTarget(fd: FdLike): string {
  const n = rawFd(fd);
  try {
    return fs.readlinkSync(`/proc/self/fd/${n}`);
  } catch (err) {
    throw fromNodeError(`readlink /proc/self/fd/${n}`, err);
  }
}

/** The fd numbers open in this process (the directory listing's own fd excluded). */
export function openFds(): number[] {
  const listed = fs.readdirSync('/proc/self/fd').map(Number);
  // readdirSync opened and closed one fd to list the directory; it is gone now.
  return listed.filter((fd) => {
    try {
      fs.fstatSync(fd);
      return true;
    } catch {
      return false;
    }
  });
}

/** A process as /proc/PID/stat shows it: its one-letter state and its start time (clock ticks after boot). */
export interface ProcessStatus {
  readonly pid: number;
  /** R running, S sleeping, D disk sleep, T stopped, t traced, Z zombie, X dead... */
  readonly state: string;
  /** Tells this process from a later one given the same pid. */
  readonly startTime: string;
}

/** What /proc says of `pid`; null when there is no such process. */
export function processStatus(pid: number): ProcessStatus | null {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name (field 2) may hold spaces and parentheses: fields start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { pid, state: fields[0] ?? '?', startTime: fields[19] ?? '' };
}

/** Whether the process `was` still runs (not exited, not a zombie, not replaced by another with its pid). */
export function stillRunning(was: ProcessStatus): boolean {
  const now = processStatus(was.pid);
  return now !== null && now.startTime === was.startTime && now.state !== 'Z' && now.state !== 'X';
}

/** A process state in words, for logs: `T` is "stopped (T)". */
export function describeState(state: string): string {
  const words: Record<string, string> = {
    R: 'running',
    S: 'sleeping',
    D: 'in uninterruptible sleep',
    T: 'stopped',
    t: 'stopped by a tracer',
    Z: 'a zombie (exited)',
    X: 'dead',
  };
  return `${words[state] ?? 'in an unknown state'} (${state})`;
}
