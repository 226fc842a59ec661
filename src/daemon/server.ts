/**
 * luod's listening socket: permissions (0660, root and a chosen group), a
 * stale socket from a crashed luod removed, a live one refused.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { capacityNeeds } from '../protocol/capacity.js';
import { LineChannel } from '../protocol/lines.js';
import { DEFAULT_MAX_CLIENTS } from '../protocol/messages.js';
import { Errno, errnoNumber } from '../sys/errno.js';
import { errorCode, SysError } from '../sys/error.js';
import { UnixServer, UnixSocket } from '../sys/unix-socket.js';
import type { Luod } from './luod.js';

export interface ListenOptions {
  socketPath: string;
  /** Group that may connect (gid); default: luod's own group. */
  gid?: number;
  /** See LINE_TIMEOUT_MS (the default). */
  lineTimeoutMs?: number;
  /** The listen queue (protocol/capacity.ts); default: that of DEFAULT_MAX_CLIENTS. */
  backlog?: number;
}

/**
 * A line left unfinished this long closes the connection: a client that
 * sends half a line and waits would hold a connection slot forever.
 */
export const LINE_TIMEOUT_MS = 10_000;

/**
 * The socket's directory (/run/luod after a boot without systemd's
 * RuntimeDirectory=), made before anything binds in it: the fd holder binds
 * first. Mode 0755, so members of --group can reach the socket; luod's own
 * uid owns it. An existing directory is left as the administrator made it.
 */
export function prepareSocketDir(socketPath: string): void {
  const dir = path.dirname(socketPath);
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  } catch (err) {
    const code = errorCode(err);
    throw new SysError(
      'luod',
      errnoNumber(code) ?? Errno.EIO,
      `cannot create the socket directory ${dir}: ${code}`,
    );
  }
  if (!fs.statSync(dir).isDirectory())
    throw new SysError(
      'luod',
      errnoNumber('ENOTDIR') ?? Errno.EINVAL,
      `the socket directory ${dir} is not a directory`,
    );
}

export function listen(luod: Luod, options: ListenOptions): UnixServer {
  const { socketPath } = options;
  prepareSocketDir(socketPath);
  if (fs.existsSync(socketPath)) {
    let live = false;
    try {
      UnixSocket.connect(socketPath).close();
      live = true;
    } catch {
      fs.rmSync(socketPath, { force: true });
    }
    if (live)
      throw new SysError('listen', Errno.EEXIST, `another luod is already listening on ${socketPath}`);
  }
  const server = UnixServer.listen(socketPath, {
    backlog: options.backlog ?? capacityNeeds(DEFAULT_MAX_CLIENTS).listen_backlog,
  });
  fs.chmodSync(socketPath, 0o660);
  if (options.gid !== undefined) fs.chownSync(socketPath, 0, options.gid);
  server.on('connection', (socket) =>
    luod.accept(new LineChannel(socket, { lineTimeoutMs: options.lineTimeoutMs ?? LINE_TIMEOUT_MS })),
  );
  server.on('error', (err) => luod.acceptFailed(err));
  return server;
}
