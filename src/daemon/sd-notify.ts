/**
 * systemd's service protocol, spoken without libsystemd:
 *  - sd_notify: datagrams of `KEY=VALUE` lines to $NOTIFY_SOCKET (a path, or
 *    `@name` in the abstract namespace), fds attached with SCM_RIGHTS
 *    (sd_pid_notify_with_fds). luod sends READY=1, STATUS=, WATCHDOG=1,
 *    STOPPING=1, and FDSTORE=1 / FDSTOREREMOVE=1 with FDNAME= for its fd store.
 *  - sd_listen_fds: at start, the fds systemd passes (the fd store's content,
 *    or a socket unit's sockets) are 3..3+$LISTEN_FDS-1, named by
 *    $LISTEN_FDNAMES (colon-separated), and meant for $LISTEN_PID only.
 */
import { Errno } from '../sys/errno.js';
import { SysError } from '../sys/error.js';
import { type FdLike, OwnedFd } from '../sys/fd.js';
import { setCloseOnExec } from '../sys/file.js';
import { sendToWithFds, setTimeouts, socket } from '../sys/socket.js';

/** systemd's fdname_is_valid(): 1 to 255 printable ASCII characters, no ':'. */
export function isValidFdName(name: string): boolean {
  return name.length >= 1 && name.length <= 255 && /^[\x20-\x7e]+$/.test(name) && !name.includes(':');
}

/** $NOTIFY_SOCKET as a socket address ('\0name' for '@name'), or null when unset or unusable. */
export function notifyAddress(env: NodeJS.ProcessEnv = process.env): string | null {
  const value = env.NOTIFY_SOCKET;
  if (!value) return null;
  if (value.startsWith('@')) return `\0${value.slice(1)}`;
  if (value.startsWith('/')) return value;
  throw new SysError(
    'sd_notify',
    Errno.EAFNOSUPPORT,
    `NOTIFY_SOCKET=${value}: only AF_UNIX addresses (a path or @abstract) are supported`,
  );
}

/** How long one notification may block when systemd's queue is full. */
const SEND_TIMEOUT_MS = 5000;

/** A connection to systemd's notification socket. */
export class SdNotify {
  readonly address: string;
  readonly #fd: OwnedFd;

  private constructor(address: string) {
    this.address = address;
    this.#fd = socket('dgram');
    setTimeouts(this.#fd, SEND_TIMEOUT_MS);
  }

  /** From $NOTIFY_SOCKET; null when luod is not run by systemd (Type=notify). */
  static fromEnv(env: NodeJS.ProcessEnv = process.env): SdNotify | null {
    const address = notifyAddress(env);
    return address === null ? null : new SdNotify(address);
  }

  /** Send one notification; throws SysError when systemd cannot be reached. */
  send(fields: Record<string, string | number>, fds: readonly FdLike[] = []): void {
    const text = Object.entries(fields)
      .map(([key, value]) => {
        const line = String(value);
        if (line.includes('\n')) throw new SysError('sd_notify', Errno.EINVAL, `${key}= must be one line`);
        return `${key}=${line}`;
      })
      .join('\n');
    const sent = sendToWithFds(this.#fd, this.address, Buffer.from(text), fds);
    if (sent < 0)
      throw new SysError('sd_notify', Errno.EAGAIN, 'sd_notify: systemd is not reading its queue');
  }

  ready(status: string): void {
    this.send({ READY: 1, STATUS: status });
  }

  status(status: string): void {
    this.send({ STATUS: status });
  }

  watchdog(): void {
    this.send({ WATCHDOG: 1 });
  }

  stopping(status: string): void {
    this.send({ STOPPING: 1, STATUS: status });
  }

  /** FDSTORE=1: systemd keeps a copy of `fd` under `name` until FDSTOREREMOVE (or forever with FileDescriptorStorePreserve=yes). */
  store(name: string, fd: FdLike): void {
    if (!isValidFdName(name)) throw new SysError('sd_notify', Errno.EINVAL, `invalid FDNAME ${name}`);
    this.send({ FDSTORE: 1, FDNAME: name }, [fd]);
  }

  /** FDSTOREREMOVE=1: systemd closes every stored fd named `name`. */
  remove(name: string): void {
    if (!isValidFdName(name)) throw new SysError('sd_notify', Errno.EINVAL, `invalid FDNAME ${name}`);
    this.send({ FDSTOREREMOVE: 1, FDNAME: name });
  }

  close(): void {
    this.#fd.close();
  }
}

/** One fd systemd passed at start. */
export interface ListenFd {
  readonly name: string;
  readonly fd: OwnedFd;
}

/** The first fd systemd passes (SD_LISTEN_FDS_START). */
export const LISTEN_FDS_START = 3;

/**
 * sd_listen_fds_with_names(unset_environment=true): the fds meant for this
 * process, made close-on-exec so that children (the holder, systemctl) do
 * not inherit them. Fds for another pid (LISTEN_PID) are not ours: none.
 */
export function takeListenFds(env: NodeJS.ProcessEnv = process.env, pid = process.pid): ListenFd[] {
  const count = env.LISTEN_FDS;
  const forPid = env.LISTEN_PID;
  const names = env.LISTEN_FDNAMES;
  delete env.LISTEN_FDS;
  delete env.LISTEN_PID;
  delete env.LISTEN_FDNAMES;
  if (count === undefined || forPid === undefined) return [];
  if (!/^\d+$/.test(forPid) || Number(forPid) !== pid) return [];
  if (!/^\d+$/.test(count)) {
    throw new SysError('sd_listen_fds', Errno.EINVAL, `LISTEN_FDS=${count} is not a number`);
  }
  const n = Number(count);
  const split = names === undefined ? [] : names.split(':');
  const fds: ListenFd[] = [];
  for (let i = 0; i < n; i++) {
    const fd = new OwnedFd(LISTEN_FDS_START + i);
    setCloseOnExec(fd, true);
    fds.push({ name: split.length === n ? split[i]! : 'unknown', fd });
  }
  return fds;
}
