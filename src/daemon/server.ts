/**
 * luod's listening socket: permissions (0660, root and a chosen group), a
 * stale socket from a crashed luod removed, a live one refused.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LineChannel } from '../protocol/lines.js';
import { MAX_CLIENTS } from '../protocol/messages.js';
import { Errno } from '../sys/errno.js';
import { SysError } from '../sys/error.js';
import { UnixServer, UnixSocket } from '../sys/unix-socket.js';
import type { Luod } from './luod.js';

export interface ListenOptions {
  socketPath: string;
  /** Group that may connect (gid); default: luod's own group. */
  gid?: number;
}

/**
 * Connections the kernel queues before luod accepts them. After a kexec every
 * VMM on the host reconnects at once; with a queue shorter than the client
 * limit, a non-blocking connect() beyond it fails with EAGAIN (AF_UNIX does not
 * wait). The kernel caps it at net.core.somaxconn.
 */
const LISTEN_BACKLOG = 2 * MAX_CLIENTS;

export function listen(luod: Luod, options: ListenOptions): UnixServer {
  const { socketPath } = options;
  fs.mkdirSync(path.dirname(socketPath), { recursive: true, mode: 0o755 });
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
  const server = UnixServer.listen(socketPath, { backlog: LISTEN_BACKLOG });
  fs.chmodSync(socketPath, 0o660);
  if (options.gid !== undefined) fs.chownSync(socketPath, 0, options.gid);
  server.on('connection', (socket) => luod.accept(new LineChannel(socket)));
  return server;
}
