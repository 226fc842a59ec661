/**
 * What each errno means for each LUO operation, in LUO's terms, as read from
 * kernel/liveupdate/{luo_core,luo_session,luo_file,kho_block}.c and mm/memfd_luo.c (7.2).
 *
 * The kernel reuses a few errnos for unrelated causes (EINVAL above all), so a sentence
 * names every cause the source allows, most likely first. Sentences are lower-case
 * clauses: they follow `OPERATION: ECODE: ` in a message.
 */

import { isLuoIoctlName, type LuoIoctlName } from './ioctl.js';

/** Opening /dev/liveupdate, plus every ioctl. */
export type LuoOperation = 'OPEN' | LuoIoctlName;

type Sentences = Readonly<Partial<Record<string, string>>>;

const BY_OPERATION: Readonly<Record<LuoOperation, Sentences>> = {
  OPEN: {
    ENOENT:
      'no /dev/liveupdate: this kernel was not built with CONFIG_LIVEUPDATE or booted without liveupdate=on ' +
      '(live update also needs KHO enabled, kho=on)',
    ENODEV:
      '/dev/liveupdate exists but the kernel did not register the device: live update is off ' +
      '(booted without liveupdate=on, or KHO is disabled)',
    EBUSY: 'another process holds /dev/liveupdate open (only one agent may open it at a time)',
    EIO:
      'the incoming live update data could not be restored (unknown file handler or corrupt handover); ' +
      'every open fails this way until the next reboot',
    EACCES:
      'permission denied on /dev/liveupdate (the kernel checks no capability: the device node owner and mode decide)',
  },
  CREATE_SESSION: {
    EEXIST: 'a session with this name already exists',
    EINVAL: 'the session name is empty or has no NUL within 64 bytes (1 to 63 bytes are allowed)',
    ENOSPC:
      'the kernel cannot hold more outgoing sessions (its limit is 10,000 pages of session records, ' +
      '510,000 sessions with 4 KiB pages)',
    ENOMEM: 'the kernel ran out of memory while creating the session',
    EFAULT:
      'the kernel could not read or write the argument struct (bad argument pointer); no session was created',
  },
  RETRIEVE_SESSION: {
    ENOENT:
      'no incoming session has this name (it was not preserved by the previous kernel, ' +
      'or it was already retrieved and its session fd closed)',
    EINVAL: 'this session was already retrieved (its session fd is still open, or failed to finish on close)',
    EFAULT:
      'the kernel could not read or write the argument struct (bad argument pointer); if only the reply failed, ' +
      'the session was retrieved and at once released, which finishes it and drops its unretrieved files',
  },
  PRESERVE_FD: {
    EBUSY:
      'this file is already preserved in a session (memfds are matched by inode, so any fd of the same memfd ' +
      'counts, and a retrieved memfd stays busy until its session is finished)',
    ENOENT:
      'no live update handler can preserve this kind of file (only memfds and unlinked shmem files are supported; ' +
      'hugetlb memfds are not)',
    EEXIST: 'this token is already used in this session',
    EBADF: 'the fd to preserve is not an open file descriptor',
    EINVAL: 'PRESERVE_FD works only on sessions created in this kernel (outgoing)',
    ENOSPC:
      'this session cannot hold more files (the limit is 10,000 pages of file records, ' +
      '630,000 files with 4 KiB pages)',
    ENOMEM: 'the kernel ran out of memory while preserving the file (pinning its pages or recording them)',
    EOPNOTSUPP:
      'the memfd has seals live update cannot carry (only SEAL, SHRINK, GROW, WRITE, FUTURE_WRITE and EXEC)',
    EFBIG: 'the memfd is too large to preserve (more than 4,294,967,295 pages)',
    EFAULT:
      'the kernel could not read or write the argument struct (bad argument pointer); if only the reply failed, ' +
      'the file IS preserved (closing the session undoes it)',
  },
  RETRIEVE_FD: {
    ENOENT: 'no file was preserved under this token (or the session was already finished)',
    EINVAL:
      'RETRIEVE_FD works only on sessions retrieved from the previous kernel (incoming); ' +
      'on an incoming session it means the preserved file data was unreadable, which is permanent',
    EIO: "the file's preserved pages could not be restored; retrieving this token will keep failing",
    EOPNOTSUPP:
      'the file was preserved with memfd seals this kernel does not support; retrieving this token will keep failing',
    ENOMEM: 'the kernel ran out of memory while rebuilding the file; retrieving this token will keep failing',
    EFAULT:
      'the kernel could not read or write the argument struct (bad argument pointer); if only the reply failed, ' +
      'the file was retrieved and retrying returns the same file',
  },
  FINISH: {
    EBUSY:
      'a file in this session cannot finish yet (its handler reports its restore is incomplete); ' +
      'nothing was released, so FINISH can be retried',
    EINVAL:
      'FINISH works only on sessions retrieved from the previous kernel (incoming), and its reserved field must be 0',
  },
  GET_NAME: {
    EINVAL:
      'the reserved field is not 0, or this kernel predates GET_NAME (added in 7.2; ' +
      'LUO answers command numbers it does not know with EINVAL)',
  },
};

/** Causes shared by every ioctl, from the common dispatch code. */
const ANY_IOCTL: Sentences = {
  EINVAL:
    'the kernel refused the request: wrong kind of fd (a session command on /dev/liveupdate or the reverse), ' +
    'a session of the wrong direction, or an argument size below the struct size',
  ENOTTY: 'this fd does not take this ioctl number (not a LUO fd, or a malformed command number)',
  E2BIG: 'the argument struct has non-zero bytes beyond the part this kernel understands',
  EFAULT: 'the kernel could not read or write the argument struct (bad argument pointer)',
  EBADF: 'the /dev/liveupdate or session fd is not open',
  EMFILE: 'this process has no free file descriptor for the new fd (RLIMIT_NOFILE reached)',
  ENFILE: 'the system-wide limit on open files is reached',
  ENOMEM: 'the kernel ran out of memory',
};

/** The explanation for `errnoName` from `operation`, or undefined if LUO documents none. */
export function explain(operation: string, errnoName: string): string | undefined {
  const specific = (BY_OPERATION as Readonly<Record<string, Sentences>>)[operation]?.[errnoName];
  if (specific !== undefined) return specific;
  return isLuoIoctlName(operation) ? ANY_IOCTL[errnoName] : undefined;
}
