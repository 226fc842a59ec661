/**
 * What a client limit (luod --max-clients) asks of the host, shared by luod
 * (daemon/capacity.ts, STATUS) and `luoctl doctor`. During an update luod
 * holds, per client, its connection and up to MAX_SESSIONS_PER_CLIENT session
 * fds (the fd holder or systemd's fd store has its own copies); after a kexec
 * it holds the retrieved ones until each CLAIM. Short of open files, accept()
 * or a session's retrieval fails with EMFILE in the middle of an update.
 */
import { MAX_SESSIONS_PER_CLIENT } from './messages.js';

/** fds luod uses besides its clients': its socket, the device, the holder, logs, metrics. */
const OWN_FDS = 64;

export interface CapacityNeeds {
  /** Connections served at once. */
  max_clients: number;
  /** What max_clients needs: each client's connection and sessions, plus luod's own. */
  open_files_needed: number;
  /** Entries the systemd fd store must take: every session of every client, and luod-internal. */
  fd_store_needed: number;
  /**
   * The listen queue luod asks for. After a kexec every VMM on the host
   * reconnects at once; with a queue shorter than the client limit, a
   * non-blocking connect() beyond it fails with EAGAIN (AF_UNIX does not
   * wait). The kernel caps it at net.core.somaxconn.
   */
  listen_backlog: number;
}

export function capacityNeeds(maxClients: number): CapacityNeeds {
  return {
    max_clients: maxClients,
    open_files_needed: maxClients * (1 + MAX_SESSIONS_PER_CLIENT) + OWN_FDS,
    fd_store_needed: maxClients * MAX_SESSIONS_PER_CLIENT + 1,
    listen_backlog: 2 * maxClients,
  };
}
