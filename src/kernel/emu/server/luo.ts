/**
 * The emulated Live Update Orchestrator: sessions and their files, with the
 * semantics of kernel/liveupdate/luo_{core,session,file}.c in Linux 7.2.
 *
 * Lifecycle:
 *  - Device: one opener at a time (`openDevice` EBUSY). The first open in a
 *    kernel materialises the incoming sessions; if that fails, every open
 *    fails EIO from then on.
 *  - Outgoing sessions are kept in creation order; their files in preserve
 *    order, each file keyed by its inode in one global table, so a file can
 *    be in one session only (EBUSY).
 *  - Releasing an outgoing session unpreserves its files; releasing a
 *    retrieved incoming session finishes it.
 *  - `freezeAll()` (the reboot path) freezes every outgoing session in
 *    creation order and, on any failure, unfreezes what was frozen and
 *    returns the error, leaving everything usable.
 *  - Incoming sessions come from the previous kernel's handover; unretrieved
 *    or unfinished ones are simply not carried to the next kexec.
 *
 * This module knows nothing of sockets: `server.ts` maps connections to the
 * objects here, and `dispatch.ts` decodes raw ioctls into these calls.
 */
import { Errno } from '../../../sys/errno.js';
import type { OwnedFd } from '../../../sys/fd.js';
import { KernelError } from './errors.js';
import * as memfd from './memfd-handler.js';

/** KHO_MAX_BLOCKS and the entries one 4 KiB block holds (kho_block.c, luo.h). */
const MAX_BLOCKS = 10_000;
const SESSIONS_PER_BLOCK = 51;
const FILES_PER_BLOCK = 63;
export const MAX_SESSIONS = MAX_BLOCKS * SESSIONS_PER_BLOCK;
export const MAX_FILES_PER_SESSION = MAX_BLOCKS * FILES_PER_BLOCK;

/** A file preserved in an outgoing session. */
export interface OutgoingFile {
  readonly token: bigint;
  readonly compatible: string;
  readonly key: string;
  readonly memfd: memfd.PreservedMemfd;
}

/** A file handed over by the previous kernel, as its serialized record. */
export interface IncomingFileRecord {
  readonly token: bigint;
  readonly compatible: string;
  readonly memfd?: memfd.MemfdRecord;
  /** Writes the preserved content into a new file of the recorded size. */
  readonly fill?: (file: OwnedFd) => void;
}

interface IncomingFile {
  readonly record: IncomingFileRecord;
  /** 0 not yet retrieved, 1 retrieved, -errno: the retrieve failed and always will. */
  status: number;
  file: OwnedFd | null;
  key: string | null;
}

export interface IncomingSessionRecord {
  readonly name: string;
  readonly files: readonly IncomingFileRecord[];
}

/** Session names are compared as the kernel does: as bytes (kept here as latin1 strings). */
export class OutgoingSession {
  readonly kind = 'outgoing';
  readonly files: OutgoingFile[] = [];
  constructor(readonly name: string) {}
}

export class IncomingSession {
  readonly kind = 'incoming';
  retrieved = false;
  files: IncomingFile[];
  constructor(
    readonly name: string,
    records: readonly IncomingFileRecord[],
  ) {
    this.files = records.map((record) => ({ record, status: 0, file: null, key: null }));
  }
}

export type EmuSession = OutgoingSession | IncomingSession;

/** Handlers this kernel knows, by compatible string. */
const HANDLERS = new Set([memfd.MEMFD_COMPATIBLE]);

export class Luo {
  #deviceOpen = false;
  #deserialized = false;
  #deserializeError = 0;
  readonly outgoing: OutgoingSession[] = [];
  readonly incoming: IncomingSession[] = [];
  /** luo_preserved_files: every file LUO holds, outgoing or retrieved, by identity. */
  readonly #preserved = new Map<string, OutgoingFile | IncomingFile>();
  readonly #pendingIncoming: readonly IncomingSessionRecord[];

  /**
   * `incoming`: the sessions the previous kernel handed over (materialised at
   * first open); `restoreError`: an errno that restoring them will hit (a
   * corrupt chain), which turns every open into EIO as in the kernel.
   */
  constructor(incoming: readonly IncomingSessionRecord[] = [], options: { restoreError?: number } = {}) {
    this.#pendingIncoming = incoming;
    this.#restoreError = options.restoreError ?? 0;
  }

  readonly #restoreError: number;

  get deviceOpen(): boolean {
    return this.#deviceOpen;
  }

  /** luo_open(): exclusive, and the first open deserializes the incoming sessions. */
  openDevice(): void {
    if (this.#deviceOpen) throw new KernelError(Errno.EBUSY);
    this.#deviceOpen = true;
    const err = this.#deserialize();
    if (err) {
      this.#deviceOpen = false;
      throw new KernelError(Errno.EIO);
    }
  }

  releaseDevice(): void {
    this.#deviceOpen = false;
  }

  /** luo_session_deserialize(): once; a failure is remembered and returned forever. */
  #deserialize(): number {
    if (this.#deserialized) return this.#deserializeError;
    this.#deserialized = true;
    if (this.#restoreError) {
      this.#deserializeError = this.#restoreError;
      return this.#deserializeError;
    }
    for (const record of this.#pendingIncoming) {
      if (this.incoming.some((s) => s.name === record.name)) {
        this.#deserializeError = Errno.EEXIST;
        break;
      }
      const unknown = record.files.find((f) => !HANDLERS.has(f.compatible));
      const session = new IncomingSession(record.name, unknown ? [] : record.files);
      this.incoming.push(session);
      if (unknown) {
        this.#deserializeError = Errno.ENOENT;
        break;
      }
    }
    return this.#deserializeError;
  }

  createSession(name: string): OutgoingSession {
    if (name.length === 0 || name.length > 63) throw new KernelError(Errno.EINVAL);
    if (this.outgoing.length + 1 > MAX_SESSIONS) throw new KernelError(Errno.ENOSPC);
    if (this.outgoing.some((s) => s.name === name)) throw new KernelError(Errno.EEXIST);
    const session = new OutgoingSession(name);
    this.outgoing.push(session);
    return session;
  }

  retrieveSession(name: string): IncomingSession {
    const session = this.incoming.find((s) => s.name === name);
    if (!session) throw new KernelError(Errno.ENOENT);
    if (session.retrieved) throw new KernelError(Errno.EINVAL);
    session.retrieved = true;
    return session;
  }

  /** luo_preserve_file(): the order of checks is the kernel's, and so is each errno. */
  preserveFd(session: OutgoingSession, token: bigint, file: OwnedFd | null): void {
    if (session.files.some((f) => f.token === token)) {
      file?.close();
      throw new KernelError(Errno.EEXIST);
    }
    if (session.files.length + 1 > MAX_FILES_PER_SESSION) {
      file?.close();
      throw new KernelError(Errno.ENOSPC);
    }
    if (file === null) throw new KernelError(Errno.EBADF);
    try {
      if (!memfd.canPreserve(file)) throw new KernelError(Errno.ENOENT);
      const key = memfd.fileKey(file);
      if (this.#preserved.has(key)) throw new KernelError(Errno.EBUSY);
      const preserved = memfd.preserve(file);
      const entry: OutgoingFile = { token, compatible: memfd.MEMFD_COMPATIBLE, key, memfd: preserved };
      session.files.push(entry);
      this.#preserved.set(key, entry);
    } catch (err) {
      file.close();
      throw err;
    }
  }

  /** An errno the next file retrieve fails with (fault injection, for testing VMMs' error paths). */
  #retrieveFault = 0;

  injectRetrieveFault(errno: number): void {
    this.#retrieveFault = errno;
  }

  /** luo_retrieve_file(): the first result, success or failure, is the answer forever. */
  retrieveFd(session: IncomingSession, token: bigint): OwnedFd {
    const entry = session.files.find((f) => f.record.token === token);
    if (!entry) throw new KernelError(Errno.ENOENT);
    if (entry.status < 0) throw new KernelError(-entry.status);
    if (entry.status > 0 && entry.file) return entry.file;
    const { memfd: record, fill } = entry.record;
    if (!record || !fill) {
      entry.status = -Errno.EINVAL;
      throw new KernelError(Errno.EINVAL);
    }
    try {
      if (this.#retrieveFault) {
        const errno = this.#retrieveFault;
        this.#retrieveFault = 0;
        throw new KernelError(errno);
      }
      entry.file = memfd.retrieve(record, fill);
    } catch (err) {
      entry.status = -(err instanceof KernelError ? err.errno : Errno.EIO);
      throw new KernelError(-entry.status);
    }
    entry.status = 1;
    entry.key = memfd.fileKey(entry.file);
    this.#preserved.set(entry.key, entry);
    return entry.file;
  }

  /** luo_file_finish(): memfd has no can_finish, so this always succeeds; files go in reverse order. */
  finish(session: IncomingSession): void {
    for (const entry of session.files.toReversed()) {
      if (entry.key) this.#preserved.delete(entry.key);
      entry.file?.close();
    }
    session.files = [];
  }

  /** Last reference to an outgoing session closed: every file is unpreserved. */
  releaseOutgoing(session: OutgoingSession): void {
    for (const entry of session.files) {
      this.#preserved.delete(entry.key);
      memfd.unpreserve(entry.memfd);
    }
    session.files.length = 0;
    remove(this.outgoing, session);
  }

  /** Last reference to a retrieved session closed: an implicit FINISH. */
  releaseIncoming(session: IncomingSession): void {
    this.finish(session);
    remove(this.incoming, session);
  }

  /** Is `file` preserved with its size frozen? (the shim asks before ftruncate/fallocate) */
  sizeFrozen(file: OwnedFd): boolean {
    try {
      const entry = this.#preserved.get(memfd.fileKey(file));
      return entry !== undefined && 'memfd' in entry;
    } catch {
      return false;
    }
  }

  /**
   * liveupdate_reboot(): freeze every outgoing session in creation order,
   * files in preserve order. On failure nothing stays frozen and the error
   * is thrown; the sessions remain usable.
   */
  freezeAll(): void {
    for (const session of this.outgoing) {
      for (const entry of session.files) memfd.freeze(entry.memfd);
    }
  }

  /** After a successful kexec the old kernel's state is gone: drop every reference it held. */
  shutdown(): void {
    for (const session of this.outgoing) {
      for (const entry of session.files) memfd.unpreserve(entry.memfd);
      session.files.length = 0;
    }
    for (const session of this.incoming) this.finish(session);
    this.outgoing.length = 0;
    this.incoming.length = 0;
    this.#preserved.clear();
  }
}

function remove<T>(list: T[], item: T): void {
  const i = list.indexOf(item);
  if (i >= 0) list.splice(i, 1);
}
