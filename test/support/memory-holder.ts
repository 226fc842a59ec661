/**
 * An fd holder in the test's own process: a dup of each fd, as the holder
 * process keeps one. What the keeper's and luod's logic need, without a
 * second process.
 */
import type { FdHolder, FdSource, HeldFd } from '../../src/daemon/fd-holder.js';
import { dup, type OwnedFd } from '../../src/sys/index.js';

export class MemoryHolder implements FdHolder {
  readonly kind = 'holder-process';
  readonly held = new Map<string, OwnedFd>();

  /** What a restarted luod would get back: a copy of each, the holder keeping its own. */
  async takeBack(): Promise<HeldFd[]> {
    return [...this.held].map(([name, fd]) => ({ name, fd: dup(fd) }));
  }

  async hold(name: string, source: FdSource): Promise<void> {
    this.held.get(name)?.close();
    this.held.set(name, dup(source.fd));
  }

  async release(name: string): Promise<void> {
    this.held.get(name)?.close();
    this.held.delete(name);
  }

  close(): void {}

  /** Let go of everything (the test is over). */
  dropAll(): void {
    for (const fd of this.held.values()) fd.close();
    this.held.clear();
  }
}
