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
