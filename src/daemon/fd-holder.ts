/**
 * FdHolder: someone other than luod who keeps a copy of every session fd
 * luod holds. A LUO session lives as long as any fd refers to it, so with a
 * holder a luod killed at any moment loses no session: the restarted luod
 * takes the copies back (takeBack) and carries on.
 *
 * Two holders:
 *  - systemd's fd store (SystemdFdStore, below): when luod runs under
 *    systemd ($NOTIFY_SOCKET), fds go to PID 1 with FDSTORE=1 and come back
 *    at the next start as $LISTEN_FDS; with FileDescriptorStorePreserve=yes
 *    and systemd 261+ they even cross `systemctl kexec`.
 *  - the holder process (holder-process.ts) elsewhere.
 *
 * Ownership: hold() does not take luod's fd; the holder keeps its own copy.
 */
import type { OwnedFd } from '../sys/fd.js';
import type { ListenFd, SdNotify } from './sd-notify.js';

/** An fd a holder gave back. The caller owns `fd`. */
export interface HeldFd {
  readonly name: string;
  readonly fd: OwnedFd;
}

/** What luod lends a holder: anything with an open fd number (a Session, an OwnedFd). */
export interface FdSource {
  readonly fd: number;
  readonly closed: boolean;
}

export type HolderKind = 'systemd-fd-store' | 'holder-process';

export interface FdHolder {
  readonly kind: HolderKind;
  /** The fds an earlier luod left with this holder. Called once, at start. */
  takeBack(): Promise<HeldFd[]>;
  /** Keep a copy of `source` under `name` (replacing any fd of that name). */
  hold(name: string, source: FdSource): Promise<void>;
  /** Drop the copy named `name` (nothing happens when there is none). */
  release(name: string): Promise<void>;
  /** luod stops: its link to the holder goes, the holder's copies stay. */
  close(): void;
  /**
   * luod listens: get the holder ready for the first hold, in the background
   * (the holder process starts one when takeBack found none; the first hold
   * waits for it either way).
   */
  warm?(): void;
}

/**
 * Wait for every promise, then throw the first failure, if any. Holds are
 * sent together (a round trip each, one after the other, made a thousand
 * sessions' holds the barrier's longest step), but a failure must not leave
 * others still running behind the caller's back: an abort that releases
 * everything must come after the last hold.
 */
export async function settleAll(promises: Promise<unknown>[]): Promise<void> {
  const results = await Promise.allSettled(promises);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/** systemd's fd store, through sd_notify. */
export class SystemdFdStore implements FdHolder {
  readonly kind = 'systemd-fd-store';
  readonly #notify: SdNotify;
  #passed: ListenFd[];

  /** `passed`: the fds systemd gave this start ($LISTEN_FDS): the store's content. */
  constructor(notify: SdNotify, passed: ListenFd[]) {
    this.#notify = notify;
    this.#passed = passed;
  }

  async takeBack(): Promise<HeldFd[]> {
    const passed = this.#passed;
    this.#passed = [];
    return passed;
  }

  async hold(name: string, source: FdSource): Promise<void> {
    // systemd keeps one copy per file: storing the same session again under
    // the same name after a release is what luod does, so remove first.
    this.#notify.remove(name);
    this.#notify.store(name, source.fd);
  }

  async release(name: string): Promise<void> {
    this.#notify.remove(name);
  }

  close(): void {}
}
